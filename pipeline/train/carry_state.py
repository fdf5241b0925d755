"""The ACT carry in a checkpoint: what lets a restarted run — on the same number of workers or another — go on exactly.

HRM's carry holds, for every row of the global batch, the puzzle the row is reasoning on and how far it got (z_H,
z_L, segments run, halted); rows that have not halted keep their puzzle at the next step. A run restarted with a fresh
carry would restart every row mid-reasoning and train on other batches from then on. So each checkpoint holds the
whole carry in global-batch order — the workers' slices gathered in rank order, which is shard order
(pipeline.train.batches) — and a restarted worker takes the rows of the shards it owns now, whatever the number of
workers before. Its size: B × (P + L) × D × 2 values in the forward dtype (152 MB for the paper's Sudoku at batch 768
in bfloat16), beside the model's state.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
import torch.distributed as dist

from hrm.model import Carry
from pipeline.train.batches import owned_shards

log = logging.getLogger(__name__)


def to_state(carry: Carry) -> dict[str, Any]:
    """The carry as plain tensors on the CPU (what ``torch.load(weights_only=True)`` reads back)."""
    state: dict[str, Any] = {}
    for f in dataclasses.fields(carry):
        value = getattr(carry, f.name)
        if isinstance(value, dict):
            state[f.name] = {k: v.detach().cpu() for k, v in value.items()}
        elif value is not None:
            state[f.name] = value.detach().cpu()
    return state


def _cat(parts: list[Any]) -> Any:
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


def _rows(value: Any, lo: int, hi: int, device: Any) -> Any:
    if isinstance(value, dict):
        return {k: v[lo:hi].to(device) for k, v in value.items()}
    return value[lo:hi].to(device)


def gather(carry: Carry | None, world: int, rank: int = 0) -> dict[str, Any] | None:
    """The whole global batch's carry on rank 0, which writes the checkpoint (every worker calls this; the others get
    None, as all do when no step has run): the workers' slices concatenated in rank order."""
    if carry is None:
        return None
    mine = to_state(carry)
    if world == 1 or not dist.is_initialized():
        return mine
    parts: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(mine, parts, dst=0)
    return {name: _cat([p[name] for p in parts]) for name in mine} if parts is not None else None


def slice_for(state: dict[str, Any] | None, *, global_batch: int, shards: int, world: int, rank: int,
              device: Any) -> Carry | None:
    """Worker ``rank`` of ``world``'s rows of a saved global carry: G/K rows for each shard it owns, in shard order.
    None when the checkpoint holds no carry, or one of another global batch (a run resumed with another
    ``global_batch_size``; a warning says so): a fresh carry then starts every row on a new example."""
    if not state:
        return None
    owned, per = owned_shards(shards, world, rank), global_batch // shards
    rows = len(state["steps"])
    if rows != global_batch:
        log.warning("the checkpoint's ACT carry holds %d rows, the global batch is now %d: every row starts on a new "
                    "example", rows, global_batch)
        return None
    lo, hi = owned[0] * per, (owned[-1] + 1) * per
    return Carry(**{name: _rows(value, lo, hi, device) for name, value in state.items()})
