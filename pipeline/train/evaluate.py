"""Evaluation: every test example runs K ACT segments (default M_max); metrics are summed on each worker and reduced.

Reported: exact and token accuracy, q-halt accuracy, the mean step at which the model would halt, exact accuracy
after each ACT step 1..K, and the task's own scorers (e.g. Sudoku validity, maze valid-optimal path); with
``votes`` > 1 also the exact accuracy of answers voted over that many symmetries of each puzzle (hrm.vote).
``hrm eval``'s curves against votes and their plot: pipeline.evaluate.curves.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from hrm.infer import infer
from hrm.loss import IGNORE
from hrm.model import HRM
from hrm.tasks.base import Task
from pipeline.train.batches import to_torch


def predict(model: HRM, batch: dict[str, torch.Tensor], max_steps: int | None = None) -> dict[str, torch.Tensor]:
    """Run ``max_steps`` segments (default M_max) through ``hrm.infer``; per-step predictions (S, B, L), q_halt and
    q_continue (S, B)."""
    return infer(model, batch, max_steps=max_steps, keep_steps=True).per_step


def task_score_keys(task: Task, arrays: dict[str, np.ndarray]) -> list[str]:
    """The task scorer's own metrics (besides exact), named from its score of the first row's answer."""
    if not len(arrays["inputs"]):
        return []
    y0 = np.where(arrays["labels"][0] == IGNORE, 0, arrays["labels"][0])
    return [k for k in task.score(y0, y0, arrays["inputs"][0]) if k != "exact"]


ARC_PASS_AT = ("eval/pass_at_1", "eval/pass_at_2")  # ARC: voted over every variant of a task


def halting_step(wants: torch.Tensor) -> torch.Tensor:
    """The 1-based step at which a trained model would halt (its first ``wants_halt``, (S, B)), M_max if never."""
    S = wants.shape[0]
    first = torch.where(wants.any(0), wants.float().argmax(0), torch.full_like(wants[0], S - 1, dtype=torch.long))
    return first + 1


def evaluate(model: HRM, arrays: dict[str, np.ndarray], task: Task, *, batch_size: int, device,
             rank: int = 0, world: int = 1, arc_refs: list | None = None, max_steps: int | None = None,
             votes: int = 1, seed: int = 0) -> dict[str, float]:
    """Metrics over ``arrays`` (loader arrays), this worker taking rows rank::world; reduced across workers.

    ``max_steps``: segments run per example (default M_max; the ``eval/exact_accuracy_step_<s>`` keys go up to it).
    ``arc_refs`` (one ``TestRef`` per row) adds ARC's voted pass@1 / pass@2 over every variant of each task.
    ``votes`` > 1 adds ``eval/exact_accuracy_votes_<votes>``: answers voted over that many symmetries of each
    puzzle (hrm.vote, drawn from ``seed``); with 1 the metrics are those of a plain evaluation.
    """
    S = model.config.halt_max_steps if max_steps is None else int(max_steps)
    # The same keys on every worker, even one without rows, so the all-reduce lines up.
    task_keys = task_score_keys(task, arrays)
    sums: dict[str, float] = {k: 0.0 for k in ["count", "exact_accuracy", "accuracy", "q_halt_accuracy", "steps"]}
    sums.update({f"task_{k}": 0.0 for k in task_keys})
    if votes > 1:
        sums[f"exact_accuracy_votes_{votes}"] = 0.0
    step_exact = torch.zeros(S, dtype=torch.float64)
    idx = np.arange(rank, len(arrays["inputs"]), world)
    final_preds, final_q = [], []
    for start in range(0, len(idx), batch_size):
        rows = {k: v[idx[start:start + batch_size]] for k, v in arrays.items()}
        batch = to_torch(rows, device)
        out = predict(model, batch, S)
        step_exact += score_batch(model, out, batch["labels"], sums)
        preds = out["preds"][-1].cpu().numpy()
        if arc_refs is not None:
            final_preds.append(preds.astype(np.uint8))
            final_q.append(torch.sigmoid(out["q_halt"][-1]).cpu().numpy())
        label_tokens = np.where(rows["labels"] == IGNORE, 0, rows["labels"])
        for p, y, x in zip(preds, label_tokens, rows["inputs"]):
            for key, ok in task.score(p, y, x).items():
                if key != "exact":
                    sums[f"task_{key}"] += float(ok)
        if votes > 1:
            voted = vote_batch(model, task, rows, votes=votes, max_steps=S, seed=seed, batch_size=batch_size)
            sums[f"exact_accuracy_votes_{votes}"] += float(exact_rows(voted.preds, rows["labels"]).sum())
    metrics = reduce_sums(sums, step_exact, world)
    if arc_refs is not None:
        metrics.update(arc_pass_at_k(arc_refs, arrays, idx, final_preds, final_q, world))
    return metrics


def score_batch(model: HRM, out: dict[str, torch.Tensor], labels: torch.Tensor,
                sums: dict[str, float]) -> torch.Tensor:
    """Add one batch's counts (rows, exact and token accuracy and q-halt accuracy at the last step, halting step) to
    ``sums``; return its exact answers per step (S,)."""
    mask = labels != IGNORE
    correct = (out["preds"] == labels) & mask  # (S, B, L)
    exact_per_step = correct.sum(-1) == mask.sum(-1)  # (S, B)
    final_exact = exact_per_step[-1]
    sums["count"] += len(final_exact)
    sums["exact_accuracy"] += final_exact.sum().item()
    sums["accuracy"] += (correct[-1].sum(-1) / mask.sum(-1).clamp_min(1)).sum().item()
    sums["q_halt_accuracy"] += ((out["q_halt"][-1] >= 0) == final_exact).sum().item()
    sums["steps"] += halting_step(model.wants_halt(out["q_halt"], out["q_continue"])).sum().item()
    return exact_per_step.sum(-1).double().cpu()


def exact_rows(preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(B,) bool: each row's answer ``preds`` (B, L) matches ``labels`` (B, L) on every scored cell."""
    mask = labels != IGNORE
    return ((np.asarray(preds).astype(np.int64) == labels) | ~mask).all(-1)


