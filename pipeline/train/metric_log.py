"""Train metrics between two logs: summed on the device at every step, reduced across workers when read."""

from __future__ import annotations

import torch
import torch.distributed as dist

PER_EXAMPLE = ("accuracy", "exact_accuracy", "q_halt_accuracy", "steps")  # averaged over the rows that halted
PER_STEP = ("lm_loss", "q_halt_loss", "q_continue_loss")  # summed over the global batch: averaged over steps


class MetricLog:
    """Train metrics summed on device between logs; reduced across workers and averaged when read."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        """Add one step's metrics (hrm.step.train_step's, ``count`` = rows that halted in it)."""
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0) + value.detach().double()
        self.steps += 1

    def read(self, world: int) -> dict[str, float]:
        """The ``train/*`` averages since the last read over all ``world`` workers (a collective call when
        ``world`` > 1: every worker must read); the sums start again from zero."""
        keys = sorted(self.sums)
        vector = torch.stack([torch.as_tensor(self.sums[k]).reshape(()) for k in keys]).cpu()
        if world > 1:
            dist.all_reduce(vector)
        totals = dict(zip(keys, vector.tolist()))
        count = totals.pop("count", 0.0)
        # Per-example metrics average over the rows that halted since the last read; none halted: not logged
        # (a 0 would be a value, and the charts would zig-zag).
        out = {f"train/{k}": totals[k] / count for k in PER_EXAMPLE if count > 0}
        for k in PER_STEP:
            if k in totals:
                out[f"train/{k}"] = totals[k] / self.steps
        out["train/grad_norm"] = totals["grad_norm"] / (self.steps * world)
        self.sums, self.steps = {}, 0
        return out
