"""ARC test-time scoring: map each variant's prediction back, vote across variants, pass@K.

A task counts as solved when every one of its test outputs is among the top ``k`` voted grids (``k = 2`` is the
ARC rule). Votes rank first; ties are broken by the mean halting confidence (a ``q_halt`` logit or its sigmoid --
either works, as long as one is used throughout), then by first appearance: ``hrm.vote.vote``, the one vote every task
shares (re-exported here with ``Ranked``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from hrm.tasks.arc import TestRef, crop, invert
from hrm.tasks.arc_sources import Tasks
from hrm.vote import Ranked, vote  # noqa: F401 (re-exported)

Candidates = dict[tuple[str, int], list[tuple["np.ndarray | None", float]]]


class PassAtK(NamedTuple):
    score: float  # fraction of tasks with every test output in the top k
    test_score: float  # fraction of test outputs in the top k
    n_tasks: int
    solved: list[str]


def collect(refs: Sequence[TestRef], preds: np.ndarray, confidence: np.ndarray) -> Candidates:
    """Candidates per (task id, test index): each prediction cropped (None if malformed) and mapped back."""
    preds, confidence = np.asarray(preds), np.asarray(confidence, np.float64).ravel()
    if len(refs) != len(preds) or len(refs) != len(confidence):
        raise ValueError(f"{len(refs)} refs, {len(preds)} predictions, {len(confidence)} confidences")
    out: Candidates = defaultdict(list)
    for ref, tokens, q in zip(refs, preds, confidence):
        grid = crop(tokens)
        out[(ref.task_id, ref.test_index)].append((None if grid is None else invert(grid, ref.transform), float(q)))
    return dict(out)


def answers_of(tasks: Tasks) -> dict[str, list[np.ndarray]]:
    """Test outputs per task, for tasks whose outputs are all known."""
    return {
        tid: [out for _, out in task["test"]]
        for tid, task in tasks.items()
        if task["test"] and all(out is not None for _, out in task["test"])
    }


def pass_at_k(candidates: Mapping[tuple[str, int], Sequence], answers: Mapping[str, Sequence[np.ndarray]], k: int = 2):
    """``PassAtK`` over the tasks of ``answers``; a test output without candidates counts as missed."""
    solved, n_tests, n_hits = [], 0, 0
    for tid, outs in answers.items():
        hits = 0
        for i, answer in enumerate(outs):
            top = vote(candidates.get((tid, i), ()))[:k]
            hits += any(r.grid.shape == answer.shape and np.array_equal(r.grid, answer) for r in top)
        n_tests += len(outs)
        n_hits += hits
        if hits == len(outs):
            solved.append(tid)
    n = len(answers)
    return PassAtK(len(solved) / n if n else 0.0, n_hits / n_tests if n_tests else 0.0, n, solved)
