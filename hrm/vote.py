"""Symmetry voting: answer each puzzle under several of its task's transforms, map the answers back, vote.

``answer(model, task, inputs, votes=N)`` draws N transforms (``Task.symmetries``, the identity first, deterministic
for a ``seed``), runs all N·B transformed puzzles through ``hrm.infer`` as one batch (chunks of ``batch_size`` rows if
given), inverts each answer, and votes per puzzle.

The vote is per WHOLE answer, not per cell: a Sudoku or a maze path is right only as a whole, and a per-cell majority
can stitch cells of different answers into one that no vote gave and that breaks the rules (two half-paths are not a
path). Whole answers also let a task drop the ones that are not even well-formed before the vote
(``Task.valid_answer``: a maze path broken by the inverse, a Sudoku with a blank or a changed given). No rule check,
no solver: which well-formed answer is right is left to the votes, so the accuracy gained is the vote's. The vote is
the one ARC already uses: ``vote`` below, shared with ``hrm.tasks.arc_scoring`` (pass@K). Answers rank by their
number of votes, ties by the mean confidence sigmoid(q_halt) of their votes, then by first appearance (the
identity's vote comes first).

Before they are counted, the answers are put in canonical form (``Task.canonical_answer``) so that equal ones pool:
an ARC grid is re-encoded with nothing beyond its border. The winner is the identity's own answer when that is among
the winning votes (so nothing changes where the identity already agrees), else the canonical form.
When no vote is valid, the identity's answer is returned (``agreement`` 0). ``votes = 1`` runs the identity alone and
returns exactly what ``infer`` returns.

Every vote of a puzzle runs with the puzzle's own ``puzzle_ids``. (ARC's dataset variants, each with its own learned
puzzle embedding, are voted over by ``hrm.tasks.arc_scoring``; here a transformed ARC input keeps the identity's id.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from hrm.infer import infer
from hrm.tasks.arc_sources import grid_digest
from hrm.tasks.base import IDENTITY, Task

MAX_STEPS_CAP = 1024  # segments per vote
MAX_VOTES = 1024


class Ranked(NamedTuple):
    grid: np.ndarray
    votes: int
    confidence: float  # mean over the votes


@dataclass
class Voted:
    preds: np.ndarray  # (B, L) uint8: each puzzle's winning answer
    confidence: np.ndarray  # (B,) mean sigmoid(q_halt) of the winner's votes
    agreement: np.ndarray  # (B,) share of the valid votes that went to the winner (0 when none was valid)
    steps: np.ndarray  # (B,) mean segments per vote
    forward_passes: int  # segments run per puzzle, summed over its votes (mean over the batch, rounded up)


def vote(candidates: Iterable[tuple[np.ndarray | None, float]]) -> list[Ranked]:
    """Distinct grids, most votes first, ties by higher mean confidence, then first seen; None candidates dropped."""
    groups: dict[bytes, list] = {}
    for grid, q in candidates:
        if grid is None:
            continue
        g = groups.setdefault(grid_digest(grid), [grid, 0, 0.0, len(groups)])
        g[1] += 1
        g[2] += float(q)
    ordered = sorted(groups.values(), key=lambda g: (-g[1], -g[2] / g[1], g[3]))
    return [Ranked(g[0], g[1], g[2] / g[1]) for g in ordered]


def problem(task: Task | None, *, votes: int, max_steps: int | None) -> tuple[str, str] | None:
    """What is wrong with the inference settings, as (the setting's name, the message), None when they are fine:
    ``votes`` in 1..MAX_VOTES, ``max_steps`` (None: M_max) in 1..MAX_STEPS_CAP, and votes > 1 only where ``task``
    has that many symmetries. The one check behind ``answer``, ``hrm solve``/``hrm eval`` and the served model."""
    if not 1 <= votes <= MAX_VOTES:
        return "votes", f"votes must be between 1 and {MAX_VOTES}, got {votes}"
    if max_steps is not None and not 1 <= max_steps <= MAX_STEPS_CAP:
        return "max_steps", f"max_steps must be between 1 and {MAX_STEPS_CAP}, got {max_steps}"
    if votes > 1 and task is not None:
        try:
            task.symmetries(votes, np.random.default_rng(0))
        except ValueError as err:  # a task without symmetries, or fewer than ``votes`` of them
            return "votes", f"{err}: votes must be 1, got {votes}" if "no symmetries" in str(err) else str(err)
    return None


def check(votes: int, max_steps: int | None, task: Task | None = None) -> None:
    """``problem`` as a ValueError."""
    found = problem(task, votes=votes, max_steps=max_steps)
    if found is not None:
        raise ValueError(found[1])


def _device(model) -> torch.device:
    p = next(iter(model.parameters()), None)
    return torch.device("cpu") if p is None else p.device


def _run(model, inputs: np.ndarray, ids: np.ndarray, max_steps, adaptive: bool, batch_size: int | None,
         deadline: float | None = None):
    """``infer`` on every row of ``inputs`` (R, L), ``batch_size`` rows at a time: preds (R, L) uint8, steps (R,),
    confidence (R,); ``deadline`` as in ``infer``."""
    device, R = _device(model), len(inputs)
    size = R if not batch_size else int(batch_size)
    preds, steps, conf = [], [], []
    for lo in range(0, R, max(size, 1)):
        batch = {"inputs": torch.as_tensor(inputs[lo:lo + size], dtype=torch.long, device=device),
                 "puzzle_ids": torch.as_tensor(ids[lo:lo + size], dtype=torch.long, device=device)}
        a = infer(model, batch, max_steps=max_steps, adaptive=adaptive, deadline=deadline)
        preds.append(a.preds.cpu().numpy().astype(np.uint8))
        steps.append(a.steps.cpu().numpy())
        conf.append(a.confidence.cpu().numpy())
    return np.concatenate(preds), np.concatenate(steps), np.concatenate(conf)


def _pick(task: Task, back: np.ndarray, conf: np.ndarray, inputs: np.ndarray):
    """One puzzle's vote: ``back`` (N, L) answers mapped back, the identity's first, ``conf`` (N,), ``inputs`` (L,).
    Returns (answer (L,), confidence, agreement)."""
    valid = [task.valid_answer(a, inputs) for a in back]
    forms = [np.asarray(task.canonical_answer(a, inputs), np.uint8) for a in back]
    ranked = vote((g, c) for g, c, ok in zip(forms, conf, valid) if ok)
    if not ranked:
        return back[0], float(conf[0]), 0.0  # no valid vote: the identity's answer
    win = ranked[0]
    share = win.votes / sum(valid)
    if valid[0] and np.array_equal(forms[0], win.grid):
        return back[0], win.confidence, share  # the identity agrees: its own answer
    return win.grid, win.confidence, share


def answer(model, task: Task, inputs: np.ndarray, *, puzzle_ids: np.ndarray | None = None, votes: int = 1,
           max_steps: int | None = None, adaptive: bool = False, seed: int = 0,
           batch_size: int | None = None, deadline: float | None = None) -> Voted:
    """Answers to ``inputs`` (B, L) from ``model`` voted over ``votes`` symmetries of ``task`` (see the module
    docstring); ``max_steps``/``adaptive``/``deadline`` as in ``hrm.infer``; ``puzzle_ids`` (B,) default 0;
    ``batch_size`` rows (puzzle × symmetry) through the model at a time (None: all N·B at once)."""
    votes = int(votes)
    check(votes, None if max_steps is None else int(max_steps))
    inputs = np.asarray(inputs, np.uint8)
    if inputs.ndim != 2 or inputs.shape[1] != task.seq_len:
        raise ValueError(f"inputs must be (B, {task.seq_len}) tokens for {task.name}, got shape {inputs.shape}")
    B = len(inputs)
    if B == 0:
        return Voted(inputs.copy(), np.zeros(0), np.zeros(0), np.zeros(0), 0)
    ids = np.zeros(B, np.int64) if puzzle_ids is None else np.asarray(puzzle_ids, np.int64).reshape(B)
    syms = [IDENTITY] if votes == 1 else task.symmetries(votes, np.random.default_rng(seed))
    N = len(syms)
    preds, steps, conf = _run(model, np.concatenate([s.apply(inputs) for s in syms]), np.tile(ids, N), max_steps,
                              adaptive, batch_size, deadline)
    preds, steps, conf = preds.reshape(N, B, -1), steps.reshape(N, B), conf.reshape(N, B)  # (N, B, L), (N, B)
    passes = math.ceil(steps.sum() / B)
    if N == 1:  # identity only: infer's answers as they are
        ok = np.array([task.valid_answer(p, x) for p, x in zip(preds[0], inputs)], np.float64)
        return Voted(preds[0], conf[0].astype(np.float64), ok, steps[0].astype(np.float64), passes)
    back = np.stack([s.invert(p) for s, p in zip(syms, preds)])  # (N, B, L)
    picked = [_pick(task, back[:, b], conf[:, b], inputs[b]) for b in range(B)]
    return Voted(preds=np.stack([np.asarray(p, np.uint8) for p, _, _ in picked]),
                 confidence=np.array([c for _, c, _ in picked], np.float64),
                 agreement=np.array([a for _, _, a in picked], np.float64),
                 steps=steps.mean(axis=0), forward_passes=passes)
