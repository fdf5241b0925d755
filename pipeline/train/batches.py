"""Global batches that are the same whatever the number of workers.

The training split (``example_id`` 0..N-1) is cut into K contiguous *shards* (``data_shards``). Every global batch
of G rows takes G/K rows from each shard, in shard order; each shard is permuted by its own RNG seeded with
(seed, epoch, shard). Worker r of W owns the contiguous shards [⌊r·K/W⌋, ⌊(r+1)·K/W⌋) — any W from 1 to K, the
workers' shard counts differing by at most one: it reads only their rows (pipeline.train.ingest) and its local batch
is exactly its slice of the global batch. So W workers and one worker train on identical batches (same G and K) —
the loss is summed over the global batch and scaled by 1/G, so uneven slices change nothing — a resumed run skips to
the same position exactly, and a run restarted on another number of workers (elastic training) just recuts the
shards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from pipeline.data.loader import IGNORE_LABEL

if TYPE_CHECKING:
    import torch

Rows = dict[str, np.ndarray]


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """[start, stop) example ids of each of ``shards`` contiguous shards of ``n`` rows (sizes differ by ≤ 1)."""
    return [(k * n // shards, (k + 1) * n // shards) for k in range(shards)]


def check_layout(global_batch: int, shards: int, world: int) -> None:
    if shards < 1 or world < 1:
        raise ValueError(f"data_shards ({shards}) and workers ({world}) must be >= 1")
    if world > shards:
        raise ValueError(f"{world} workers but data_shards {shards}: a worker would own no shard")
    if global_batch % shards:
        raise ValueError(f"global batch {global_batch} is not divisible by data_shards {shards}")


def require_one_global_batch(rows: int, global_batch_size: int, where: str) -> None:
    """Refuse a training split of fewer than one global batch (``where`` names the dataset in the message)."""
    if rows < global_batch_size:
        raise ValueError(f"{where}: {rows} training examples, fewer than one global batch ({global_batch_size})")


def owned_shards(shards: int, world: int, rank: int) -> range:
    """The shards worker ``rank`` of ``world`` owns: a contiguous run, ⌊K/W⌋ or ⌈K/W⌉ of them."""
    if not 1 <= world <= shards:
        raise ValueError(f"{world} workers but data_shards {shards}: a worker would own no shard")
    return range(rank * shards // world, (rank + 1) * shards // world)


def worker_range(n: int, shards: int, world: int, rank: int) -> tuple[int, int]:
    """[lo, hi) example ids worker ``rank`` of ``world`` reads: its contiguous run of shards."""
    owned, bounds = owned_shards(shards, world, rank), shard_bounds(n, shards)
    return bounds[owned[0]][0], bounds[owned[-1]][1]


def batches_per_epoch(n: int, global_batch: int) -> int:
    """Full global batches per epoch: (N // K) // (G / K) == N // G whatever K (nested floor division)."""
    return n // global_batch


def decode(rows: Rows) -> Rows:
    """Compact rows (uint8 token bytes, label byte 0 = ignore) -> the loader's arrays: ``inputs`` int32,
    ``labels`` int64 with IGNORE_LABEL, ``puzzle_ids`` int32."""
    labels = rows["labels"].astype(np.int64)
    labels[labels == 0] = IGNORE_LABEL
    return {"inputs": rows["inputs"].astype(np.int32), "labels": labels,
            "puzzle_ids": rows["puzzle_ids"].astype(np.int32)}


class ShardedBatches:
    """This worker's slice of every global batch, from ``share``: the compact rows of example ids [lo, hi) of
    :func:`worker_range`, in example_id order (pipeline.train.ingest.collect_share)."""

    def __init__(self, share: Rows, *, n: int, global_batch: int, shards: int, rank: int, world: int, seed: int):
        check_layout(global_batch, shards, world)
        lo, hi = worker_range(n, shards, world, rank)
        size = len(share["puzzle_ids"])
        if size != hi - lo:
            raise ValueError(f"worker {rank} holds {size} rows, but its shards span example ids [{lo}, {hi})")
        owned = owned_shards(shards, world, rank)
        self.share, self.seed = share, seed
        self.shards = [(k, start - lo, stop - start) for k, (start, stop) in enumerate(shard_bounds(n, shards))
                       if k in owned]
        self.take = global_batch // shards  # rows from each shard per global batch
        self.per_epoch = batches_per_epoch(n, global_batch)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[tuple[int, Rows]]:
        """(index in epoch, this worker's decoded rows) for every full global batch of ``epoch``, from ``skip``."""
        m, used = self.take, self.per_epoch * self.take  # rows of each shard this epoch uses (the rest: dropped)
        orders = np.stack([offset + np.random.default_rng([self.seed, epoch, k]).permutation(size)[:used]
                           for k, offset, size in self.shards])  # (owned shards, used): row positions in share
        for index in range(skip, self.per_epoch):
            chosen = orders[:, index * m:(index + 1) * m].reshape(-1)  # shard by shard, in shard order
            yield index, decode({key: value[chosen] for key, value in self.share.items()})


def to_torch(rows: Rows, device: torch.device | str) -> dict[str, torch.Tensor]:
    """Loader arrays -> model batch: ``inputs``, ``labels`` (−100 = ignore) and ``puzzle_ids`` as int64 tensors.
    (torch is imported here, not with the module: Ray Train's dataset actor unpickles the ingest config, which imports
    this module, and needs no torch: 1.2 s of CPU a run.)"""
    import torch

    return {"inputs": torch.as_tensor(rows["inputs"], dtype=torch.long, device=device),
            "labels": torch.as_tensor(rows["labels"], dtype=torch.long, device=device),
            "puzzle_ids": torch.as_tensor(rows["puzzle_ids"], dtype=torch.long, device=device)}
