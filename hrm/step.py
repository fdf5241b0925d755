"""One training step of HRM with deep supervision: an ACT call, the loss, backward, both optimizers.

Plain PyTorch: the caller chooses the device, wraps the model (DDP, torch.compile) and averages gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from hrm.loss import act_loss
from hrm.model import HRM, Batch, Carry
from hrm.optim import AdamAtan2, SignSGD, lr_at


@dataclass(kw_only=True)
class OptimConfig:
    lr: float = 1e-4
    lr_min_ratio: float = 1.0
    lr_warmup_steps: int = 2000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    puzzle_emb_lr: float = 1e-2
    puzzle_emb_weight_decay: float = 0.1
    grad_clip: float = 0.0  # 0 = off

    def __post_init__(self) -> None:
        problems = [f"{name} must be a finite number >= 0, got {getattr(self, name)}"
                    for name in ("lr", "lr_min_ratio", "weight_decay", "puzzle_emb_lr", "puzzle_emb_weight_decay",
                                 "grad_clip") if not 0 <= getattr(self, name) < math.inf]  # also refuses nan
        problems += [f"{name} must be in [0, 1), got {getattr(self, name)}"
                     for name in ("beta1", "beta2") if not 0 <= getattr(self, name) < 1]
        if self.lr_warmup_steps < 0:
            problems.append(f"lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")
        if problems:
            raise ValueError("invalid optim config: " + "; ".join(problems))


@dataclass
class Optimizers:
    adam: AdamAtan2
    sparse: SignSGD | None

    def state_dict(self) -> dict:
        return {"adam": self.adam.state_dict(), "sparse": self.sparse.state_dict() if self.sparse else None}

    def load_state_dict(self, state: dict) -> None:
        self.adam.load_state_dict(state["adam"])
        if self.sparse is not None and state.get("sparse") is not None:
            self.sparse.load_state_dict(state["sparse"])


def build_optimizers(model: HRM, cfg: OptimConfig) -> Optimizers:
    adam = AdamAtan2(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    sparse = None
    if model.puzzle_emb is not None:
        sparse = SignSGD(model.puzzle_emb, lr=cfg.puzzle_emb_lr, weight_decay=cfg.puzzle_emb_weight_decay)
    return Optimizers(adam, sparse)


def set_lr(opt: Optimizers, cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Apply the schedule for ``step`` to both optimizers (separate base LRs); returns the network's LR."""
    lr = lr_at(step, cfg.lr, cfg.lr_warmup_steps, total_steps, cfg.lr_min_ratio)
    for group in opt.adam.param_groups:
        group["lr"] = lr
    if opt.sparse is not None:
        opt.sparse.lr = lr_at(step, cfg.puzzle_emb_lr, cfg.lr_warmup_steps, total_steps, cfg.lr_min_ratio)
    return lr


def train_step(model: nn.Module, carry: Carry, batch: Batch, opt: Optimizers, *, loss_scale: float,
               loss: str = "stablemax", grad_clip: float = 0.0,
               all_reduce=None) -> tuple[Carry, torch.Tensor, dict[str, torch.Tensor]]:
    """One deep-supervision step. ``loss_scale`` is 1/global_batch (times the gradient averaging's world size).

    ``all_reduce(params)`` — given by a distributed caller — averages gradients before the update. A non-finite
    gradient norm skips the update; ``metrics["grad_norm"]`` tells the caller, which counts the skips.
    """
    carry, outputs = model(carry, batch)
    total, metrics = act_loss(outputs, carry.batch["labels"], carry.halted, carry.steps, loss=loss)
    opt.adam.zero_grad(set_to_none=True)
    (total * loss_scale).backward()
    params = [p for p in model.parameters() if p.grad is not None]
    if all_reduce is not None:
        all_reduce(params)
    # After the all-reduce every rank holds the same gradients, so every rank takes the same decision.
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    metrics["grad_norm"] = grad_norm.detach()
    if grad_clip > 0:
        torch.nn.utils.clip_grads_with_norm_(params, grad_clip, grad_norm)
    if bool(torch.isfinite(grad_norm)):
        opt.adam.step()
        if opt.sparse is not None:
            opt.sparse.step()
    elif opt.sparse is not None:
        opt.sparse.zero_grad()
    return carry, total.detach(), metrics
