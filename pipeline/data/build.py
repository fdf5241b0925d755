"""The Ray Data job behind ``hrm data build``: four named stages, run in order by ``build_dataset``.

1. originals (``pipeline.data.make_originals``): generated, or imported and checked, on Ray Data, in rounds until
   de-duplication leaves enough;
2. split (``Builder.split``; Sudoku and Maze: ``pipeline.data.split``): train and test, no leak under symmetries;
3. plan (``plan_parts``): jobs of whole originals, one Parquet part each, with their first ``example_id``;
4. augment and write (``pipeline.data.write``): on Ray Data, ending in ``write_parquet``, then metadata.json,
   published atomically.

What is task-specific is the builder's (``pipeline.data.builder.Builder``; ``build_sudoku``, ``build_maze``,
``build_arc``). The rows and their ``example_id`` depend on the config and seed only (fixed chunks and jobs,
per-chunk and per-original seeds), never on the number of workers.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core import locks, storage
from pipeline.core.config_io import flatten
from pipeline.data.builder import Job
from pipeline.data.builders import make_builder
from pipeline.data.config import DataConfig, fingerprint, identity
from pipeline.data.make_originals import make_originals
from pipeline.data.meta import METADATA, SPLITS, read_metadata_dict
from pipeline.data.publish import (
    PARTS_PREFIX,
    DatasetExistsError,
    Publish,
    clean_leftovers,
    foreign_files,
    metadata_digest,
    shown,
)
from pipeline.data.write import write_dataset

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    """What ``build_dataset`` did: where, whether it built anything, rows and originals per split, stats."""

    path: str | Path  # a Path for a local dataset, the URI string for s3:// / gs://
    built: bool  # False: an identical dataset was already there
    counts: dict[str, int]
    groups: dict[str, int]
    seconds: float
    fingerprint: str
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        """Invalid input rows/tasks dropped under --skip-invalid."""
        return int(self.stats.get("skipped", 0)) + int(self.stats.get("rejected", 0))


def build_dataset(cfg: DataConfig, out: str | Path | None = None, *, workers: int | None = None,
                  overwrite: bool = False, skip_invalid: bool = False) -> BuildResult:
    """Build the dataset of ``cfg`` into ``out`` (default ``cfg.out`` or ``data/<name>``; a local folder or an
    ``s3://`` / ``gs://`` prefix) on Ray Data, with ``workers`` tasks per stage (default: the cluster's CPUs).

    The build holds ``out``'s lock (pipeline.core.locks) from before its first look at ``out`` to the end: a second
    build of the same ``out`` fails at once, naming the first. Nothing is built when ``out`` already holds this dataset;
    ``DatasetExistsError`` when it holds something else (``check_existing``). ``skip_invalid`` drops invalid
    imported rows or tasks instead of raising.
    """
    t0 = time.perf_counter()
    out = storage.normalize(out if out is not None else cfg.out_dir())
    with locks.hold(out, "hrm data build") as lock:
        clean_leftovers(out)
        if check_existing(out, cfg, overwrite):
            meta = read_metadata_dict(out)
            log.info("%s already holds this dataset (fingerprint %s): nothing to do", out, meta["fingerprint"])
            return BuildResult(_result_path(out), False, meta["counts"], meta["groups"], time.perf_counter() - t0,
                               meta["fingerprint"], meta.get("stats", {}))
        start = Publish(lock=lock, before=metadata_digest(out))
        workers = _start_ray(workers)
        builder = make_builder(cfg, skip_invalid)
        originals = make_originals(builder, cfg, skip_invalid, workers)
        splits = builder.split(originals)
        jobs = plan_parts(builder.jobs(splits))
        meta = write_dataset(out, jobs, builder, cfg, skip_invalid, workers, publish=start)
    dt = time.perf_counter() - t0
    counts, groups = meta["counts"], meta["groups"]
    log.info("built %s: %d train / %d test rows (%d / %d originals) in %.1f s", out, counts["train"],
             counts["test"], groups["train"], groups["test"], dt)
    return BuildResult(_result_path(out), True, counts, groups, dt, meta["fingerprint"], meta.get("stats", {}))


def plan_parts(jobs: list[Job]) -> list[Job]:
    """``jobs`` (in order within each split) with ``example_start``: the rows of the split's earlier jobs."""
    counts = {s: 0 for s in SPLITS}
    for job in jobs:
        job["example_start"] = counts[job["split"]]
        counts[job["split"]] += job["rows"]
    return jobs


def _start_ray(workers: int | None) -> int:
    """Join or start Ray (``pipeline.core.ray_start.init_ray``); ``workers``, or the cluster's CPU count."""
    from pipeline.core.ray_start import init_ray

    init_ray()
    import ray

    return int(workers or max(1, int(ray.cluster_resources().get("CPU", 1))))


def _result_path(out: str) -> str | Path:
    return out if storage.is_remote(out) else Path(out)


# ------------------------------------------------------------------------------------------------ what is there
def check_existing(out: str | Path, cfg: DataConfig, overwrite: bool) -> bool:
    """True when ``out`` already holds this dataset; raises ``DatasetExistsError`` when it holds something else.

    ``overwrite`` allows replacing a different dataset of ours (a readable metadata.json), never an unrelated file
    or folder, a folder without a readable metadata.json, nor a dataset folder that also holds files no build wrote
    (``_replaceable``). On an object store, a prefix holding only parts of builds that died (no metadata.json)
    counts as empty.
    """
    out = storage.normalize(out)
    if not storage.exists(out):
        return False
    if not storage.is_dir(out):
        raise DatasetExistsError(f"{out} exists and is not a directory")
    names = storage.listdir(out)
    if not names or (storage.is_remote(out) and all(n.startswith(PARTS_PREFIX) for n in names)):
        return False
    if not _looks_like_dataset(names):
        raise DatasetExistsError(f"{out} is a non-empty folder that is not a dataset; choose another --out")
    try:
        meta = read_metadata_dict(out)
    except (FileNotFoundError, ValueError) as e:
        raise DatasetExistsError(f"{out} exists and is not a complete dataset of ours ({e}); --overwrite replaces "
                                 "only such a dataset: look at what is in it, then remove it or choose another "
                                 "--out") from None
    if overwrite:
        return _replaceable(out, meta)
    if meta.get("fingerprint") == fingerprint(cfg):
        return True
    diff = _differences(meta.get("identity", {}), json.loads(json.dumps(identity(cfg), default=list)))
    raise DatasetExistsError(f"{out} holds a different dataset (fingerprint {meta.get('fingerprint')}; "
                             f"{'; '.join(diff[:6]) or 'different settings'}): choose another --out or pass "
                             f"--overwrite")


def _replaceable(out: str, meta: dict[str, Any] | None) -> bool:
    """False (build over it) when ``out`` holds only a dataset's own files; ``DatasetExistsError`` naming the
    others when it holds files a build did not write (``--overwrite`` would delete them)."""
    foreign = foreign_files(out, meta)
    if foreign:
        raise DatasetExistsError(f"{out} holds files no dataset build wrote ({shown(foreign)}): --overwrite replaces "
                                 "only a dataset's own files; move them away or choose another --out")
    return False


def _looks_like_dataset(names: list[str]) -> bool:
    """A location this job may replace: it has a metadata.json or holds nothing but dataset entries."""
    return METADATA in names or all(n in (*SPLITS, METADATA) or n.startswith(PARTS_PREFIX) for n in names)


def _differences(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """``key: value there, value asked`` for each flattened key where two identities differ."""
    a, b = flatten(theirs), flatten(ours)
    return [f"{key}: {a.get(key)!r} there, {b.get(key)!r} asked" for key in sorted(set(a) | set(b))
            if a.get(key) != b.get(key)]


__all__ = ["build_dataset", "BuildResult", "DatasetExistsError", "make_builder", "check_existing", "plan_parts",
           "METADATA"]
