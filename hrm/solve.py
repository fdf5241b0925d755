"""Solving new puzzles with a trained model: parse → run the ACT segments → render."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hrm.model import HRM
from hrm.tasks.base import Task


@dataclass
class Solution:
    solution: str  # rendered by the task
    tokens: np.ndarray  # (L,)
    steps: int  # segments used: where the model halted (``HRM.wants_halt``), or M_max
    confidence: float  # sigmoid(q_halt) at that step: the model's belief that its answer is right


@torch.no_grad()
def solve(model: HRM, task: Task, puzzles: list[str | np.ndarray], *, adaptive: bool = True,
          puzzle_id: int = 0) -> list[Solution]:
    """Solve puzzles given as text (or as input token arrays). ``adaptive``: stop each row where it halts."""
    if not puzzles:
        return []
    inputs = np.stack([task.parse(p) if isinstance(p, str) else np.asarray(p, dtype=np.uint8) for p in puzzles])
    device = model.h_init.device
    batch = {"inputs": torch.as_tensor(inputs, dtype=torch.long, device=device),
             "labels": torch.zeros(inputs.shape, dtype=torch.long, device=device),
             "puzzle_ids": torch.full((len(inputs),), puzzle_id, dtype=torch.long, device=device)}
    was_training = model.training
    model.eval()
    carry = model.initial_carry(batch)
    B, M = len(inputs), model.config.halt_max_steps
    final = torch.zeros(inputs.shape, dtype=torch.long, device=device)
    steps = torch.zeros(B, dtype=torch.long, device=device)
    confidence = torch.zeros(B, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for step in range(1, M + 1):
        carry, out = model(carry, batch)
        carry.halted = torch.zeros_like(carry.halted)  # keep every row on its own puzzle
        stop = ~done & (model.wants_halt(out["q_halt"], out["q_continue"]) if adaptive else torch.zeros_like(done))
        if step == M:
            stop = ~done
        final[stop] = out["logits"].argmax(-1)[stop]
        steps[stop] = step
        confidence[stop] = torch.sigmoid(out["q_halt"][stop]).float()
        done |= stop
        if bool(done.all()):
            break
    model.train(was_training)
    tokens = final.cpu().numpy().astype(np.uint8)
    return [Solution(solution=task.render(t), tokens=t, steps=int(s), confidence=float(c))
            for t, s, c in zip(tokens, steps.tolist(), confidence.tolist())]
