"""``metadata.json`` of a dataset directory: what it holds, how it was made, how to rebuild its task."""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.tracking.version import code_version  # noqa: F401 (re-exported: metadata.json records it)

log = logging.getLogger(__name__)

METADATA = "metadata.json"
SPLITS = ("train", "test")
BLANK_IDENTIFIER = "<blank>"
CHECKSUM = "sha256"  # what a build records of every part, beside its size
_REQUIRED = ("task", "task_args", "vocab_size", "seq_len", "num_puzzle_identifiers", "counts", "groups", "config",
             "seed", "fingerprint")


@dataclass
class DatasetMeta:
    """The parsed metadata.json; ``puzzle_identifiers[i]`` names puzzle id ``i`` ("task|variant", ARC only)."""

    path: str  # a local folder (absolute) or an s3:// / gs:// URI: never a pathlib.Path (it mangles URIs)
    task: str
    task_args: dict[str, Any]
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    counts: dict[str, int]
    groups: dict[str, int]
    config: dict[str, Any]
    seed: int
    fingerprint: str
    code_version: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    puzzle_identifiers: list[str] | None = None
    transforms: list[list[Any]] | None = None  # ARC: per puzzle id [dihedral id, colour permutation "0…9"]
    stats: dict[str, Any] = field(default_factory=dict)
    # per split, the Parquet parts in example_id order: [{"path": relative to the dataset, "rows", "first"}, ...]
    # (datasets from before this field: every train/part-*.parquet in name order)
    files: dict[str, list[dict[str, Any]]] | None = None
    parts: dict[str, int] | None = None

    def make_task(self):
        """The ``hrm.tasks`` object that encoded this dataset (``render``, ``score``, ``decode``)."""
        from hrm.tasks import make_task

        return make_task(self.task, self.task_args)

    def split_dir(self, split: str) -> str:
        """The folder (or URI) of a split's parts in the dataset's own layout."""
        from pipeline.core import storage

        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
        return storage.join(self.path, split)


def write_metadata(directory: str | Path, meta: dict[str, Any]) -> str:
    """Write ``metadata.json`` (adds ``created``) atomically: temp file + rename locally, one PUT on S3/GCS."""
    from pipeline.core import storage

    meta = {**meta, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    path = storage.join(storage.normalize(directory), METADATA)
    # one top-level key per line, values compact: ARC's per-identifier lists stay small and greppable
    lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in meta.items()]
    storage.write_text(path, "{\n" + ",\n".join(lines) + "\n}\n")
    return path


def read_metadata_dict(path: str | Path) -> dict[str, Any]:
    """The raw metadata.json of dataset ``path`` (a folder or an s3:// / gs:// prefix); clear errors when missing
    or incomplete. A location without metadata.json is not a dataset (a build in progress, or one that died)."""
    from pipeline.core import storage

    path = storage.normalize(path)
    file = storage.join(path, METADATA)
    try:
        text = storage.read_text(file)
    except (FileNotFoundError, IsADirectoryError, OSError) as e:
        if not storage.exists(path):
            raise FileNotFoundError(f"dataset directory {path} does not exist") from None
        if isinstance(e, FileNotFoundError) or not storage.is_file(file):
            raise FileNotFoundError(f"{path} is not a complete dataset: {METADATA} is missing "
                                    f"(build it with `hrm data build`)") from None
        raise
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{file}: expected a JSON object")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"{file}: incomplete metadata, missing {missing}")
    check_files(raw, file)
    return raw


def check_files(raw: dict[str, Any], file: str) -> None:
    """metadata.json's part list as a build writes it: each part a relative path inside the dataset (never absolute,
    never through ``..``: a reader opens nothing outside it), and a SHA-256 for every part or for none (a dataset
    from before checksums). A build of this version says ``"checksums": "sha256"``: then every part needs one.
    metadata.json is not signed: checksums find damage, not the edits of someone who may write metadata.json."""
    files = raw.get("files")
    if files is None:
        return
    if not isinstance(files, dict) or not all(isinstance(v, list) for v in files.values()):
        raise ValueError(f"{file}: files must map each split to its list of parts")
    parts = [(split, i, p) for split, listed in files.items() for i, p in enumerate(listed)]
    for split, i, part in parts:
        path = part.get("path") if isinstance(part, dict) else None
        if not inside(path):
            raise ValueError(f"{file}: files.{split}[{i}]: {str(path)[:80]!r} is not a path inside the dataset "
                             "(relative, without '..'); refused")
    summed = sum("sha256" in p for _, _, p in parts)
    if (raw.get("checksums") == CHECKSUM or summed) and summed < len(parts):
        raise ValueError(f"{file}: {len(parts) - summed} of {len(parts)} parts have no sha256, though the build "
                         "recorded one for each: metadata.json was edited; rebuild the dataset (hrm data build "
                         "--overwrite)")


def inside(path: Any) -> bool:
    """A relative POSIX path that stays inside the folder it is joined to."""
    if not isinstance(path, str) or not path or path.startswith(("/", "\\")) or "\\" in path or ":" in path:
        return False
    return all(piece not in ("", ".", "..") for piece in path.split("/"))


def read_metadata(path: str | Path) -> DatasetMeta:
    """``DatasetMeta`` of dataset ``path`` (folder or URI); also checks that each non-empty split's data exists."""
    from pipeline.core import storage

    path = storage.normalize(path)
    raw = read_metadata_dict(path)
    known = set(DatasetMeta.__dataclass_fields__) - {"path"}
    meta = DatasetMeta(path=path, **{k: v for k, v in raw.items() if k in known})
    for split in SPLITS:
        if not raw["counts"].get(split, 0):
            continue
        listed = (meta.files or {}).get(split)
        where = storage.join(path, listed[0]["path"]) if listed else meta.split_dir(split)
        if not storage.exists(where):
            raise FileNotFoundError(f"{path}: metadata lists {raw['counts'][split]} {split} rows but {where} "
                                    f"is missing")
    return meta


def part_files(meta: DatasetMeta, split: str) -> list[str]:
    """Locations (paths or URIs) of the split's Parquet parts in ``example_id`` order: the ones metadata.json names.

    Only those are read: parts of a build that died, or of an older build still being cleaned up, are never mixed in.
    """
    from pipeline.core import storage

    folder = meta.split_dir(split)  # also checks the split name
    if meta.files is not None:
        files = [storage.join(meta.path, p["path"]) for p in meta.files.get(split, [])]
    else:  # datasets from before metadata listed its parts
        files = [storage.join(folder, n) for n in storage.listdir(folder)
                 if n.startswith("part-") and n.endswith(".parquet")]
    if meta.counts.get(split, 0) and not files:
        raise FileNotFoundError(f"{folder}: no Parquet parts, but metadata lists {meta.counts[split]} rows")
    return files


__all__ = ["DatasetMeta", "read_metadata", "read_metadata_dict", "write_metadata", "code_version", "METADATA",
           "SPLITS", "BLANK_IDENTIFIER", "part_files"]
