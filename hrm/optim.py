"""HRM's optimizers in plain PyTorch: Adam-atan2 for the network, SignSGD for the sparse puzzle-embedding table,
and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from hrm.sparse_embedding import PuzzleEmbedding


class AdamAtan2:
    """Adam with atan2 in place of the ε-division (Everett et al. 2024), decoupled weight decay.

    m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  m̂, v̂ bias-corrected;
    p ← p·(1 − lr·wd) − lr·a·atan2(m̂, b·√v̂)

    A plain class with torch.optim.Optimizer's interface as used here (``param_groups``, ``state``, ``step``,
    ``zero_grad``, ``state_dict``/``load_state_dict`` in the same format, so a checkpoint of either loads in the
    other). Not a subclass: torch.optim.Optimizer's methods import torch._dynamo at their first call, ~1 s of CPU in
    every training process, which plain eager PyTorch never needs.
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.95), weight_decay: float = 0.0,
                 a: float = 1.27, b: float = 1.0):
        if lr < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid AdamAtan2 settings: lr={lr}, betas={betas}, weight_decay={weight_decay}")
        params = list(params)
        if not params or not all(isinstance(p, torch.Tensor) for p in params):
            raise ValueError("AdamAtan2 takes a non-empty iterable of tensors (one parameter group)")
        self.param_groups = [dict(params=params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, a=a, b=b)]
        self.state: dict[torch.Tensor, dict] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    def state_dict(self) -> dict:
        """torch.optim.Optimizer's format: per-parameter state keyed by the parameter's index, the group's settings
        with ``params`` as those indices."""
        params = self.param_groups[0]["params"]
        index = {id(p): i for i, p in enumerate(params)}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"state": {index[id(p)]: state for p, state in self.state.items()},
                "param_groups": [{**group, "params": list(range(len(params)))}]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Put back a :meth:`state_dict` (or torch.optim.Optimizer's of the same parameters): the moments are moved to
        each parameter's device and dtype, the step counts kept as they are."""
        (saved,) = state_dict["param_groups"]
        params = self.param_groups[0]["params"]
        if len(saved["params"]) != len(params):
            raise ValueError(f"the saved optimizer state holds {len(saved['params'])} parameters, this optimizer "
                             f"{len(params)}")
        by_index = dict(zip(saved["params"], params))
        self.state = {}
        for i, state in state_dict["state"].items():
            p = by_index[int(i)]
            self.state[p] = {k: v.to(device=p.device, dtype=p.dtype)
                             if k != "step" and torch.is_tensor(v) and v.is_floating_point() else v
                             for k, v in state.items()}
        self.param_groups[0].update({k: v for k, v in saved.items() if k != "params"})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            beta1, beta2 = group["betas"]
            lr, wd, a, b = group["lr"], group["weight_decay"], group["a"], group["b"]
            for p in params:
                state = self.state.setdefault(p, {})
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
            steps = [self.state[p]["step"] for p in params]
            exp_avg = [self.state[p]["exp_avg"] for p in params]
            exp_avg_sq = [self.state[p]["exp_avg_sq"] for p in params]
            grads = [p.grad for p in params]
            torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2)
            torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
            if wd:
                torch._foreach_mul_(params, 1 - lr * wd)
            for p, m, v, t in zip(params, exp_avg, exp_avg_sq, steps):
                m_hat = m / (1 - beta1**t)
                v_hat_sqrt = (v / (1 - beta2**t)).sqrt_()
                p.add_(torch.atan2(m_hat, v_hat_sqrt.mul_(b)), alpha=-lr * a)
        return loss


class SignSGD:
    """Sign descent on the rows of a :class:`PuzzleEmbedding` that the (all-ranks) batch used.

    The gradients of duplicated ids are summed first; each touched row gets p ← p·(1 − lr·wd) − lr·sign(Σg).
    Under ``torch.distributed`` every rank gathers every rank's (ids, grads), so all replicas stay identical.
    """

    def __init__(self, table: PuzzleEmbedding, lr: float = 1e-2, weight_decay: float = 0.0):
        self.table = table
        self.lr = lr
        self.weight_decay = weight_decay

    def state_dict(self) -> dict:
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.weight_decay = state["lr"], state["weight_decay"]

    def zero_grad(self) -> None:
        self.table.clear()

    @torch.no_grad()
    def step(self) -> None:
        pending = [(ids, rows.grad) for ids, rows in self.table.pending() if rows.grad is not None]
        self.table.clear()
        weight = self.table.weight
        if pending:
            ids = torch.cat([i for i, _ in pending]).long()
            grads = torch.cat([g for _, g in pending]).to(weight.dtype)
        else:  # still join the collective: other ranks may have rows
            ids = torch.zeros(0, dtype=torch.long, device=weight.device)
            grads = torch.zeros(0, weight.shape[1], dtype=weight.dtype, device=weight.device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            ids, grads = _all_gather_rows(ids, grads)
        if ids.numel() == 0:
            return
        unique, inverse = ids.unique(return_inverse=True)
        summed = torch.zeros(len(unique), weight.shape[1], dtype=weight.dtype, device=weight.device)
        summed.index_add_(0, inverse, grads)
        rows = weight[unique] * (1 - self.lr * self.weight_decay) - self.lr * summed.sign()
        weight[unique] = rows


def _all_gather_rows(ids: torch.Tensor, grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather variable-length (ids, grads) from every rank (padded to the longest, then trimmed)."""
    world = dist.get_world_size()
    n = torch.tensor([ids.numel()], device=ids.device)
    counts = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(counts, n)
    longest = int(max(c.item() for c in counts))
    pad_ids = torch.zeros(longest, dtype=ids.dtype, device=ids.device)
    pad_grads = torch.zeros(longest, grads.shape[1], dtype=grads.dtype, device=grads.device)
    pad_ids[: ids.numel()], pad_grads[: ids.numel()] = ids, grads
    all_ids = [torch.empty_like(pad_ids) for _ in range(world)]
    all_grads = [torch.empty_like(pad_grads) for _ in range(world)]
    dist.all_gather(all_ids, pad_ids)
    dist.all_gather(all_grads, pad_grads)
    keep = [slice(0, int(c.item())) for c in counts]
    return (torch.cat([t[k] for t, k in zip(all_ids, keep)]), torch.cat([t[k] for t, k in zip(all_grads, keep)]))


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float = 1.0) -> float:
    """Linear warmup from 0 over ``warmup_steps``, then cosine from base_lr down to base_lr·min_ratio."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * (min_ratio + max(0.0, (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))))
