"""Ray Data plumbing shared by the builders: run a list of work items in parallel, write Parquet parts, seeds.

Every item is one block (``override_num_blocks = len(items)``) processed by one task of ``map_batches``
(``batch_size=1``) under ``TaskPoolStrategy(size=workers)``; results come back in item order
(``preserve_order``). Items and results are pickled: small specs and summaries, never bulk data -- the bulk goes to
files from inside the workers. The output therefore depends on the items, never on the number of workers.
"""

from __future__ import annotations

import functools
import logging
import pickle
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integer parts (e.g. ``seed, stream, chunk``): independent streams per chunk."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _apply(fn: Callable[[Any], Any], batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    results = [pickle.dumps(fn(pickle.loads(spec)), protocol=5) for spec in batch["spec"]]
    return {"i": np.asarray(batch["i"], np.int64), "result": np.array(results, dtype=object)}


def run_stage(name: str, items: Sequence[Any], fn: Callable[[Any], Any], workers: int) -> list[Any]:
    """``[fn(item) for item in items]`` on Ray Data with ``workers`` parallel tasks, in item order."""
    if not items:
        return []
    from ray.data import DataContext

    options = DataContext.get_current().execution_options
    previous, options.preserve_order = options.preserve_order, True
    try:
        return _run(name, items, fn, workers)
    finally:
        options.preserve_order = previous


def _run(name: str, items: Sequence[Any], fn: Callable[[Any], Any], workers: int) -> list[Any]:
    import ray
    from ray.data import TaskPoolStrategy

    t0 = time.perf_counter()
    log.info("%s: %d work items on %d workers", name, len(items), workers)
    rows = [{"i": i, "spec": pickle.dumps(item, protocol=5)} for i, item in enumerate(items)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.map_batches(functools.partial(_apply, fn), batch_size=1, batch_format="numpy",
                        compute=TaskPoolStrategy(size=max(1, int(workers))), num_cpus=1)
    out: list[Any] = [None] * len(items)
    done = 0
    warnings.filterwarnings("ignore", message=".*operator only received.*", category=UserWarning)
    for row in ds.iter_rows():
        out[int(row["i"])] = pickle.loads(row["result"])
        done += 1
        if done == len(items) or done % max(1, len(items) // 10) == 0:
            log.info("%s: %d/%d done (%.1f s)", name, done, len(items), time.perf_counter() - t0)
    missing = [i for i, r in enumerate(out) if r is None]
    if missing:
        raise RuntimeError(f"{name}: no result for items {missing[:5]}")
    return out


def binary_column(tokens: np.ndarray):
    """A pyarrow binary array of the rows of ``tokens`` (m, L) uint8, built without Python objects."""
    import pyarrow as pa

    tokens = np.ascontiguousarray(tokens, dtype=np.uint8)
    m, length = tokens.shape
    if m * length >= 2**31:
        raise ValueError(f"{m} rows × {length} tokens is too large for one Parquet part")
    offsets = np.arange(m + 1, dtype=np.int32) * np.int32(length)
    return pa.Array.from_buffers(pa.binary(), m, [None, pa.py_buffer(offsets), pa.py_buffer(tokens.tobytes())])


def write_part(path: Path, inputs: np.ndarray, labels: np.ndarray, puzzle_id: np.ndarray, group_id: np.ndarray,
               example_start: int) -> int:
    """Write one Parquet part (zstd) in the dataset schema; returns its size in bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    m = len(inputs)
    if not (len(labels) == len(puzzle_id) == len(group_id) == m) or inputs.shape != labels.shape:
        raise ValueError(f"{path}: inconsistent column lengths")
    table = pa.table({
        "inputs": binary_column(inputs),
        "labels": binary_column(labels),
        "puzzle_id": pa.array(np.asarray(puzzle_id, np.int32)),
        "group_id": pa.array(np.asarray(group_id, np.int64)),
        "example_id": pa.array(np.arange(example_start, example_start + m, dtype=np.int64)),
    })
    # no mkdir: the driver made the folder, and a straggler must not re-create a deleted temp dir
    pq.write_table(table, path, compression="zstd")
    return path.stat().st_size


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"
