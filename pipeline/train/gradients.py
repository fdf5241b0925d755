"""Gradients across Ray Train workers: summed in one collective call per step."""

from __future__ import annotations

import torch
import torch.distributed as dist


def all_reduce_sum(params: list[torch.nn.Parameter]) -> None:
    """Sum ``params``' gradients over all workers, in place, through one flat buffer (the loss is already scaled
    by 1/global batch, so the sum is the global batch's gradient)."""
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
