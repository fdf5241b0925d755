"""HRM's training objective: per-token cross-entropy (stablemax or softmax) plus the halting Q-losses, and metrics.

lm = Σ_rows mean over labelled tokens of CE; q_halt = Σ BCE(q_halt, row exactly right);
q_continue = Σ BCE(q_continue, target) (lagged: over the rows that continued); total = lm + ½(q_halt + q_continue). The caller scales by 1/global_batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def stablemax(x: torch.Tensor) -> torch.Tensor:
    """s(x) = 1/(1−x) for x < 0, x + 1 otherwise.

    The unused branch is evaluated at min(x, 0): 1/(1−x) at x = 1 would be inf and poison the gradient with NaN.
    """
    return torch.where(x < 0, 1 / (1 - x.clamp(max=0)), x + 1)


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token −log(s(x_y)/Σ_j s(x_j)), in float64; 0 where the label is ignored. (B, L, V), (B, L) -> (B, L)."""
    s = stablemax(logits.double())
    logp = torch.log(s / s.sum(-1, keepdim=True))
    valid = labels != IGNORE
    picked = logp.gather(-1, torch.where(valid, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    flat = F.cross_entropy(logits.float().flatten(0, 1), labels.long().flatten(), ignore_index=IGNORE,
                           reduction="none")
    return flat.view(labels.shape)


LOSSES = {"stablemax": stablemax_cross_entropy, "softmax": softmax_cross_entropy}


def act_loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor, halted: torch.Tensor, steps: torch.Tensor,
             loss: str = "stablemax") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss (summed over rows) and summed metrics over the rows that halted (divide by ``count``)."""
    logits = outputs["logits"]
    mask = labels != IGNORE  # (B, L)
    n_labelled = mask.sum(-1)
    divisor = n_labelled.clamp_min(1).unsqueeze(-1)
    with torch.no_grad():
        correct = mask & (logits.argmax(-1) == labels)
        exact = correct.sum(-1) == n_labelled  # (B,)
        counted = halted & (n_labelled > 0)
    lm = (LOSSES[loss](logits, labels) / divisor).sum()
    q_halt = F.binary_cross_entropy_with_logits(outputs["q_halt"], exact.to(outputs["q_halt"].dtype), reduction="sum")
    losses = {"lm_loss": lm, "q_halt_loss": q_halt}
    if "target_q_continue" in outputs:  # lagged: the previous call's q_continue, only on the rows that continued
        bce = F.binary_cross_entropy_with_logits(outputs.get("lagged_q_continue", outputs["q_continue"]),
                                                 outputs["target_q_continue"], reduction="none")
        mask = outputs.get("target_mask")
        losses["q_continue_loss"] = (bce if mask is None else torch.where(mask, bce, 0)).sum()
    total = lm + 0.5 * (q_halt + losses.get("q_continue_loss", 0))
    with torch.no_grad():
        metrics = {
            "count": counted.sum(),
            "accuracy": torch.where(counted, (correct.float() / divisor).sum(-1), 0).sum(),
            "exact_accuracy": (counted & exact).sum(),
            "q_halt_accuracy": (counted & ((outputs["q_halt"] >= 0) == exact)).sum(),
            "steps": torch.where(counted, steps, 0).sum(),
            **{k: v.detach() for k, v in losses.items()},
        }
    return total, metrics
