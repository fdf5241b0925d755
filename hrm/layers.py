"""Building blocks of HRM's transformer: truncated-normal init, casted linears, RoPE, attention, SwiGLU, a post-norm block.

Weights are kept in float32; every layer computes in the dtype of its input (bfloat16 on GPU, float32 on CPU).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def trunc_normal_(tensor: torch.Tensor, std: float = 1.0, bound: float = 2.0) -> torch.Tensor:
    """Truncated normal on ±bound·σ whose *actual* standard deviation is ``std`` (σ corrected for the truncation)."""
    if std == 0:
        return tensor.zero_()
    z = math.erf(bound / math.sqrt(2.0))  # P(|x| < bound) for a standard normal
    pdf = math.exp(-0.5 * bound**2) / math.sqrt(2.0 * math.pi)
    truncated_std = math.sqrt(1.0 - 2.0 * bound * pdf / z)
    with torch.no_grad():
        nn.init.trunc_normal_(tensor, mean=0.0, std=1.0, a=-bound, b=bound)
        return tensor.mul_(std / truncated_std)


def rms_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm without a learned scale, computed in float32."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)).to(x.dtype)


class Linear(nn.Module):
    """y = x Wᵀ (+ b) with W kept in float32 and cast to the input's dtype. Init: truncated normal, σ = 1/√fan_in."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(out_features, in_features), std=in_features**-0.5))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


class Embedding(nn.Module):
    """A lookup table kept in float32, returned in ``dtype``. Init: truncated normal, σ = 1/√D."""

    def __init__(self, num: int, dim: int, std: float):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(num, dim), std=std))

    def forward(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return F.embedding(ids, self.weight.to(dtype))


class Rotary(nn.Module):
    """RoPE tables, half-split convention: dimension i pairs with i + d/2, frequency θ^(−2i/d)."""

    def __init__(self, head_dim: int, max_len: int, theta: float):
        super().__init__()
        inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (d/2,)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (L, d/2)
        angles = torch.cat([angles, angles], dim=-1)  # (L, d)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos, self.sin


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, L, d); cos/sin: (L, d). Computed in float32."""
    x32 = x.float()
    return (x32 * cos + rotate_half(x32) * sin).to(x.dtype)


class Attention(nn.Module):
    """Non-causal multi-head attention, no biases, one fused qkv projection (rows: all q heads, then k, then v)."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv = Linear(hidden_size, 3 * hidden_size)
        self.out = Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, L, d)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=False)  # (B, H, L, d), scale 1/√d
        return self.out(y.transpose(1, 2).reshape(B, L, D))


def swiglu_inner_size(dim: int, expansion: float) -> int:
    """round(2/3 · expansion · dim), then up to a multiple of 256."""
    inner = round(expansion * dim * 2 / 3)
    return -(-inner // 256) * 256


class SwiGLU(nn.Module):
    """down(silu(gate(x)) · up(x)) with one fused gate+up projection (gate rows first)."""

    def __init__(self, dim: int, expansion: float):
        super().__init__()
        inner = swiglu_inner_size(dim, expansion)
        self.gate_up = Linear(dim, 2 * inner)
        self.down = Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """Post-norm transformer block: x = rms(x + Attn(x)); x = rms(x + SwiGLU(x)).

    With ``mix_len`` (TRM's mlp_t) a SwiGLU across the positions replaces attention.
    """

    def __init__(self, hidden_size: int, num_heads: int, expansion: float, eps: float, mix_len: int | None = None):
        super().__init__()
        self.eps = eps
        self.attn = Attention(hidden_size, num_heads) if mix_len is None else None
        self.mlp_t = SwiGLU(mix_len, expansion) if mix_len is not None else None
        self.mlp = SwiGLU(hidden_size, expansion)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:  # (B, L, D)
        if self.attn is not None:
            x = rms_norm(x + self.attn(x, rope), self.eps)
        else:
            xt = x.transpose(1, 2)  # (B, D, L)
            x = rms_norm(xt + self.mlp_t(xt), self.eps).transpose(1, 2)
        return rms_norm(x + self.mlp(x), self.eps)


class ReasoningModule(nn.Module):
    """A stack of blocks applied to (hidden + injection): f_L(z_L, z_H + x̃) or f_H(z_H, z_L)."""

    def __init__(self, num_layers: int, **block_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(Block(**block_kwargs) for _ in range(num_layers))

    def forward(self, hidden: torch.Tensor, injection: torch.Tensor, rope) -> torch.Tensor:
        x = hidden + injection
        for layer in self.layers:
            x = layer(x, rope)
        return x
