"""Where a dataset is written: stage 2 of ``hrm data build`` (augment → ``write_parquet``), metadata.json, publishing.

Stage 2, per split: ``from_items(jobs) → map_batches(augment_and_encode) → write_parquet`` (the dataset named
``<task> <split>``). A job is a fixed group of whole originals, so every row's content and ``example_id`` follow
from the plan, never from the number of workers. Columns: ``inputs``, ``labels`` (binary of ``seq_len`` uint8
tokens), ``puzzle_id`` int32, ``group_id`` int64, ``example_id`` int64; zstd. metadata.json lists the parts in
``example_id`` order, and readers read exactly those.

Publishing: on a local disk everything is built in ``<out>.tmp-<random>`` and renamed to ``<out>`` after
metadata.json is written. On an object store (``s3://``, ``gs://``: no rename) the parts go under
``<out>/parts-<random>/`` and metadata.json, naming them, is written last in one PUT; parts of older builds are
deleted after that. A location without metadata.json is not a dataset, so a build that dies leaves nothing readers
accept, and an overwrite that dies leaves the previous dataset whole (pipeline.data.publish: what a build may
replace, and leftovers of builds that died).
"""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core import storage
from pipeline.core.progress import Heartbeat, stage_line
from pipeline.data.builder import Builder, Job
from pipeline.data.builders import make_builder
from pipeline.data.config import DataConfig, config_dict, fingerprint, identity
from pipeline.data.meta import CHECKSUM, SPLITS, code_version, write_metadata
from pipeline.data.publish import Publish, discard, drop_old_parts, install, staging
from pipeline.data.ray_items import (
    items_dataset,
    no_retries_when_the_store_is_gone,
    ordered,
    worker_pool,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ the whole write
def write_dataset(out: str, jobs: list[Job], builder: Builder, cfg: DataConfig, skip_invalid: bool,
                  workers: int, publish: Publish) -> dict[str, Any]:
    """Write ``jobs`` (with ``example_start``) as the dataset at ``out`` and publish it; returns its metadata.

    Every split's parts and then metadata.json go to a staging location (``<out>.tmp-<random>``, or
    ``<out>/parts-<random>/`` on an object store), which is published as a whole or, on any error, deleted.
    ``publish`` (the build's lock and what ``out`` held at its start) is checked right before: a build never
    replaces a dataset it did not start from.
    """
    remote = storage.is_remote(out)
    prefix, work, root = staging(out)
    try:
        counts = {s: sum(j["rows"] for j in jobs if j["split"] == s) for s in SPLITS}
        log.info("writing %d train and %d test rows in %d parts", counts["train"], counts["test"], len(jobs))
        files = {}
        for split in SPLITS:
            folder = storage.join(work, split)
            storage.make_dirs(folder)
            write_split(f"{cfg.task} {split}", [j for j in jobs if j["split"] == split], cfg, skip_invalid,
                        workers, folder)
            files[split] = index_parts(folder, "/".join(p for p in (prefix, split) if p), counts[split])
        meta = dataset_metadata(cfg, builder, counts, files, _size(root, files))
        if remote:
            publish.check(out)
        write_metadata(root, meta)  # the commit point on an object store
        if not remote:
            install(work, out, publish)
    except BaseException:
        discard(work)
        raise
    if remote:
        drop_old_parts(out, keep=prefix)
    return meta


def dataset_metadata(cfg: DataConfig, builder: Builder, counts: dict[str, int],
                     files: dict[str, list[dict[str, Any]]], size: int) -> dict[str, Any]:
    """The contents of metadata.json (but ``created``): task, shapes, counts, parts, config and its fingerprint."""
    extra = builder.metadata()
    return {
        "task": cfg.task,
        "task_args": builder.task_args(),
        "vocab_size": builder.task.vocab_size,
        "seq_len": builder.task.seq_len,
        "num_puzzle_identifiers": extra.pop("num_puzzle_identifiers"),
        "counts": counts,
        "groups": extra.pop("groups"),
        "parts": {s: len(files[s]) for s in SPLITS},
        "bytes": size,
        "seed": cfg.seed,
        "fingerprint": fingerprint(cfg),
        "identity": identity(cfg),
        "config": config_dict(cfg),
        "code_version": code_version(),
        **extra,
        "checksums": CHECKSUM,  # every part's SHA-256 is in files: readers require them all (pipeline.data.meta)
        "files": files,
    }


# ------------------------------------------------------------------------------------------------ stage 2 on Ray
def augment_and_encode(batch: dict[str, np.ndarray], cfg, skip_invalid: bool):
    """The Ray Data UDF of stage 2: each pickled job → its augmented, encoded rows (a pyarrow Table in the dataset
    schema, ``example_id`` from the job's ``example_start``)."""
    import pyarrow as pa

    builder = make_builder(cfg, skip_invalid)
    tables = []
    for spec in batch["spec"]:
        job = pickle.loads(spec)
        inputs, labels, puzzle_id, group_id = builder.encode_job(job)
        if len(inputs) != job["rows"]:
            raise RuntimeError(f"{job['split']} job at example {job['example_start']}: {len(inputs)} rows, "
                               f"planned {job['rows']}")
        tables.append(part_table(inputs, labels, puzzle_id, group_id, job["example_start"]))
    return pa.concat_tables(tables)


def write_split(name: str, jobs: list[Job], cfg, skip_invalid: bool, workers: int, folder: str) -> None:
    """Stage 2 of one split: ``jobs`` → ``augment_and_encode`` → ``write_parquet(folder)`` (zstd), one part a job."""
    from pipeline.data.part_names import PartNames

    if not jobs:
        return
    t0 = time.perf_counter()
    fs, path = storage.filesystem(folder)
    ds = items_dataset(name, jobs).map_batches(
        augment_and_encode, fn_kwargs={"cfg": cfg, "skip_invalid": skip_invalid}, batch_size=1,
        batch_format="numpy", compute=worker_pool(workers), num_cpus=1)
    def written(elapsed: float) -> str:  # one part a job: the parts there (the last may be still being written)
        parts = sum(file.endswith(".parquet") for file in storage.list_files(folder))
        return stage_line(name, parts, len(jobs), "parts written", elapsed)

    with ordered(), no_retries_when_the_store_is_gone(), Heartbeat(written):
        ds.write_parquet(path, filesystem=fs, filename_provider=PartNames(), compression="zstd",
                         ray_remote_args={"num_cpus": 1})
    log.info("%s: %d jobs written to %s in %.1f s", name, len(jobs), folder, time.perf_counter() - t0)


def index_parts(folder: str, prefix: str, expected_rows: int) -> list[dict[str, Any]]:
    """The Parquet parts under ``folder`` in ``example_id`` order, from their footers, checked to tile
    ``[0, expected_rows)``: ``[{"path": prefix/name, "rows": n, "first": example_id}, …]``."""
    fs, root = storage.filesystem(folder)
    parts = []
    for name in storage.list_files(folder):
        if name.endswith(".parquet"):
            part = _part_entry(fs, root, folder, name, prefix)
            if part["rows"]:
                parts.append(part)
    parts.sort(key=lambda p: p["first"])
    start = 0
    for p in parts:
        if p["first"] != start:
            raise RuntimeError(f"{folder}: parts do not tile the example ids (expected {start}, got {p['first']})")
        start += p["rows"]
    if start != expected_rows:
        raise RuntimeError(f"{folder}: wrote {start} rows, planned {expected_rows}")
    return parts


def _part_entry(fs, root: str, folder: str, name: str, prefix: str) -> dict[str, Any]:
    """``{"path", "rows", "first", "bytes", "sha256"}`` of one part: rows and first id from its footer's
    ``example_id`` statistics, size and checksum of the file as written (readers check them: pipeline.data.verify)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.data.verify import sha256

    with fs.open_input_stream(f"{root}/{name}") as stream:
        data = stream.read()
    md = pq.read_metadata(pa.BufferReader(data))
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
    return {"path": f"{prefix}/{name}", "rows": int(md.num_rows), "first": int(lo) if md.num_rows else 0,
            "bytes": len(data), "sha256": sha256(data)}


# ------------------------------------------------------------------------------------------------ the Parquet schema
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
    """One part's rows in the dataset schema (a pyarrow Table); ``example_id`` counts from ``example_start``."""
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
    """Write one local Parquet part (zstd) in the dataset schema, outside Ray; returns its size in bytes (tests,
    tools)."""
    import pyarrow.parquet as pq

    pq.write_table(part_table(inputs, labels, puzzle_id, group_id, example_start), path, compression="zstd")
    return Path(path).stat().st_size


# ------------------------------------------------------------------------------------------------ publishing
def _size(root: str, files: dict[str, list[dict[str, Any]]]) -> int:
    """Total bytes of the parts listed in ``files`` (paths relative to ``root``)."""
    fs, base = storage.filesystem(root)
    paths = [f"{base}/{p['path']}" for parts in files.values() for p in parts]
    return sum(info.size for info in fs.get_file_info(paths)) if paths else 0
