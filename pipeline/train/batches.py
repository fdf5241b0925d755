"""Global batches that are the same whatever the number of workers.

Every worker reads the same row stream (Ray Data, deterministic order), mixes it in a seeded shuffle buffer of
``buffer_batches`` global batches (a new permutation each epoch), and takes its own slice of each global batch.
So 1 worker at batch G and W workers at G/W each train on exactly the same examples, and a resumed run can skip to
the same position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

Rows = dict[str, np.ndarray]


def _take(buffer: list[Rows], n: int) -> tuple[Rows, list[Rows]]:
    """The first n rows of a list of row batches, and what is left."""
    out, rest, have = [], [], 0
    for i, part in enumerate(buffer):
        size = len(next(iter(part.values())))
        if have + size <= n:
            out.append(part)
            have += size
        else:
            cut = n - have
            if cut:
                out.append({k: v[:cut] for k, v in part.items()})
            rest = [{k: v[cut:] for k, v in part.items()}] + buffer[i + 1:]
            break
    return {k: np.concatenate([p[k] for p in out]) for k in out[0]}, rest


class GlobalBatches:
    def __init__(self, stream: Callable[[int], Iterable[Rows]], *, global_batch: int, rank: int, world: int,
                 seed: int, buffer_batches: int = 16):
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} is not divisible by {world} workers")
        self.stream, self.G, self.rank, self.world = stream, global_batch, rank, world
        self.seed, self.buffer_rows = seed, buffer_batches * global_batch

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[tuple[int, Rows]]:
        """(index in epoch, this worker's rows) for every full global batch of ``epoch``, from index ``skip``."""
        rng = np.random.default_rng([self.seed, epoch])
        local = self.G // self.world
        lo, hi = self.rank * local, (self.rank + 1) * local
        pending: list[Rows] = []
        n_pending = 0
        index = 0
        source = iter(self.stream(epoch))
        exhausted = False
        while True:
            while not exhausted and n_pending < self.buffer_rows:
                try:
                    part = next(source)
                except StopIteration:
                    exhausted = True
                    break
                if len(next(iter(part.values()))):
                    pending.append(part)
                    n_pending += len(next(iter(part.values())))
            take = min(n_pending, self.buffer_rows) // self.G * self.G
            if take == 0:
                return  # the last partial global batch is dropped
            rows, pending = _take(pending, take)
            n_pending -= take
            order = rng.permutation(take)
            for start in range(0, take, self.G):
                if index >= skip:
                    chosen = order[start:start + self.G][lo:hi]
                    yield index, {k: v[chosen] for k, v in rows.items()}
                index += 1


def to_torch(rows: Rows, device: torch.device | str) -> dict[str, torch.Tensor]:
    """Loader arrays -> model batch: ``inputs``, ``labels`` (−100 = ignore) and ``puzzle_ids`` as int64 tensors."""
    return {"inputs": torch.as_tensor(rows["inputs"], dtype=torch.long, device=device),
            "labels": torch.as_tensor(rows["labels"], dtype=torch.long, device=device),
            "puzzle_ids": torch.as_tensor(rows["puzzle_ids"], dtype=torch.long, device=device)}
