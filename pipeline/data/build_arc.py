"""ARC: sources → ``split_tasks`` (the paper's recipe, leak-checked) → variants per task → Parquet.

Stage 1 (Ray Data, ``make_chunk``) computes each task's variants (``augment_task``: dihedral × colour permutation,
de-duplicated, variant 0 the identity) and sends back only their transforms. The driver gives every (task, variant)
a puzzle id (1.., 0 is the blank identifier), shared by the task's training rows (its demonstrations) and test rows
(its test pairs), and stores names and transforms in metadata.json so predictions can be mapped back. Stage 2
(``encode_job``) rebuilds each variant from its transform and encodes it. ``group_id`` is the task's index (sorted
task ids); test rows of one (task, variant) come in test-pair order (``pipeline.data.loader.arc_test_refs``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from hrm.tasks.arc import (
    ArcTask,
    Transform,
    Variant,
    augment_task,
    encode_test,
    encode_train,
    transform_task,
    variant_key,
)
from hrm.tasks.arc_sources import load_source, parse_task, split_tasks
from pipeline.data.builder import Builder, Chunk, Job, Summary, derive_seed
from pipeline.data.meta import BLANK_IDENTIFIER

log = logging.getLogger(__name__)
_VARIANT_SALT, _TRANSLATE_SALT = 301, 302


def _task_hash(tid: str) -> int:
    """A stable 56-bit number for a task id (seeds its variants)."""
    return int.from_bytes(hashlib.blake2b(tid.encode(), digest_size=7).digest(), "little")


def load_source_lenient(spec: str) -> tuple[dict, int]:
    """Like ``load_source`` but skips (and counts) invalid tasks of directories and Kaggle files."""
    path = Path(spec)
    if not (path.is_dir() or path.is_file()):
        return load_source(spec), 0
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    tasks, skipped = {}, 0
    for file in files:
        try:
            raw = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            log.warning("skipping %s: invalid JSON (%s)", file, e)
            skipped += 1
            continue
        if isinstance(raw, dict) and isinstance(raw.get("train"), list):
            entries = [(file.stem, raw, None)]
        else:
            sibling = file.with_name(file.name.replace("challenges", "solutions"))
            sol = json.loads(sibling.read_text()) if sibling != file and sibling.is_file() else None
            entries = [(tid, t, None if sol is None else sol.get(tid)) for tid, t in (raw or {}).items()]
        for tid, raw_task, outputs in entries:
            try:
                if tid in tasks:
                    raise ValueError(f"{file}: duplicate task id {tid}")
                tasks[tid] = parse_task(raw_task, f"{file} task {tid}", outputs)
            except ValueError as e:
                log.warning("skipping: %s", e)
                skipped += 1
    return tasks, skipped


class ArcBuilder(Builder):
    """ARC tasks of ``cfg.arc``: training sources give the train split, evaluation sources the test split."""

    def __init__(self, cfg, skip_invalid: bool = False):
        self.cfg, self.sec, self.seed, self.skip_invalid = cfg, cfg.arc, cfg.seed, skip_invalid
        self.task = ArcTask()
        self.stats: dict[str, Any] = {"skipped": 0}
        self.task_ids: list[str] = []  # sorted training task ids: a task's index is its group id
        self.groups: dict[str, int] = {}
        self.identifiers: list[str] = [BLANK_IDENTIFIER]  # per puzzle id, "task|variant" (set by ``jobs``)
        self.transforms: list[list[Any] | None] = [None]  # per puzzle id, [dihedral, colour permutation]

    def task_args(self) -> dict:
        return {}

    def _load(self, spec: str) -> dict:
        if self.skip_invalid:
            tasks, skipped = load_source_lenient(spec)
            self.stats["skipped"] += skipped
        else:
            tasks = load_source(spec)
        if self.sec.max_tasks is not None:
            tasks = {tid: tasks[tid] for tid in sorted(tasks)[: self.sec.max_tasks]}
        self.stats.setdefault("sources", {})[spec] = len(tasks)
        return tasks

    def first_chunks(self) -> list[Chunk]:
        """Load the sources and split them (``split_tasks``: the split of ARC); chunks of ``tasks_per_chunk``
        training tasks, each carrying its tasks' train and test views."""
        train, test = split_tasks({s: self._load(s) for s in self.sec.train_sources},
                                  {s: self._load(s) for s in self.sec.eval_sources})
        self.task_ids = sorted(train)
        self.groups = {"train": len(train), "test": len(test)}
        chunks = []
        per = self.sec.tasks_per_chunk
        for k, lo in enumerate(range(0, len(self.task_ids), per)):
            tids = self.task_ids[lo:lo + per]
            views = pickle.dumps({t: (train[t], test.get(t)) for t in tids}, protocol=5)
            chunks.append({"chunk": k, "views": views, "first_group": lo})
        log.info("arc: %d training tasks, %d evaluation tasks, %d chunks", len(train), len(test), len(chunks))
        return chunks

    def make_chunk(self, chunk: Chunk) -> Summary:
        """The variants of each task of the chunk (``augment_task``), sent back as transforms only."""
        views = pickle.loads(chunk["views"])
        tasks = []
        for tid, (train_view, test_view) in views.items():
            variants = augment_task(train_view, self.sec.variants, seed=derive_seed(self.seed, _VARIANT_SALT,
                                                                                     _task_hash(tid)))
            tasks.append({"tid": tid, "transforms": [v.transform for v in variants],
                          "n_train": len(train_view["train"]),
                          "n_test": 0 if test_view is None else len(test_view["test"])})
        return {**chunk, "tasks": tasks}

    def originals(self, summaries: list[Summary]) -> list[Summary]:
        """The summaries as they are: tasks were checked while loading, and variants de-duplicated per task."""
        return summaries

    def split(self, originals: list[Summary]) -> list[Summary]:
        """Nothing left to do: ``first_chunks`` split the tasks by source, and every chunk feeds both splits."""
        return originals

    def jobs(self, splits: list[Summary]) -> list[Job]:
        """Per chunk, one train and one test job; every (task, variant) gets its puzzle id, in chunk order."""
        identifiers, transforms = [BLANK_IDENTIFIER], [None]
        jobs = []
        n_test_variants = self.sec.test_variants or self.sec.variants
        for s in splits:
            entries = []
            rows = {"train": 0, "test": 0}
            for j, t in enumerate(s["tasks"]):
                base = len(identifiers)
                for v, tf in enumerate(t["transforms"]):
                    identifiers.append(variant_key(t["tid"], v))
                    transforms.append([tf.dihedral, "".join(map(str, tf.perm))])
                n_var = len(t["transforms"])
                rows["train"] += n_var * t["n_train"]
                rows["test"] += min(n_var, n_test_variants) * t["n_test"]
                entries.append((t["tid"], s["first_group"] + j, base, t["transforms"]))
            for split in ("train", "test"):
                if rows[split]:
                    jobs.append({"split": split, "rows": rows[split], "views": s["views"], "tasks": entries})
        self.identifiers, self.transforms = identifiers, transforms
        self.stats["variants_per_task"] = round((len(identifiers) - 1) / max(len(self.task_ids), 1), 2)
        return jobs

    def encode_job(self, job: Job):
        """The rows of one job: each task's variants rebuilt from their transforms and encoded."""
        views = pickle.loads(job["views"])
        n_test_variants = self.sec.test_variants or self.sec.variants
        parts = []
        for tid, group, base, tfs in job["tasks"]:
            train_view, test_view = views[tid]
            if job["split"] == "train":
                variants = [Variant(i, Transform(*t), transform_task(train_view, t)) for i, t in enumerate(tfs)]
                rng = (np.random.default_rng(derive_seed(self.seed, _TRANSLATE_SALT, _task_hash(tid)))
                       if self.sec.translate else None)
                x, y, index = encode_train(variants, rng)
            else:
                if test_view is None:
                    continue
                tfs = tfs[:n_test_variants]
                variants = [Variant(i, Transform(*t), transform_task(test_view, t)) for i, t in enumerate(tfs)]
                refs, x, y = encode_test(tid, variants)
                index = np.array([r.variant for r in refs], np.int64)
            parts.append((x, y, base + index, np.full(len(x), group, np.int64)))
        inputs, labels, pid, gid = (np.concatenate([p[i] for p in parts]) for i in range(4))
        return inputs, labels, pid.astype(np.int32), gid

    def metadata(self) -> dict[str, Any]:
        """Puzzle identifiers and transforms (to map predictions back), tasks per split and stats."""
        return {"num_puzzle_identifiers": len(self.identifiers), "groups": self.groups, "stats": self.stats,
                "puzzle_identifiers": self.identifiers, "transforms": self.transforms}
