"""The Ray Data stages of ``hrm data build`` and the Parquet format they write.

Stage 1, ``make_originals``: ``from_items(chunks) → map_batches(make_originals)``; each chunk (generate one fixed
chunk from ``(seed, stream, chunk)``, or check an imported slice) comes back to the driver as a summary holding its
originals. Stage 2, per split: ``from_items(jobs) → map_batches(augment_and_encode) → write_parquet``; a job is a
fixed group of whole originals, so every row's content and ``example_id`` follow from the plan, never from the
number of workers. Work items travel pickled in one ``bytes`` column (a chunk or a job with its originals; the
augmented rows are Arrow tables).
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SCHEMA_COLUMNS = ("inputs", "labels", "puzzle_id", "group_id", "example_id")


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integer parts (e.g. ``seed, stream, chunk``): independent streams per chunk."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def binary_column(tokens: np.ndarray):
    """A pyarrow binary array of the rows of ``tokens`` (m, L) uint8, built without Python objects."""
    import pyarrow as pa

    tokens = np.ascontiguousarray(tokens, dtype=np.uint8)
    m, length = tokens.shape
    if m * length >= 2**31:
        raise ValueError(f"{m} rows × {length} tokens is too large for one Parquet part")
    offsets = np.arange(m + 1, dtype=np.int32) * np.int32(length)
    return pa.Array.from_buffers(pa.binary(), m, [None, pa.py_buffer(offsets), pa.py_buffer(tokens.tobytes())])


def part_table(inputs: np.ndarray, labels: np.ndarray, puzzle_id: np.ndarray, group_id: np.ndarray,
               example_start: int):
    """One part's rows in the dataset schema (a pyarrow Table)."""
    import pyarrow as pa

    m = len(inputs)
    if not (len(labels) == len(puzzle_id) == len(group_id) == m) or inputs.shape != labels.shape:
        raise ValueError("inconsistent column lengths")
    return pa.table({
        "inputs": binary_column(inputs),
        "labels": binary_column(labels),
        "puzzle_id": pa.array(np.asarray(puzzle_id, np.int32)),
        "group_id": pa.array(np.asarray(group_id, np.int64)),
        "example_id": pa.array(np.arange(example_start, example_start + m, dtype=np.int64)),
    })


def write_part(path: Path, inputs: np.ndarray, labels: np.ndarray, puzzle_id: np.ndarray, group_id: np.ndarray,
               example_start: int) -> int:
    """Write one local Parquet part (zstd) in the dataset schema; returns its size in bytes (tests, tools)."""
    import pyarrow.parquet as pq

    pq.write_table(part_table(inputs, labels, puzzle_id, group_id, example_start), path, compression="zstd")
    return Path(path).stat().st_size


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


# ------------------------------------------------------------------------------------------------ Ray Data UDFs
def make_originals(batch: dict[str, np.ndarray], cfg, skip_invalid: bool) -> dict[str, np.ndarray]:
    """Stage 1 UDF: each chunk spec → its summary (originals, canonical keys, problems), pickled."""
    from pipeline.data.build import make_builder

    builder = make_builder(cfg, skip_invalid)
    out = [pickle.dumps(builder.run_item(pickle.loads(spec)), protocol=5) for spec in batch["spec"]]
    return {"i": np.asarray(batch["i"], np.int64), "summary": np.array(out, dtype=object)}


def augment_and_encode(batch: dict[str, np.ndarray], cfg, skip_invalid: bool):
    """Stage 2 UDF: each job (whole originals) → its augmented, encoded rows in the dataset schema."""
    import pyarrow as pa

    from pipeline.data.build import make_builder

    builder = make_builder(cfg, skip_invalid)
    tables = []
    for spec in batch["spec"]:
        job = pickle.loads(spec)
        inputs, labels, puzzle_id, group_id = builder.run_job(job)
        if len(inputs) != job["rows"]:
            raise RuntimeError(f"{job['split']} job at example {job['example_start']}: {len(inputs)} rows, "
                               f"planned {job['rows']}")
        tables.append(part_table(inputs, labels, puzzle_id, group_id, job["example_start"]))
    return pa.concat_tables(tables)


def _items_dataset(name: str, items: Sequence[Any]):
    import ray

    rows = [{"i": i, "spec": pickle.dumps(item, protocol=5)} for i, item in enumerate(items)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))  # one item per block: a unit of parallel work
    ds.set_name(name)
    return ds


