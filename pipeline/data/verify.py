"""A dataset checked where it is opened, so that a damaged one fails with a message naming the part and the row, not
deep inside a training worker (``OSError: ZSTD decompression failed``, or ``IndexError`` in the embedding).

``hrm data build`` records each Parquet part's size and SHA-256 in metadata.json (pipeline.data.write). Then:

- :func:`verify_dataset` checks every listed part: its size and checksum, that it is a Parquet file of the dataset's
  schema holding the rows metadata.json says, and that its tokens and puzzle ids fit the vocabulary. ``hrm train``
  runs it before any cluster work, ``hrm data check`` on demand.
- :func:`read_part` does the same for one part as it is read (``load_split``: ``hrm eval``, the
  evaluations in training, ``hrm data show``).
- Batches on their way into a training worker are checked for token range too (pipeline.train.share).

Datasets built before checksums were recorded are checked for everything else.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from pipeline.data.meta import SPLITS, DatasetMeta, part_files

log = logging.getLogger(__name__)

SCHEMA = {"inputs": "binary", "labels": "binary", "puzzle_id": "int32", "group_id": "int64", "example_id": "int64"}
REBUILD = "rebuild the dataset (`hrm data build ... --overwrite`)"


class DatasetError(ValueError):
    """A dataset that cannot be used as it is; the message names the file (and the row), what is wrong and what to
    do."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_part(meta: DatasetMeta, entry: dict[str, Any], data: bytes):
    """The part listed in metadata.json as ``entry``, whose bytes are ``data``, as a pyarrow Table: checked against
    the recorded size and checksum, the schema, the row count, the vocabulary. DatasetError naming it otherwise."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.core import storage

    where = storage.join(meta.path, entry["path"])
    if "bytes" in entry and len(data) != entry["bytes"]:
        raise DatasetError(f"{where}: {len(data):,} bytes, but metadata.json says {entry['bytes']:,} — the part is "
                           f"truncated or was replaced; {REBUILD}")
    if "sha256" in entry and sha256(data) != entry["sha256"]:
        raise DatasetError(f"{where}: its SHA-256 differs from the one recorded when the dataset was built — the part "
                           f"is damaged; {REBUILD}")
    try:
        # One thread: Arrow's thread pool, once started, now and then aborts the process as it exits ("terminate
        # called without an active exception", exit 134). `hrm data check` of a built dataset, 6-10 runs at a time
        # on 2 cores: 4 aborts in 200 runs before, 0 in 600 after; a part read from memory gains little from it.
        table = pq.read_table(pa.BufferReader(data), use_threads=False)
    except (pa.ArrowException, OSError) as err:
        raise DatasetError(f"{where}: not a readable Parquet file ({err}); {REBUILD}") from None
    check_schema(table.schema, where)
    if "rows" in entry and table.num_rows != entry["rows"]:
        raise DatasetError(f"{where}: {table.num_rows} rows, but metadata.json says {entry['rows']}; {REBUILD}")
    check_tokens(table, meta, where)
    return table


def check_schema(schema, where: str) -> None:
    """Every column of the dataset's schema, of its type."""
    found = {name: str(schema.field(name).type) for name in schema.names}
    wrong = [f"{name} is {found[name]} (expected {kind})" for name, kind in SCHEMA.items()
             if name in found and found[name] != kind]
    missing = [name for name in SCHEMA if name not in found]
    if missing or wrong:
        what = "; ".join(([f"no column {', '.join(missing)}"] if missing else []) + wrong)
        raise DatasetError(f"{where}: not the dataset's Parquet schema: {what}; {REBUILD}")


def check_tokens(table, meta: DatasetMeta, where: str) -> None:
    """Tokens of the right length and within the vocabulary, puzzle ids within the embedding; the first bad row is
    named by its index in the part and its example_id."""
    from pipeline.data.tokens import byte_matrix, token_problem

    try:
        inputs = byte_matrix(table.column("inputs"), meta.seq_len, "inputs")
        labels = byte_matrix(table.column("labels"), meta.seq_len, "labels")
    except ValueError as err:
        raise DatasetError(f"{where}: {err}; {REBUILD}") from None
    found = token_problem(inputs, labels, table.column("puzzle_id").to_numpy(), meta.vocab_size,
                         meta.num_puzzle_identifiers)
    if found is not None:
        row, what = found
        example = int(table.column("example_id")[row].as_py())
        raise DatasetError(f"{where}: row {row} (example_id {example}): {what}; {REBUILD}")


def read_part(meta: DatasetMeta, entry: dict[str, Any]):
    """Read and check one listed part (:func:`check_part`); a part that cannot be read is named too."""
    from pipeline.core import storage

    where = storage.join(meta.path, entry["path"])
    try:
        data = storage.read_bytes(where)
    except FileNotFoundError:
        raise DatasetError(f"{where}: missing, but metadata.json lists it; {REBUILD}") from None
    return check_part(meta, entry, data)


def entries(meta: DatasetMeta, split: str) -> list[dict[str, Any]]:
    """metadata.json's part list of ``split``; for a dataset from before it had one, its files in name order."""
    from pipeline.core import storage

    if meta.files is not None:
        return list(meta.files.get(split, []))
    prefix = storage.join(meta.path, "")
    return [{"path": f[len(prefix):] if f.startswith(prefix) else f} for f in part_files(meta, split)]


@dataclass
class Verified:
    parts: int
    rows: int
    bytes: int
    checksums: int  # parts whose checksum was recorded (and matched)
    seconds: float


def verify_dataset(meta: DatasetMeta, splits: tuple[str, ...] = SPLITS) -> Verified:
    """Check every part of ``splits`` (:func:`check_part`) and that they hold the rows metadata.json counts;
    DatasetError naming the first bad part."""
    from pipeline.core.progress import crossed

    t0 = time.perf_counter()
    parts = size = checksums = 0
    held = dict.fromkeys(splits, 0)  # rows per split
    listed = [(split, e) for split in splits for e in entries(meta, split)]
    for split, entry in listed:
        held[split] += read_part(meta, entry).num_rows
        parts, size, checksums = parts + 1, size + entry.get("bytes", 0), checksums + ("sha256" in entry)
        if len(listed) >= 50 and crossed(parts - 1, parts, len(listed)):  # a long check says how far it is
            log.info("checking %s: %d/%d parts", meta.path, parts, len(listed))
    for split, rows in held.items():
        if rows != meta.counts.get(split, 0):
            raise DatasetError(f"{meta.path}: the {split} parts hold {rows} rows, but metadata.json counts "
                               f"{meta.counts.get(split, 0)}; {REBUILD}")
    rows = sum(held.values())
    done = Verified(parts, rows, size, checksums, time.perf_counter() - t0)
    log.info("dataset %s: %d parts, %d rows checked (%d checksums) in %.1f s", meta.path, parts, rows, checksums,
             done.seconds)
    return done
