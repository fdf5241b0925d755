"""Solving new puzzles with a trained model: parse → run the ACT segments → render."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hrm.model import HRM
from hrm.tasks.base import Task
from hrm.vote import answer


@dataclass
class Solution:
    solution: str  # rendered by the task
    tokens: np.ndarray  # (L,)
    steps: int  # segments used: where the model halted (``HRM.wants_halt``), or the last; voted: the mean per vote
    confidence: float  # sigmoid(q_halt) of that answer (voted: the mean of its votes): the model's belief it is right
    valid: bool | None = None  # the puzzle's own rules (Task.follows_rules); None: the task cannot tell (ARC)


def solve(model: HRM, task: Task, puzzles: list[str | np.ndarray], *, adaptive: bool = True,
          puzzle_id: int = 0, max_steps: int | None = None, votes: int = 1, seed: int = 0,
          rows: int | None = None, deadline: float | None = None) -> list[Solution]:
    """Solve puzzles given as text (or as input token arrays): up to ``max_steps`` segments (default M_max);
    ``adaptive``: each answer where the model first wants to halt; ``votes`` > 1: answers voted over that many
    symmetries of each puzzle, drawn from ``seed`` (hrm.vote; 1 is plain hrm.infer); ``rows``: at most this many
    (puzzle, symmetry) rows through the model at a time (None: all); ``deadline``: as in ``hrm.infer``."""
    if not puzzles:
        return []
    inputs = np.stack([task.parse(p) if isinstance(p, str) else np.asarray(p, dtype=np.uint8) for p in puzzles])
    voted = answer(model, task, inputs, puzzle_ids=np.full(len(inputs), puzzle_id), votes=votes,
                   max_steps=max_steps, adaptive=adaptive, seed=seed, batch_size=rows, deadline=deadline)
    return [Solution(solution=task.render(t), tokens=t, steps=int(round(float(s))), confidence=float(c),
                     valid=task.follows_rules(t, x))
            for t, x, s, c in zip(voted.preds, inputs, voted.steps, voted.confidence)]