@contextlib.contextmanager
def _ordered():
    """Ray Data keeps block order while this is open (restored afterwards)."""
    from ray.data import DataContext

    options = DataContext.get_current().execution_options
    previous, options.preserve_order = options.preserve_order, True
    warnings.filterwarnings("ignore", message=".*operator only received.*", category=UserWarning)
    try:
        yield
    finally:
        options.preserve_order = previous


def run_originals(name: str, items: Sequence[dict[str, Any]], cfg, skip_invalid: bool,
                  workers: int) -> list[dict[str, Any]]:
    """Stage 1 over ``items`` on Ray Data; summaries in item order."""
    if not items:
        return []
    from ray.data import TaskPoolStrategy

    t0 = time.perf_counter()
    log.info("%s: %d chunks on %d workers", name, len(items), workers)
    ds = _items_dataset(name, items).map_batches(
        make_originals, fn_kwargs={"cfg": cfg, "skip_invalid": skip_invalid}, batch_size=1, batch_format="numpy",
        compute=TaskPoolStrategy(size=max(1, int(workers))), num_cpus=1)
    out: list[Any] = [None] * len(items)
    with _ordered():
        for row in ds.iter_rows():
            out[int(row["i"])] = pickle.loads(row["summary"])
    missing = [i for i, r in enumerate(out) if r is None]
    if missing:
        raise RuntimeError(f"{name}: no result for chunks {missing[:5]}")
    log.info("%s: %d chunks done in %.1f s", name, len(items), time.perf_counter() - t0)
    return out


def write_split(name: str, jobs: Sequence[dict[str, Any]], cfg, skip_invalid: bool, workers: int,
                folder: str) -> None:
    """Stage 2 of one split: ``jobs`` → ``augment_and_encode`` → ``write_parquet(folder)`` (zstd)."""
    from ray.data import TaskPoolStrategy

    from pipeline import storage
    from pipeline.data.part_names import PartNames

    if not jobs:
        return
    t0 = time.perf_counter()
    fs, path = storage.filesystem(folder)
    ds = _items_dataset(name, jobs).map_batches(
        augment_and_encode, fn_kwargs={"cfg": cfg, "skip_invalid": skip_invalid}, batch_size=1,
        batch_format="numpy", compute=TaskPoolStrategy(size=max(1, int(workers))), num_cpus=1)
    with _ordered():
        ds.write_parquet(path, filesystem=fs, filename_provider=PartNames(), compression="zstd",
                         ray_remote_args={"num_cpus": 1})
    log.info("%s: %d jobs written to %s in %.1f s", name, len(jobs), folder, time.perf_counter() - t0)


def index_parts(folder: str, prefix: str, expected_rows: int) -> list[dict[str, Any]]:
    """The Parquet parts under ``folder`` in ``example_id`` order, from their footers, checked to tile
    ``[0, expected_rows)``: ``[{"path": prefix/name, "rows": n, "first": example_id}, …]``."""
    import pyarrow.parquet as pq

    from pipeline import storage

    fs, root = storage.filesystem(folder)
    parts = []
    for name in storage.list_files(folder):
        if not name.endswith(".parquet"):
            continue
        md = pq.read_metadata(f"{root}/{name}", filesystem=fs)
        col = md.schema.to_arrow_schema().get_field_index("example_id")
        lo = hi = None
        for g in range(md.num_row_groups):
            st = md.row_group(g).column(col).statistics
            if st is None or not st.has_min_max:
                raise RuntimeError(f"{folder}/{name}: no example_id statistics")
            lo = st.min if lo is None else min(lo, st.min)
            hi = st.max if hi is None else max(hi, st.max)
        if md.num_rows and hi - lo + 1 != md.num_rows:
            raise RuntimeError(f"{folder}/{name}: example ids {lo}..{hi} are not one run of {md.num_rows} rows")
        if md.num_rows:
            parts.append({"path": f"{prefix}/{name}", "rows": int(md.num_rows), "first": int(lo)})
    parts.sort(key=lambda p: p["first"])
    start = 0
    for p in parts:
        if p["first"] != start:
            raise RuntimeError(f"{folder}: parts do not tile the example ids (expected {start}, got {p['first']})")
        start += p["rows"]
    if start != expected_rows:
        raise RuntimeError(f"{folder}: wrote {start} rows, planned {expected_rows}")
    return parts
