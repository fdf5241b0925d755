"""The Ray Data job behind ``hrm data build``: originals → split → augment → Parquet, published atomically.

Stages (named in the Ray dashboard): ``<task> originals`` (``from_items(chunks) → map_batches(make_originals)``,
rounds until de-duplication leaves enough), then per split ``<task> <split>``
(``from_items(jobs) → map_batches(augment_and_encode) → write_parquet``). Columns ``inputs``, ``labels`` (binary of
``seq_len`` uint8 tokens), ``puzzle_id`` int32, ``group_id`` int64, ``example_id`` int64; zstd. The rows and their
``example_id`` depend on the config and seed only (fixed chunks and jobs, per-chunk / per-original seeds);
metadata.json lists the parts in ``example_id`` order, and readers read exactly those.

Publishing: on a local disk everything is built in ``<out>.tmp-<random>`` and renamed to ``<out>`` after
metadata.json is written. On an object store (``s3://``, ``gs://``: no rename) the parts go under
``<out>/parts-<random>/`` and metadata.json, naming them, is written last in one PUT; parts of older builds are
deleted after that. A location without metadata.json is not a dataset, so a build that dies leaves nothing readers
accept, and an overwrite that dies leaves the previous dataset whole.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrm.config import flatten
from pipeline import storage
from pipeline.data.config import DataConfig, config_dict, fingerprint, identity
from pipeline.data.meta import METADATA, SPLITS, code_version, read_metadata_dict, write_metadata
from pipeline.data.stages import index_parts, run_originals, write_split

log = logging.getLogger(__name__)


class DatasetExistsError(ValueError):
    """``<out>`` holds something other than the dataset asked for."""


@dataclass
class BuildResult:
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


def make_builder(cfg: DataConfig, skip_invalid: bool = False):
    if cfg.task == "sudoku":
        from pipeline.data.build_sudoku import SudokuBuilder

        return SudokuBuilder(cfg, skip_invalid)
    if cfg.task == "maze":
        from pipeline.data.build_maze import MazeBuilder

        return MazeBuilder(cfg, skip_invalid)
    if cfg.task == "arc":
        from pipeline.data.build_arc import ArcBuilder

        return ArcBuilder(cfg, skip_invalid)
    raise ValueError(f"unknown task {cfg.task!r}")


def _differences(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    a, b = flatten(theirs), flatten(ours)
    return [f"{key}: {a.get(key)!r} there, {b.get(key)!r} asked" for key in sorted(set(a) | set(b))
            if a.get(key) != b.get(key)]


PARTS_PREFIX = "parts-"  # object stores: <out>/parts-<random>/<split>/part-….parquet


def _looks_like_dataset(names: list[str]) -> bool:
    """A location this job may replace: it has a metadata.json or holds nothing but dataset entries."""
    return METADATA in names or all(n in (*SPLITS, METADATA) or n.startswith(PARTS_PREFIX) for n in names)


def check_existing(out: str | Path, cfg: DataConfig, overwrite: bool) -> bool:
    """True when ``out`` already holds this dataset; raises when it holds something else.

    ``overwrite`` allows replacing a different (or incomplete) dataset, never an unrelated file or folder. On an
    object store, a prefix holding only parts of builds that died (no metadata.json) counts as empty.
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
        if overwrite:
            return False
        raise DatasetExistsError(f"{out} exists and is not a complete dataset ({e}); "
                                 f"remove it or pass --overwrite") from None
    if meta.get("fingerprint") == fingerprint(cfg) and not overwrite:
        return True
    if overwrite:
        return False
    diff = _differences(meta.get("identity", {}), json.loads(json.dumps(identity(cfg), default=list)))
    raise DatasetExistsError(f"{out} holds a different dataset (fingerprint {meta.get('fingerprint')}; "
                             f"{'; '.join(diff[:6]) or 'different settings'}): choose another --out or pass "
                             f"--overwrite")


def _plan(cfg: DataConfig, builder, skip_invalid: bool, workers: int) -> list[dict[str, Any]]:
    """Stage 1 rounds until the builder has its originals; the stage-2 jobs with their ``example_start``."""
    summaries: list[Any] = []
    plan: Any = ("more", builder.prepare())
    while isinstance(plan, tuple):
        summaries += run_originals(f"{cfg.task} originals", plan[1], cfg, skip_invalid, workers)
        plan = builder.plan(summaries)
    counts = {s: 0 for s in SPLITS}
    for job in plan:
        job["example_start"] = counts[job["split"]]
        counts[job["split"]] += job["rows"]
    return plan


