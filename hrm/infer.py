"""ACT inference: the one loop that runs a trained model's segments on a batch of puzzles.

Every caller that wants answers uses it (solving, evaluation, the reasoning notebook):
- ``max_steps`` segments at the most (default the model's M_max; a larger value runs past what it was trained with:
  inference-time depth);
- ``adaptive``: each row's answer is taken where the model first wants to halt (``HRM.wants_halt``), else at the last
  segment; the batch stops early once every row has halted;
- ``keep_steps``: also return every segment's predictions and Q-values (S, B, L) / (S, B), for curves; without it
  nothing of size S·B·L is kept;
- ``deadline`` (a ``time.monotonic()`` reading): no segment starts after it (a ``TimeoutError`` instead), so a caller
  that has given up on the answers does not keep computing them.
Rows never restart on a new example: the carry's ``halted`` flags are cleared after each segment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from hrm.model import HRM, Batch


@dataclass
class Answers:
    preds: torch.Tensor  # (B, L) each row's answer
    steps: torch.Tensor  # (B,) segments run for that answer
    q_halt: torch.Tensor  # (B,) the halting logit with that answer: sigmoid(q_halt) is the model's confidence
    halt_step: torch.Tensor  # (B,) first segment at which the model wants to halt (max_steps if never)
    per_step: dict[str, torch.Tensor] | None = None  # keep_steps: preds (S, B, L), q_halt, q_continue (S, B)

    @property
    def confidence(self) -> torch.Tensor:  # (B,)
        return torch.sigmoid(self.q_halt.float())


@torch.no_grad()
def infer(model: HRM, batch: Batch, *, max_steps: int | None = None, adaptive: bool = False,
          keep_steps: bool = False, deadline: float | None = None) -> Answers:
    """Run up to ``max_steps`` ACT segments of ``model`` (in eval mode) on ``batch`` (inputs, puzzle_ids (B, L)/(B,);
    labels are not read). Returns each row's answer, the segment it came from, its q_halt and the model's halting
    step; with ``keep_steps`` every segment's outputs. Past ``deadline`` (time.monotonic), a TimeoutError before the
    next segment."""
    M = model.config.halt_max_steps if max_steps is None else int(max_steps)
    if M < 1:
        raise ValueError(f"max_steps must be >= 1, got {M}")
    was_training = model.training
    model.eval()
    try:
        return _run(model, batch, M, adaptive, keep_steps, deadline)
    finally:
        model.train(was_training)


def _run(model: HRM, batch: Batch, M: int, adaptive: bool, keep_steps: bool, deadline: float | None) -> Answers:
    B, L = batch["inputs"].shape
    device = batch["inputs"].device
    preds = torch.zeros(B, L, dtype=torch.long, device=device)
    steps = torch.zeros(B, dtype=torch.long, device=device)
    q_at = torch.zeros(B, device=device)
    halt_step = torch.full((B,), M, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    wanted = torch.zeros(B, dtype=torch.bool, device=device)
    kept: dict[str, list[torch.Tensor]] = {"preds": [], "q_halt": [], "q_continue": []}
    carry = model.initial_carry(batch)
    for step in range(1, M + 1):
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"past the deadline after {step - 1} of {M} segments")
        carry, out = model(carry, batch)
        carry.halted = torch.zeros_like(carry.halted)  # every row stays on its own puzzle
        wants = model.wants_halt(out["q_halt"], out["q_continue"])
        halt_step = torch.where(wants & ~wanted, torch.full_like(halt_step, step), halt_step)
        wanted |= wants
        take = ~done & (wants if adaptive else torch.zeros_like(done))
        if step == M:
            take = ~done
        guess = out["logits"].argmax(-1)  # (B, L)
        preds = torch.where(take[:, None], guess, preds)
        steps = torch.where(take, torch.full_like(steps, step), steps)
        q_at = torch.where(take, out["q_halt"].float(), q_at)
        done |= take
        if keep_steps:
            kept["preds"].append(guess)
            kept["q_halt"].append(out["q_halt"])
            kept["q_continue"].append(out["q_continue"])
        elif bool(done.all()):
            break  # (with keep_steps every segment runs, so the curves have all M points)
    per_step = {k: torch.stack(v) for k, v in kept.items()} if keep_steps else None
    return Answers(preds=preds, steps=steps, q_halt=q_at, halt_step=halt_step, per_step=per_step)
