"""Training ingest cost per step against the demo's training step, in one process.

    python bench/ingest.py                  # the demo's shapes: 21,600 6×6 Sudoku rows, batch 128, 800 steps
    python bench/ingest.py --rows 2000 --steps 2 --run-steps 50    # a quick look

Ingest as the training job does it (pipeline.train.ingest): ``ShardedTrainData.configure`` gives the worker its
Ray Dataset, ``collect_share`` drains it once into memory (timed cold, Ray Data's first tasks included), then
``ShardedBatches`` cuts every global batch and ``to_torch`` makes tensors (timed over a whole epoch). The demo's
step (bench/step.py: demo flavour, q_target none, float32, eager) is timed in the same process. Cost per step over
a run = (read + run_steps × batch assembly) / run_steps; the target is <= 5% of the step. The data are synthetic
rows of the demo's shape written as Parquet parts like a built dataset's. Ray start-up is excluded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.data.meta import DatasetMeta  # noqa: E402
from pipeline.train.batches import ShardedBatches, to_torch, worker_range  # noqa: E402
from pipeline.train.ingest import ShardedTrainData  # noqa: E402
from pipeline.train.share import collect_share  # noqa: E402

TARGET = 0.05


def write_split(root: Path, rows: int, seq_len: int, part_rows: int) -> DatasetMeta:
    """Synthetic rows (random tokens) as Parquet parts of ``part_rows`` in example_id order, and their metadata."""
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    for i, start in enumerate(range(0, rows, part_rows)):
        ids = np.arange(start, min(rows, start + part_rows))
        tokens = rng.integers(1, 8, (len(ids), seq_len), dtype=np.uint8)
        binary = [pa.array(list(t.tobytes() for t in tokens), pa.binary())] * 2
        table = pa.table({"inputs": binary[0], "labels": binary[1], "puzzle_id": pa.array(ids.astype(np.int32)),
                          "group_id": pa.array(ids // 8), "example_id": pa.array(ids)})
        pq.write_table(table, root / "train" / f"part-{i:05d}.parquet", compression="zstd")
    return DatasetMeta(path=str(root), task="sudoku", task_args={}, vocab_size=8, seq_len=seq_len,
                       num_puzzle_identifiers=rows, counts={"train": rows, "test": 0}, groups={}, config={}, seed=0,
                       fingerprint="bench")


def measure(rows: int = 21600, seq_len: int = 36, part_rows: int = 2000, batch: int = 128, steps: int = 10,
            warmup: int = 3, run_steps: int = 800) -> dict[str, float]:
    """Seconds to read the share, per batch assembled, per training step, and the ingest cost per step."""
    from bench.step import DEMO, Row
    from bench.step import measure as step_measure
    from pipeline.core.ray_start import init_ray

    init_ray(num_cpus=2)
    with tempfile.TemporaryDirectory() as tmp:
        meta = write_split(Path(tmp) / "data", rows, seq_len, part_rows)
        data = ShardedTrainData.for_split(meta, shards=batch)
        start = time.perf_counter()
        iterator = data.configure({"train": data.whole()}, world_size=1, worker_handles=None,
                                  worker_node_ids=None)[0]["train"]
        share = collect_share(iterator, *worker_range(rows, batch, 1, 0))
        read_s = time.perf_counter() - start
    batches = ShardedBatches(share, n=rows, global_batch=batch, shards=batch, rank=0, world=1, seed=0)
    start = time.perf_counter()
    count = 0
    for _, cut in batches.epoch(0):
        to_torch(cut, "cpu")
        count += 1
    batch_s = (time.perf_counter() - start) / count
    step_s = step_measure(Row("demo", dict(DEMO, seq_len=seq_len, forward_dtype="float32", q_target="none"),
                              batch), steps, warmup, "cpu")["ms_per_step"] / 1000
    per_step = (read_s + run_steps * batch_s) / run_steps
    return {"read_s": read_s, "batch_s": batch_s, "step_s": step_s, "ingest_per_step_s": per_step,
            "ratio": per_step / step_s, "batch_ratio": batch_s / step_s, "rows": rows, "run_steps": run_steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=21600, help="rows of the training split (the demo's: 21600)")
    parser.add_argument("--seq-len", type=int, default=36)
    parser.add_argument("--part-rows", type=int, default=2000, help="rows per Parquet part (the demo's: 2000)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--run-steps", type=int, default=800, help="steps of the run the read is spread over")
    args = parser.parse_args(argv)
    r = measure(args.rows, args.seq_len, args.part_rows, args.batch, args.steps, args.warmup, args.run_steps)
    print(f"read the share ({r['rows']} rows, once per worker start): {r['read_s']:.2f} s")
    print(f"batch assembly + to_torch: {1000 * r['batch_s']:.3f} ms/step ({100 * r['batch_ratio']:.2f}% of the step)")
    print(f"training step (demo, batch {args.batch}): {1000 * r['step_s']:.1f} ms")
    print(f"ingest per step over {r['run_steps']} steps: {1000 * r['ingest_per_step_s']:.2f} ms = "
          f"{100 * r['ratio']:.2f}% of the step (target <= {100 * TARGET:.0f}%: "
          f"{'met' if r['ratio'] <= TARGET else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
