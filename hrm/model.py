"""The Hierarchical Reasoning Model (Wang et al. 2025, arXiv 2506.21734), and its TRM variant.

Paper features, in the order this file implements them:
- input embedding x̃: token embedding, optional puzzle embedding prepended as P positions, ×√D; RoPE or learned positions;
- two recurrent modules of post-norm transformer blocks: slow f_H (z_H) and fast f_L (z_L);
- one segment: N·T steps of f_L, with f_H after every T-th; all but the final (f_L, f_H) pair without gradient
  (the one-step gradient approximation); outputs from z_H: token logits and the halting Q-values (q_halt, q_continue);
- adaptive computation time: a carry across calls (deep supervision: one segment per call, each with its own loss),
  rows that halted restart from the fixed initial states z_H0 / z_L0 on a new example; halting by Q-learning with
  ε-exploration, the Q-continue target bootstrapped from one extra no-grad segment; evaluation runs M_max segments;
- faster halting targets (``q_target``, not in the paper): ``lagged`` takes the Q-continue target from the next call's
  own segment on the same rows instead of an extra one, ``none`` trains no continue head (halt on q_halt > 0);
- TRM variant (Jolicoeur-Martineau 2025): one network serves as f_L and f_H, the last of N cycles is fully
  backpropagated, halting on q_halt > 0, no continue target.

The model knows nothing of devices or parallelism: the caller moves it and its batches, and wraps it as it likes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hrm.config import ModelConfig
from hrm.layers import Embedding, Linear, ReasoningModule, Rotary, trunc_normal_
from hrm.sparse_embedding import PuzzleEmbedding

Batch = dict[str, torch.Tensor]  # "inputs" (B, L) int, "labels" (B, L) int (-100 = ignore), "puzzle_ids" (B,) int


@dataclass
class Carry:
    """What one ACT call hands to the next."""

    z_h: torch.Tensor  # (B, P+L, D), detached
    z_l: torch.Tensor  # (B, P+L, D), detached
    steps: torch.Tensor  # (B,) int32: segments run on the current example
    halted: torch.Tensor  # (B,) bool: the row takes a new example on the next call
    batch: Batch  # the example each row is working on
    q_state: torch.Tensor | None = None  # (B, D) z_H at position 0, detached: the lagged Q-continue's input


class HRM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        self.dtype = torch.float32 if c.forward_dtype == "auto" else getattr(torch, c.forward_dtype)
        D, P = c.hidden_size, c.prefix_len
        self.embed_scale = math.sqrt(D)

        self.tok_emb = Embedding(c.vocab_size, D, std=D**-0.5)
        self.puzzle_emb = PuzzleEmbedding(c.num_puzzle_identifiers, c.emb_dim) if c.emb_dim > 0 else None
        if c.pos_encoding == "rope":
            self.rope = Rotary(c.head_dim, c.seq_len + P, c.rope_theta)
            self.pos_emb = None
        else:
            self.rope = None
            self.pos_emb = Embedding(c.seq_len + P, D, std=D**-0.5)

        block = dict(hidden_size=D, num_heads=c.num_heads, expansion=c.expansion, eps=c.rms_eps,
                     mix_len=(c.seq_len + P) if c.mlp_t else None)
        self.l_module = ReasoningModule(c.l_layers, **block)
        self.h_module = ReasoningModule(c.h_layers, **block) if c.variant == "hrm" else None  # TRM: one network

        self.lm_head = Linear(D, c.vocab_size)
        self.q_head = Linear(D, 2, bias=True)
        with torch.no_grad():  # start by (almost) never halting
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        self.register_buffer("h_init", trunc_normal_(torch.empty(D), std=1.0))  # z_H0
        self.register_buffer("l_init", trunc_normal_(torch.empty(D), std=1.0))  # z_L0

    # ---------------------------------------------------------------------------------------- the recurrent model

    def embed_input(self, inputs: torch.Tensor, puzzle_ids: torch.Tensor) -> torch.Tensor:
        """x̃: (B, L) tokens + (B,) puzzle ids -> (B, P+L, D)."""
        c = self.config
        x = self.tok_emb(inputs, self.dtype)  # (B, L, D)
        if self.puzzle_emb is not None and c.prefix_len > 0:
            pe = self.puzzle_emb(puzzle_ids, self.dtype)  # (B, E)
            pe = F.pad(pe, (0, c.prefix_len * c.hidden_size - c.emb_dim))  # zero-pad to P·D
            x = torch.cat([pe.view(-1, c.prefix_len, c.hidden_size), x], dim=1)  # (B, P+L, D)
        if self.pos_emb is not None:
            x = 0.707106781 * (x + self.pos_emb.weight.to(self.dtype))
        return self.embed_scale * x

    def f_l(self, z_l: torch.Tensor, z_h: torch.Tensor, x: torch.Tensor, rope) -> torch.Tensor:
        return self.l_module(z_l, z_h + x, rope)

    def f_h(self, z_h: torch.Tensor, z_l: torch.Tensor, rope) -> torch.Tensor:
        return (self.h_module or self.l_module)(z_h, z_l, rope)

    def segment(self, z_h: torch.Tensor, z_l: torch.Tensor, x: torch.Tensor):
        """One segment of N·T f_L steps and N f_H steps; gradient only through what the variant keeps."""
        c = self.config
        N, T = c.h_cycles, c.l_cycles
        rope = self.rope() if self.rope is not None else None
        if c.variant == "hrm":
            with torch.no_grad():
                for i in range(N * T - 1):
                    z_l = self.f_l(z_l, z_h, x, rope)
                    if (i + 1) % T == 0:
                        z_h = self.f_h(z_h, z_l, rope)
            z_l = self.f_l(z_l, z_h, x, rope)  # the one-step gradient: only the final pair
            z_h = self.f_h(z_h, z_l, rope)
        else:  # TRM: N−1 cycles without gradient, the last cycle fully backpropagated
            with torch.no_grad():
                for _ in range(N - 1):
                    for _ in range(T):
                        z_l = self.f_l(z_l, z_h, x, rope)
                    z_h = self.f_h(z_h, z_l, rope)
            for _ in range(T):
                z_l = self.f_l(z_l, z_h, x, rope)
            z_h = self.f_h(z_h, z_l, rope)
        return z_h, z_l

    def heads(self, z_h: torch.Tensor):
        """Token logits on the non-prefix positions (B, L, V) and the halting Q-values (B,), (B,) in float32."""
        logits = self.lm_head(z_h)[:, self.config.prefix_len:]
        q = self.q_head(z_h[:, 0]).float()  # (B, 2)
        return logits, q[:, 0], q[:, 1]

    def reason(self, z_h: torch.Tensor, z_l: torch.Tensor, batch: Batch):
        x = self.embed_input(batch["inputs"], batch["puzzle_ids"])
        z_h, z_l = self.segment(z_h, z_l, x)
        return (z_h, z_l), self.heads(z_h)

    # ------------------------------------------------------------------------------- adaptive computation time

    def initial_carry(self, batch: Batch) -> Carry:
        """A carry whose rows are all halted, so the first call starts every row on the batch's example."""
        B = batch["inputs"].shape[0]
        z = self.h_init.to(self.dtype).expand(B, self.config.seq_len + self.config.prefix_len, -1)
        lagged = self.config.halt_target == "lagged"  # the same carry structure on every call (no recompiles)
        return Carry(z_h=z, z_l=z, steps=torch.zeros(B, dtype=torch.int32, device=z.device),
                     halted=torch.ones(B, dtype=torch.bool, device=z.device),
                     batch={k: torch.zeros_like(v) for k, v in batch.items()},
                     q_state=torch.zeros_like(z[:, 0]) if lagged else None)

    def restart_halted(self, carry: Carry, batch: Batch):
        """Halted rows restart from z_H0 / z_L0 with step 0 on the new batch's row; the others keep theirs."""
        h = carry.halted
        z_h = torch.where(h.view(-1, 1, 1), self.h_init.to(self.dtype), carry.z_h)
        z_l = torch.where(h.view(-1, 1, 1), self.l_init.to(self.dtype), carry.z_l)
        steps = torch.where(h, torch.zeros_like(carry.steps), carry.steps)
        data = {k: torch.where(h.view(-1, *([1] * (v.dim() - 1))), batch[k], v) for k, v in carry.batch.items()}
        return z_h, z_l, steps, data

    def wants_halt(self, q_halt: torch.Tensor, q_continue: torch.Tensor) -> torch.Tensor:
        """The Q-head's own decision to stop: q_halt > q_continue; q_halt > 0 where no continue head is trained
        (TRM, q_target none)."""
        return q_halt > 0 if self.config.halt_target == "none" else q_halt > q_continue

    def halt(self, steps: torch.Tensor, q_halt: torch.Tensor, q_continue: torch.Tensor) -> torch.Tensor:
        """Which rows stop after this segment: M_max always; in training also by the Q-values, after exploration."""
        c = self.config
        halted = steps >= c.halt_max_steps
        if self.training and c.halt_max_steps > 1:
            wants = self.wants_halt(q_halt, q_continue)
            explore = torch.rand_like(q_halt) < c.halt_exploration_prob
            min_steps = explore * torch.randint_like(steps, low=2, high=c.halt_max_steps + 1)
            halted = (halted | wants) & (steps >= min_steps)
        return halted

    def q_continue_target(self, z_h, z_l, data: Batch, last: torch.Tensor) -> dict[str, torch.Tensor]:
        """extra_segment: sigmoid(q_halt′ if last step else max(q_halt′, q_continue′)), q′ from one extra no-grad
        segment on the carry."""
        with torch.no_grad():
            _, (_, next_halt, next_continue) = self.reason(z_h, z_l, data)
            return {"target_q_continue": torch.sigmoid(torch.where(last, next_halt,
                                                                   torch.maximum(next_halt, next_continue)))}

    def lagged_q_continue_target(self, carry: Carry, q_halt, q_continue) -> dict[str, torch.Tensor]:
        """lagged: the rows that continue from the previous call (not halted there) take this call's
        sigmoid(max(q_halt, q_continue)) as the target of the previous call's q_continue, recomputed from its
        stored z_H[0] by the current Q-head (gradient into the Q-head only). Restarted rows have no target."""
        previous = carry.q_state if carry.q_state is not None else torch.zeros_like(carry.z_h[:, 0])  # (B, D)
        return {"lagged_q_continue": self.q_head(previous).float()[:, 1],  # (B,)
                "target_q_continue": torch.sigmoid(torch.maximum(q_halt, q_continue)).detach(),
                "target_mask": ~carry.halted}

    def forward(self, carry: Carry, batch: Batch) -> tuple[Carry, dict[str, torch.Tensor]]:
        """One ACT step: one segment on every row, then the halting decision. Returns the new carry and outputs."""
        z_h, z_l, steps, data = self.restart_halted(carry, batch)
        (z_h, z_l), (logits, q_halt, q_continue) = self.reason(z_h, z_l, data)
        outputs = {"logits": logits, "q_halt": q_halt, "q_continue": q_continue}
        z_h, z_l = z_h.detach(), z_l.detach()
        with torch.no_grad():
            steps = steps + 1
            halted = self.halt(steps, q_halt, q_continue)
        rule = self.config.halt_target if self.training and self.config.halt_max_steps > 1 else "none"
        if rule == "extra_segment":
            outputs.update(self.q_continue_target(z_h, z_l, data, last=steps >= self.config.halt_max_steps))
        elif rule == "lagged":
            outputs.update(self.lagged_q_continue_target(carry, q_halt, q_continue))
        return Carry(z_h=z_h, z_l=z_l, steps=steps, halted=halted, batch=data,
                     q_state=z_h[:, 0] if rule == "lagged" else None), outputs

    def num_parameters(self) -> int:
        table = self.puzzle_emb.weight.numel() if self.puzzle_emb is not None else 0
        return sum(p.numel() for p in self.parameters()) + table