def vote_batch(model: HRM, task: Task, rows: dict[str, np.ndarray], *, votes: int, max_steps: int | None,
               seed: int, batch_size: int | None = None):
    """hrm.vote's answers (a ``Voted``) for loader ``rows``: full depth (``max_steps`` segments), ``votes``
    symmetries each."""
    from hrm.vote import answer

    return answer(model, task, rows["inputs"].astype(np.uint8), puzzle_ids=rows["puzzle_ids"].astype(np.int64),
                  votes=votes, max_steps=max_steps, adaptive=False, seed=seed, batch_size=batch_size)


def reduce_sums(sums: dict[str, float], step_exact: torch.Tensor, world: int) -> dict[str, float]:
    """Every worker's ``sums`` (``count`` = rows) and exact answers per ACT step added up (a collective call when
    ``world`` > 1) and divided by the rows: the ``eval/*`` metrics, ``eval/exact_accuracy_step_<s>`` and
    ``eval/count`` among them."""
    keys = sorted(sums)
    vector = torch.tensor([sums[k] for k in keys] + step_exact.tolist(), dtype=torch.float64)
    if world > 1 and dist.is_initialized():
        dist.all_reduce(vector)
    totals = dict(zip(keys, vector[: len(keys)].tolist()))
    count = max(totals.pop("count", 0.0), 1.0)
    metrics = {f"eval/{k}": v / count for k, v in totals.items()}
    for s, v in enumerate(vector[len(keys):].tolist(), start=1):
        metrics[f"eval/exact_accuracy_step_{s}"] = v / count
    metrics["eval/count"] = count
    return metrics


def arc_pass_at_k(refs, arrays, idx, preds, q, world: int) -> dict[str, float]:
    """Vote over every worker's predictions (inverted per variant); the answers come from the labels."""
    from hrm.tasks.arc import crop, invert
    from hrm.tasks.arc_scoring import collect, pass_at_k

    L = arrays["inputs"].shape[1]
    mine = (idx, np.concatenate(preds) if preds else np.zeros((0, L), np.uint8),
            np.concatenate(q) if q else np.zeros(0))
    parts = [mine]
    if world > 1 and dist.is_initialized():
        parts = [None] * world
        dist.all_gather_object(parts, mine)
    rows = np.concatenate([p[0] for p in parts])
    candidates = collect([refs[i] for i in rows], np.concatenate([p[1] for p in parts]),
                         np.concatenate([p[2] for p in parts]))
    answers: dict[str, dict[int, np.ndarray]] = {}
    for ref, label in zip(refs, arrays["labels"]):
        grid = crop(np.where(label == IGNORE, 0, label).astype(np.uint8))
        if grid is not None:
            answers.setdefault(ref.task_id, {})[ref.test_index] = invert(grid, ref.transform)
    ordered = {tid: [outs[i] for i in sorted(outs)] for tid, outs in answers.items()}
    return {key: pass_at_k(candidates, ordered, k=int(key[-1])).score for key in ARC_PASS_AT}
