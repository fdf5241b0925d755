"""The Ray Data job behind ``hrm data build``: originals → split → augment → Parquet, written atomically.

Layout of ``<out>``: ``train/part-NNNNN.parquet``, ``test/part-NNNNN.parquet`` (zstd; columns ``inputs``,
``labels`` binary of ``seq_len`` uint8 tokens, ``puzzle_id`` int32, ``group_id`` int64, ``example_id`` int64) and
``metadata.json``. Everything is built in ``<out>.tmp-<random>``, metadata.json is written last, then the folder is
renamed to ``<out>``; on any failure the temp folder is deleted. The bytes depend on the config and seed only: work
is cut into fixed chunks and jobs by the data, and each job writes its own part.
"""

from __future__ import annotations

import functools
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
from pipeline.data.config import DataConfig, config_dict, fingerprint, identity
from pipeline.data.meta import METADATA, code_version, read_metadata_dict, write_metadata
from pipeline.data.stages import part_name, run_stage, write_part

log = logging.getLogger(__name__)


class DatasetExistsError(ValueError):
    """``<out>`` holds something other than the dataset asked for."""


@dataclass
class BuildResult:
    path: Path
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


# Worker entry points: a fresh builder from the config (the driver's builder may hold large plans).
def _stage1(cfg: DataConfig, skip_invalid: bool, item: dict[str, Any]) -> dict[str, Any]:
    return make_builder(cfg, skip_invalid).run_item(item)


def _stage2(cfg: DataConfig, skip_invalid: bool, job: dict[str, Any]) -> dict[str, Any]:
    inputs, labels, puzzle_id, group_id = make_builder(cfg, skip_invalid).run_job(job)
    if len(inputs) != job["rows"]:
        raise RuntimeError(f"{job['path']}: {len(inputs)} rows, planned {job['rows']}")
    size = write_part(Path(job["path"]), inputs, labels, puzzle_id, group_id, job["example_start"])
    return {"split": job["split"], "rows": len(inputs), "bytes": size}


def _differences(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    a, b = flatten(theirs), flatten(ours)
    return [f"{key}: {a.get(key)!r} there, {b.get(key)!r} asked" for key in sorted(set(a) | set(b))
            if a.get(key) != b.get(key)]


def _looks_like_dataset(path: Path) -> bool:
    """A folder this job may replace: it has a metadata.json or holds nothing but dataset entries."""
    return (path / METADATA).exists() or {p.name for p in path.iterdir()} <= {"train", "test", METADATA}


def check_existing(out: Path, cfg: DataConfig, overwrite: bool) -> bool:
    """True when ``out`` already holds this dataset; raises when it holds something else.

    ``overwrite`` allows replacing a different (or incomplete) dataset, never an unrelated file or folder.
    """
    if not out.exists():
        return False
    if not out.is_dir():
        raise DatasetExistsError(f"{out} exists and is not a directory")
    if not any(out.iterdir()):
        return False
    if not _looks_like_dataset(out):
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


def build_dataset(cfg: DataConfig, out: str | Path | None = None, *, workers: int | None = None,
                  overwrite: bool = False, skip_invalid: bool = False) -> BuildResult:
    """Build the dataset of ``cfg`` into ``out`` (default ``cfg.out`` or ``data/<name>``) on Ray Data."""
    t0 = time.perf_counter()
    out = (Path(out) if out is not None else cfg.out_dir()).absolute()  # workers may run in another cwd
    fp = fingerprint(cfg)
    if check_existing(out, cfg, overwrite):
        meta = read_metadata_dict(out)
        log.info("%s already holds this dataset (fingerprint %s): nothing to do", out, fp)
        return BuildResult(out, False, meta["counts"], meta["groups"], time.perf_counter() - t0, fp,
                           meta.get("stats", {}))

    from pipeline.ray_utils import init_ray

    init_ray()
    import ray

    workers = int(workers or max(1, int(ray.cluster_resources().get("CPU", 1))))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        builder = make_builder(cfg, skip_invalid)
        items = builder.prepare(tmp / "_staging")
        summaries: list[Any] = []
        plan: Any = ("more", items)
        while isinstance(plan, tuple):
            summaries += run_stage(f"{cfg.task} originals", plan[1],
                                   functools.partial(_stage1, cfg, skip_invalid), workers)
            plan = builder.plan(summaries)
        counts, parts = {"train": 0, "test": 0}, {"train": 0, "test": 0}
        for job in plan:
            split = job["split"]
            job["path"] = str(tmp / split / part_name(parts[split]))
            job["example_start"] = counts[split]
            counts[split] += job["rows"]
            parts[split] += 1
        for split in ("train", "test"):
            (tmp / split).mkdir(exist_ok=True)
        log.info("writing %d train and %d test rows in %d parts", counts["train"], counts["test"], len(plan))
        results = run_stage(f"{cfg.task} parquet", plan, functools.partial(_stage2, cfg, skip_invalid), workers)
        written = {s: sum(r["rows"] for r in results if r["split"] == s) for s in counts}
        if written != counts:
            raise RuntimeError(f"wrote {written} rows, planned {counts}")
        shutil.rmtree(tmp / "_staging")
        extra = builder.metadata()
        meta = {
            "task": cfg.task,
            "task_args": builder.task_args(),
            "vocab_size": builder.task.vocab_size,
            "seq_len": builder.task.seq_len,
            "num_puzzle_identifiers": extra.pop("num_puzzle_identifiers"),
            "counts": counts,
            "groups": extra.pop("groups"),
            "parts": parts,
            "bytes": sum(r["bytes"] for r in results),
            "seed": cfg.seed,
            "fingerprint": fp,
            "identity": identity(cfg),
            "config": config_dict(cfg),
            "code_version": code_version(),
            **extra,
        }
        write_metadata(tmp, meta)
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    dt = time.perf_counter() - t0
    log.info("built %s: %d train / %d test rows (%d / %d originals) in %.1f s", out, counts["train"],
             counts["test"], meta["groups"]["train"], meta["groups"]["test"], dt)
    return BuildResult(out, True, counts, meta["groups"], dt, fp, meta.get("stats", {}))


def _install(tmp: Path, out: Path) -> None:
    """Rename the finished temp folder to ``out``, replacing an old one only after the new one is complete."""
    old = None
    if out.exists():
        old = out.with_name(f"{out.name}.old-{secrets.token_hex(4)}")
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["build_dataset", "BuildResult", "DatasetExistsError", "make_builder", "check_existing", "METADATA"]
