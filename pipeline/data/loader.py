"""Reading a dataset built by ``hrm data build``: metadata, a split as a Ray Dataset or as NumPy arrays.

Decoded arrays: ``inputs`` int32 (N, L), ``labels`` int64 (N, L) with label token 0 (ignored) as -100,
``puzzle_ids`` int32 (N,). ``load_split`` gives rows in ``example_id`` order (the parts metadata.json lists, in
its order). Locations are local folders or ``s3://`` / ``gs://`` prefixes (``pipeline.core.storage``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.meta import SPLITS, DatasetMeta, part_files, read_metadata
from pipeline.data.tokens import byte_matrix

IGNORE_LABEL = -100
COLUMNS = ["inputs", "labels", "puzzle_id"]


def _binary_rows(column: Any, seq_len: int, name: str) -> np.ndarray:
    """(N, seq_len) uint8 from a pyarrow binary column/array, or a NumPy object array of bytes."""
    import pyarrow as pa

    if isinstance(column, (pa.ChunkedArray, pa.Array)):
        return byte_matrix(column, seq_len, name)
    values = list(column)
    if any(len(v) != seq_len for v in values):
        raise ValueError(f"column {name}: every value must hold seq_len={seq_len} bytes")
    return np.frombuffer(b"".join(values), np.uint8).reshape(-1, seq_len)


def decode_table(table_or_batch: Any, seq_len: int) -> dict[str, np.ndarray]:
    """Decode a pyarrow Table or a NumPy batch (dict of columns) of the Parquet schema into model arrays."""
    import pyarrow as pa

    get = (lambda c: table_or_batch.column(c)) if isinstance(table_or_batch, pa.Table) else table_or_batch.__getitem__
    inputs = _binary_rows(get("inputs"), seq_len, "inputs")
    labels = _binary_rows(get("labels"), seq_len, "labels").astype(np.int64)
    labels[labels == 0] = IGNORE_LABEL
    ids = get("puzzle_id")
    ids = ids.to_numpy() if isinstance(ids, (pa.ChunkedArray, pa.Array)) else np.asarray(ids)
    return {"inputs": inputs.astype(np.int32), "labels": labels, "puzzle_ids": ids.astype(np.int32)}


def load_split(path: str | Path, split: str, limit: int | None = None, *,
               with_ids: bool = False) -> dict[str, np.ndarray]:
    """A split as NumPy arrays (plain pyarrow, no Ray), rows in ``example_id`` order; the first ``limit`` rows when
    given. ``path`` is a local folder or an ``s3://`` / ``gs://`` prefix. Each part read is checked
    (pipeline.data.verify.read_part): a damaged one is a DatasetError naming it.

    ``with_ids`` adds ``group_ids`` and ``example_ids`` (int64).
    """
    import pyarrow as pa

    from pipeline.data.verify import entries, read_part

    meta = read_metadata(path)
    columns = COLUMNS + ["group_id", "example_id"]
    tables, n = [], 0
    for entry in entries(meta, split):
        if limit is not None and n >= limit:
            break
        table = read_part(meta, entry).select(columns)  # checked: size, checksum, schema, tokens
        ids = table.column("example_id").to_numpy()
        if len(ids) > 1 and (np.diff(ids) < 0).any():  # a writer may order rows within a part freely
            table = table.take(np.argsort(ids, kind="stable"))
        tables.append(table)
        n += table.num_rows
    if not tables:
        table = pa.table({"inputs": pa.array([], pa.binary()), "labels": pa.array([], pa.binary()),
                          "puzzle_id": pa.array([], pa.int32()), "group_id": pa.array([], pa.int64()),
                          "example_id": pa.array([], pa.int64())}).select(columns)
    else:
        table = pa.concat_tables(tables)
    if limit is not None:
        table = table.slice(0, limit)
    out = decode_table(table, meta.seq_len)
    if with_ids:
        out["group_ids"] = table.column("group_id").to_numpy().astype(np.int64)
        out["example_ids"] = table.column("example_id").to_numpy().astype(np.int64)
    return out


def read_split(path: str | Path, split: str, *, override_num_blocks: int | None = None):
    """A split as a ``ray.data.Dataset`` with batches ``inputs`` int32, ``labels`` int64, ``puzzle_ids`` int32.

    ``path`` is a local folder or an ``s3://`` / ``gs://`` prefix; only the parts metadata.json names are read.
    """
    import ray

    from pipeline.core import storage

    meta = read_metadata(path)
    files = part_files(meta, split)
    if not files:
        raise ValueError(f"{meta.path}: the {split} split is empty")
    fs = storage.filesystem(meta.path)[0]
    seq_len = meta.seq_len
    ds = ray.data.read_parquet([storage.filesystem(f)[1] for f in files], filesystem=fs, columns=COLUMNS,
                               override_num_blocks=override_num_blocks)
    return ds.map_batches(lambda batch: decode_table(batch, seq_len), batch_format="numpy")


def arc_test_refs(meta: DatasetMeta, puzzle_ids: np.ndarray) -> list:
    """``hrm.tasks.arc.TestRef`` per test row (rows in file order): which task, test pair, variant and transform.

    Test rows of one (task, variant) are written consecutively in test-pair order, so the pair index is the row's
    rank among earlier rows with the same puzzle id. Map labels -100 back to 0 before ``hrm.tasks.arc.crop``.
    """
    from hrm.tasks.arc import TestRef, Transform

    if meta.task != "arc" or not meta.puzzle_identifiers:
        raise ValueError(f"{meta.path}: not an ARC dataset with puzzle identifiers")
    seen: dict[int, int] = {}
    refs = []
    for pid in np.asarray(puzzle_ids).tolist():
        name = meta.puzzle_identifiers[pid]
        tid, variant = name.rsplit("|", 1)
        k, perm = meta.transforms[pid]
        index = seen.get(pid, 0)
        seen[pid] = index + 1
        refs.append(TestRef(tid, index, int(variant), Transform(int(k), tuple(int(c) for c in perm))))
    return refs


__all__ = ["read_metadata", "DatasetMeta", "read_split", "load_split", "part_files", "decode_table", "arc_test_refs",
           "IGNORE_LABEL", "SPLITS"]
