"""The puzzle-embedding table: a sparse table outside autograd's parameters, updated only on the rows a batch uses.

In training, ``forward`` gathers the batch's rows into a fresh leaf tensor that receives the gradient; the
optimizer (``hrm.optim.SignSGD``) reads ``pending()`` — (ids, rows with grad) — and updates just those rows.
"""

from __future__ import annotations

import torch
from torch import nn


class PuzzleEmbedding(nn.Module):
    def __init__(self, num_ids: int, dim: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_ids, dim))  # puzzle embeddings start at 0
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:  # (B,) -> (B, E)
        rows = self.weight[ids]
        if self.training and torch.is_grad_enabled():
            rows = rows.detach().requires_grad_(True)
            self._pending.append((ids, rows))
        return rows.to(dtype)

    def pending(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The (ids, rows) gathered since the last ``clear()``; rows carry ``.grad`` after backward."""
        return self._pending

    def clear(self) -> None:
        self._pending = []
