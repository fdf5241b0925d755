"""Model FLOPs of one HRM training step, counted from the config (matrix products; attention scores included):
what `bench/step.py` divides by its step time and `hrm plan` multiplies by the steps of a run."""

from __future__ import annotations

from hrm.config import ModelConfig
from hrm.layers import swiglu_inner_size


def block_flops_per_token(c: ModelConfig) -> float:
    """Forward FLOPs of one block for one token: the linear layers (and the attention scores, or mlp_t)."""
    D, S = c.hidden_size, c.seq_len + c.prefix_len
    inner = swiglu_inner_size(D, c.expansion)
    channel_mlp = 3 * D * inner
    if c.mlp_t:
        token_mix = 3 * S * swiglu_inner_size(S, c.expansion)  # per channel, over the positions
        return 2 * (channel_mlp + token_mix)
    attention = 4 * D * D + 2 * S * D  # qkv + out projections; QKᵀ and AV per token
    return 2 * (channel_mlp + attention)


def block_passes(c: ModelConfig, training: bool = True) -> int:
    """Block evaluations in one training step: the segment, the Q-target segment (q_target extra_segment only), and
    the backward (×2)."""
    N, T = c.h_cycles, c.l_cycles
    if c.variant == "hrm":
        segment = N * T * c.l_layers + N * c.h_layers
        backward = 2 * (c.l_layers + c.h_layers)  # only the final f_L, f_H pair
        extra = segment if training and c.halt_max_steps > 1 and c.halt_target == "extra_segment" else 0
    else:  # TRM: one network; the last cycle (T L-steps + 1 H-step) is backpropagated
        segment = N * (T + 1) * c.l_layers
        backward = 2 * (T + 1) * c.l_layers
        extra = 0
    return segment + extra + backward


def step_flops(c: ModelConfig, batch: int) -> float:
    tokens = batch * (c.seq_len + c.prefix_len)
    heads = 3 * 2 * batch * c.seq_len * c.hidden_size * c.vocab_size  # lm_head forward + backward
    return block_passes(c) * tokens * block_flops_per_token(c) + heads
