"""What a training checkpoint holds, and how a resumed worker puts it back.

A checkpoint folder: ``state.pt`` (model, both optimizers, EMA, step, epoch and position in it, every worker's RNG
state, the non-finite streak, the global batch's ACT carry: pipeline.train.carry_state) and the export pair
(``pipeline.core.export``: weights to serve + config), which is all the MLflow model needs.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from hrm.ema import EMA
from hrm.model import HRM
from hrm.step import Optimizers
from pipeline.core import export


@dataclass
class Position:
    """Where a run stands, saved in every checkpoint: what a resumed run starts from."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # the next global batch of ``epoch`` to train on
    nonfinite_in_row: int = 0
    trained_seconds: float = 0.0  # wall time spent training (evaluations and checkpoints not counted)

    def advance(self, epoch: int, index: int) -> None:
        """One optimizer step done, on global batch ``index`` of ``epoch``: the next batch is ``index + 1``."""
        self.step += 1
        self.epoch, self.batch_in_epoch = epoch, index + 1


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def gather_rng_states(world: int) -> list[dict[str, Any]]:
    mine = rng_state()
    if world == 1 or not dist.is_initialized():
        return [mine]
    states: list[Any] = [None] * world
    dist.all_gather_object(states, mine)
    return states


def save(folder: Path, *, model: HRM, opt: Optimizers, ema: EMA | None, position: Position,
         rng_states: list[dict[str, Any]], export_info: dict[str, Any], carry: dict[str, Any] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "ema": ema.state_dict() if ema else None,
                "position": vars(position), "rng": rng_states, "carry": carry}, folder / "state.pt")
    export.write(folder, ema.shadow if ema is not None else model, export_info)


def load_state(path: Path) -> dict[str, Any]:
    """A checkpoint's training state, read without running code: tensors and plain data only (``weights_only``).
    Anything else — a pickle crafted to run code when loaded, from whoever can write to the run folder — is
    refused, naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0][:200]
        raise ValueError(f"{path}: refused to load: it holds more than tensors and plain data ({reason}); this "
                         "package never writes such a checkpoint — check who can write to the run folder") from None


def restore(folder: Path, *, model: HRM, opt: Optimizers, ema: EMA | None,
            rank: int) -> tuple[Position, dict[str, Any] | None]:
    """Put the checkpoint back into ``model``, ``opt``, ``ema`` and this worker's RNG; its position and the global
    batch's carry (None in a checkpoint written before carries were kept)."""
    state = load_state(folder / "state.pt")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optim"])
    if ema is not None and state["ema"] is not None:
        ema.load_state_dict(state["ema"])
    rngs = state["rng"]
    set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
    return Position(**state["position"]), state.get("carry")
