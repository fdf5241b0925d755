"""Solving new puzzles with a trained model: parse → run the ACT segments → render."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hrm.infer import infer
from hrm.model import HRM
from hrm.tasks.base import Task


@dataclass
class Solution:
    solution: str  # rendered by the task
    tokens: np.ndarray  # (L,)
    steps: int  # segments used: where the model halted (``HRM.wants_halt``), or M_max
    confidence: float  # sigmoid(q_halt) at that step: the model's belief that its answer is right


def solve(model: HRM, task: Task, puzzles: list[str | np.ndarray], *, adaptive: bool = True,
          puzzle_id: int = 0, max_steps: int | None = None) -> list[Solution]:
    """Solve puzzles given as text (or as input token arrays): up to ``max_steps`` segments (default M_max);
    ``adaptive``: each row's answer where it first wants to halt (hrm.infer)."""
    if not puzzles:
        return []
    inputs = np.stack([task.parse(p) if isinstance(p, str) else np.asarray(p, dtype=np.uint8) for p in puzzles])
    device = model.h_init.device
    batch = {"inputs": torch.as_tensor(inputs, dtype=torch.long, device=device),
             "puzzle_ids": torch.full((len(inputs),), puzzle_id, dtype=torch.long, device=device)}
    answers = infer(model, batch, max_steps=max_steps, adaptive=adaptive)
    tokens = answers.preds.cpu().numpy().astype(np.uint8)
    return [Solution(solution=task.render(t), tokens=t, steps=int(s), confidence=float(c))
            for t, s, c in zip(tokens, answers.steps.tolist(), answers.confidence.tolist())]
