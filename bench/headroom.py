"""Ingest headroom (#25, table 3): the training side of a built dataset, exactly the code a worker runs, no model.

    python bench/scale.py ingest --train sudoku-extreme-1k --data /data/sudoku-extreme-1k
    python bench/scale.py ingest --train maze-hard-1k --data /data/maze-hard-1k --workers 1 8 64

For a training config (its global batch and data shards) on a built dataset: worker 0 of W reads its share through
Ray Train's dataset sharding (``ShardedTrainData.configure``, then ``collect_share``: pipeline.train.ingest), then
cuts its slice of every global batch (``ShardedBatches``) and makes tensors (``to_torch``), epoch after epoch, for a
few seconds. Per W: the share's rows and the RAM its arrays hold, the read's seconds, and batch assembly in
examples/s and tokens/s per worker against what one GPU consumes (the paper's code on an H200, bench/NOTES.md):
Sudoku 9,771 examples/s (batch 768, 81 tokens), Maze 739 (batch 128, 900 tokens). ARC has no H200 figure: it is held
to Maze's, its rows being 900 tokens too. Each worker is held to one GPU's whole demand (a GPU fed by one worker);
the goal is >= 5× that. Time figures depend on the CPU; rows and bytes do not.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

# examples/s one H200 trains at with the paper's code (bench/NOTES.md); ARC held to Maze's
GPU_DEMAND = {"sudoku": 9771, "maze": 739, "arc": 739}
GOAL = 5.0


@dataclass
class Headroom:
    task: str
    workers: int
    rows: int  # this worker's share
    share_mib: float  # the RAM its arrays hold
    read_s: float
    local_batch: int
    batches: int  # timed
    examples_per_s: float
    tokens_per_s: float
    demand: float  # examples/s one GPU consumes
    ratio: float

    def line(self) -> str:
        return (f"| {self.task} | {self.workers} | {self.rows:,} | {self.share_mib:,.1f} MiB | {self.read_s:.1f} s | "
                f"{self.local_batch} | {self.examples_per_s:,.0f} | {self.tokens_per_s / 1e6:,.2f} M | "
                f"{self.demand:,.0f} | {self.ratio:,.1f}× {'met' if self.ratio >= GOAL else 'MISSED'} |")


HEADER = ("| task | workers | share rows | share RAM | read | local batch | examples/s | tokens/s | GPU demand "
          f"(examples/s) | ratio (goal ≥ {GOAL:g}×) |\n|---|---|---|---|---|---|---|---|---|---|")


def measure(data_path: str, global_batch: int, shards: int, workers: int, seconds: float = 5.0,
            max_batches: int = 500) -> Headroom:
    """Worker 0 of ``workers``: its share read, then its batches assembled for ``seconds`` (at most ``max_batches``).
    Needs a Ray (pipeline.core.ray_start.init_ray)."""
    from pipeline.data.loader import read_metadata
    from pipeline.train.batches import ShardedBatches, to_torch, worker_range
    from pipeline.train.ingest import ShardedTrainData
    from pipeline.train.share import collect_share

    meta = read_metadata(data_path)
    n = meta.counts["train"]
    data = ShardedTrainData.for_split(meta, shards=shards)
    lo, hi = worker_range(n, shards, workers, 0)
    started = time.perf_counter()
    iterator = data.configure({"train": data.whole()}, world_size=workers)[0]["train"]
    share = collect_share(iterator, lo, hi)
    read_s = time.perf_counter() - started
    batches = ShardedBatches(share, n=n, global_batch=global_batch, shards=shards, rank=0, world=workers, seed=0)
    cuts = (cut for epoch in itertools.count() for _, cut in batches.epoch(epoch))  # Maze-Hard: 1 batch an epoch
    count, rows, started = 0, 0, time.perf_counter()
    for cut in cuts:
        rows += len(to_torch(cut, "cpu")["inputs"])
        count += 1
        if count >= max_batches or time.perf_counter() - started >= seconds:
            break
    took = time.perf_counter() - started
    demand = GPU_DEMAND[meta.task]
    per_s = rows / took
    return Headroom(task=meta.task, workers=workers, rows=hi - lo,
                    share_mib=sum(v.nbytes for v in share.values()) / (1 << 20), read_s=read_s,
                    local_batch=global_batch // workers, batches=count, examples_per_s=per_s,
                    tokens_per_s=per_s * meta.seq_len, demand=demand, ratio=per_s / demand)