def build_dataset(cfg: DataConfig, out: str | Path | None = None, *, workers: int | None = None,
                  overwrite: bool = False, skip_invalid: bool = False) -> BuildResult:
    """Build the dataset of ``cfg`` into ``out`` (default ``cfg.out`` or ``data/<name>``; a local folder or an
    ``s3://`` / ``gs://`` prefix) on Ray Data."""
    t0 = time.perf_counter()
    out = storage.normalize(out if out is not None else cfg.out_dir())
    remote = storage.is_remote(out)
    fp = fingerprint(cfg)
    if check_existing(out, cfg, overwrite):
        meta = read_metadata_dict(out)
        log.info("%s already holds this dataset (fingerprint %s): nothing to do", out, fp)
        return BuildResult(_result_path(out), False, meta["counts"], meta["groups"], time.perf_counter() - t0, fp,
                           meta.get("stats", {}))

    from pipeline.ray_utils import init_ray

    init_ray()
    import ray

    workers = int(workers or max(1, int(ray.cluster_resources().get("CPU", 1))))
    token = secrets.token_hex(4)
    if remote:
        prefix = f"{PARTS_PREFIX}{token}"  # parts' location relative to the dataset
        work, root = storage.join(out, prefix), out
    else:
        prefix = ""
        work = root = f"{out}.tmp-{token}"
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(work).mkdir()
    try:
        builder = make_builder(cfg, skip_invalid)
        jobs = _plan(cfg, builder, skip_invalid, workers)
        counts = {s: sum(j["rows"] for j in jobs if j["split"] == s) for s in SPLITS}
        log.info("writing %d train and %d test rows in %d parts", counts["train"], counts["test"], len(jobs))
        files = {}
        for split in SPLITS:
            folder = storage.join(work, split)
            storage.make_dirs(folder)
            write_split(f"{cfg.task} {split}", [j for j in jobs if j["split"] == split], cfg, skip_invalid,
                        workers, folder)
            files[split] = index_parts(folder, "/".join(p for p in (prefix, split) if p), counts[split])
        extra = builder.metadata()
        meta = {
            "task": cfg.task,
            "task_args": builder.task_args(),
            "vocab_size": builder.task.vocab_size,
            "seq_len": builder.task.seq_len,
            "num_puzzle_identifiers": extra.pop("num_puzzle_identifiers"),
            "counts": counts,
            "groups": extra.pop("groups"),
            "parts": {s: len(files[s]) for s in SPLITS},
            "bytes": _size(root, files),
            "seed": cfg.seed,
            "fingerprint": fp,
            "identity": identity(cfg),
            "config": config_dict(cfg),
            "code_version": code_version(),
            **extra,
            "files": files,
        }
        write_metadata(root, meta)  # the commit point on an object store
        if not remote:
            _install(work, out)
    except BaseException:
        _discard(work)
        raise
    if remote:
        _drop_old_parts(out, keep=prefix)
    dt = time.perf_counter() - t0
    log.info("built %s: %d train / %d test rows (%d / %d originals) in %.1f s", out, counts["train"],
             counts["test"], meta["groups"]["train"], meta["groups"]["test"], dt)
    return BuildResult(_result_path(out), True, counts, meta["groups"], dt, fp, meta.get("stats", {}))


def _result_path(out: str) -> str | Path:
    return out if storage.is_remote(out) else Path(out)


def _size(root: str, files: dict[str, list[dict[str, Any]]]) -> int:
    fs, base = storage.filesystem(root)
    paths = [f"{base}/{p['path']}" for parts in files.values() for p in parts]
    return sum(info.size for info in fs.get_file_info(paths)) if paths else 0


def _discard(work: str) -> None:
    try:
        storage.delete(work)
    except OSError as e:  # the build's own error matters more
        log.warning("could not delete %s: %s", work, e)


def _drop_old_parts(out: str, keep: str) -> None:
    """After a publish on an object store: delete parts of earlier builds (and of builds that died)."""
    for name in storage.listdir(out):
        if name.startswith(PARTS_PREFIX) and name != keep:
            _discard(storage.join(out, name))


def _install(tmp: str, out: str) -> None:
    """Rename the finished temp folder to ``out``, replacing an old one only after the new one is complete."""
    old = None
    if os.path.exists(out):
        old = f"{out}.old-{secrets.token_hex(4)}"
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["build_dataset", "BuildResult", "DatasetExistsError", "make_builder", "check_existing", "METADATA"]
