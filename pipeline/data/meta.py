"""``metadata.json`` of a dataset directory: what it holds, how it was made, how to rebuild its task."""

from __future__ import annotations

import datetime
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from pipeline.version import code_version  # noqa: F401 (re-exported: metadata.json records it)

log = logging.getLogger(__name__)

METADATA = "metadata.json"
SPLITS = ("train", "test")
BLANK_IDENTIFIER = "<blank>"
_REQUIRED = ("task", "task_args", "vocab_size", "seq_len", "num_puzzle_identifiers", "counts", "groups", "config",
             "seed", "fingerprint")


@dataclass
class DatasetMeta:
    """The parsed metadata.json; ``puzzle_identifiers[i]`` names puzzle id ``i`` ("task|variant", ARC only)."""

    path: Path
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

    def make_task(self):
        """The ``hrm.tasks`` object that encoded this dataset (``render``, ``score``, ``decode``)."""
        from hrm.tasks import make_task

        return make_task(self.task, self.task_args)

    def split_dir(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
        return self.path / split


def write_metadata(directory: Path, meta: dict[str, Any]) -> Path:
    """Write ``metadata.json`` (adds ``created``); written via a temp file and a rename."""
    meta = {**meta, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    path = Path(directory) / METADATA
    tmp = path.with_suffix(".json.part")
    # one top-level key per line, values compact: ARC's per-identifier lists stay small and greppable
    lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in meta.items()]
    tmp.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_metadata_dict(path: str | Path) -> dict[str, Any]:
    """The raw metadata.json of dataset directory ``path``; clear errors when missing or incomplete."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"dataset directory {path} does not exist")
    file = path / METADATA
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a complete dataset: {METADATA} is missing "
                                f"(build it with `hrm data build`)")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{file}: expected a JSON object")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"{file}: incomplete metadata, missing {missing}")
    return raw


def read_metadata(path: str | Path) -> DatasetMeta:
    """``DatasetMeta`` of dataset directory ``path``; also checks that its split folders exist."""
    path = Path(path)
    raw = read_metadata_dict(path)
    for split in SPLITS:
        if raw["counts"].get(split, 0) and not (path / split).is_dir():
            raise FileNotFoundError(f"{path}: metadata lists {raw['counts'][split]} {split} rows but "
                                    f"{path / split} is missing")
    known = set(DatasetMeta.__dataclass_fields__) - {"path"}
    return DatasetMeta(path=path, **{k: v for k, v in raw.items() if k in known})


__all__ = ["DatasetMeta", "read_metadata", "read_metadata_dict", "write_metadata", "code_version", "METADATA",
           "SPLITS", "BLANK_IDENTIFIER"]
