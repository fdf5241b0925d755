"""The model's configuration: ModelConfig (the single source of its defaults) and named flavours of it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(kw_only=True)
class ModelConfig:
    """Architecture of HRM (and of its TRM variant). Paper symbols in comments."""

    vocab_size: int = 11  # V, token 0 = PAD
    seq_len: int = 81  # L
    num_puzzle_identifiers: int = 1
    puzzle_emb_dim: int | None = None  # E; None = D, 0 = off
    puzzle_prefix_len: int | None = None  # P; None = ceil(E / D)
    hidden_size: int = 512  # D
    num_heads: int = 8
    expansion: float = 4.0
    h_layers: int = 4
    l_layers: int = 4
    h_cycles: int = 2  # N
    l_cycles: int = 2  # T
    halt_max_steps: int = 16  # M_max
    halt_exploration_prob: float = 0.1  # ε
    pos_encoding: Literal["rope", "learned"] = "rope"
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    variant: Literal["hrm", "trm"] = "hrm"
    mlp_t: bool = False  # TRM: an MLP across positions in place of attention
    loss: Literal["stablemax", "softmax"] = "stablemax"
    # Target of the Q-continue head: one extra no-grad segment (the paper's), the next call's own forward on the
    # same rows (lagged: no extra segment), or no continue head at all (halt on q_halt > 0). None: the variant's
    # rule (HRM extra_segment, TRM none).
    q_target: Literal["extra_segment", "lagged", "none"] | None = None
    # "auto": chosen by the caller for its device (pipeline.core.precision.resolve_dtype); a model built with "auto"
    # unresolved computes in float32.
    forward_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    def __post_init__(self) -> None:
        problems = []
        if self.hidden_size % self.num_heads:
            problems.append(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        for name in ("vocab_size", "seq_len", "num_puzzle_identifiers", "hidden_size", "num_heads", "h_cycles",
                     "l_cycles", "halt_max_steps", "l_layers"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.variant == "hrm" and self.h_layers < 1:
            problems.append("h_layers must be >= 1 for the hrm variant")
        if self.mlp_t and self.variant != "trm":
            problems.append("mlp_t is a TRM option: set variant: trm")
        if not 0.0 <= self.halt_exploration_prob <= 1.0:
            problems.append(f"halt_exploration_prob must be in [0, 1], got {self.halt_exploration_prob}")
        if (self.hidden_size // self.num_heads) % 2:
            problems.append("head dimension must be even for RoPE")
        if self.variant == "trm" and self.q_target not in (None, "none"):
            problems.append(f"q_target {self.q_target!r} needs a Q-continue head: TRM trains q_halt only "
                            "(leave q_target unset or 'none')")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    @property
    def halt_target(self) -> str:
        """The Q-continue target rule in force: q_target, or the variant's own (HRM extra_segment, TRM none)."""
        if self.q_target is not None:
            return self.q_target
        return "none" if self.variant == "trm" else "extra_segment"

    @property
    def emb_dim(self) -> int:  # E
        return self.hidden_size if self.puzzle_emb_dim is None else self.puzzle_emb_dim

    @property
    def prefix_len(self) -> int:  # P
        if self.emb_dim == 0:
            return 0
        if self.puzzle_prefix_len is not None:
            return self.puzzle_prefix_len
        return math.ceil(self.emb_dim / self.hidden_size)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


# Named flavours: overrides of ModelConfig's defaults (which are the paper's).
FLAVOURS: dict[str, dict[str, Any]] = {
    "paper": {},  # D 512, 8 heads, 4+4 layers, N = T = 2, M_max 16: ~27.3 M parameters on Sudoku
    "trm": dict(variant="trm", l_layers=2, h_layers=0, h_cycles=3, l_cycles=6, puzzle_prefix_len=16),
    "trm-mlp": dict(variant="trm", l_layers=2, h_layers=0, h_cycles=3, l_cycles=6, puzzle_prefix_len=16,
                    mlp_t=True),
    "small": dict(hidden_size=128, num_heads=4, h_layers=2, l_layers=2, halt_max_steps=8),
    # The CPU demo (README): D 128, 2+2 layers, a narrow SwiGLU; ~0.66 M parameters on 6×6 Sudoku.
    "demo": dict(hidden_size=128, num_heads=4, expansion=2.0, h_layers=2, l_layers=2, halt_max_steps=4),
    "debug": dict(hidden_size=64, num_heads=2, expansion=2.0, h_layers=1, l_layers=1, h_cycles=2, l_cycles=2,
                  halt_max_steps=4),
}


def model_config(flavour: str = "paper", **overrides: Any) -> ModelConfig:
    """A flavour's ModelConfig with overrides (e.g. the dataset's vocab_size and seq_len).

    Plain Python: values are not type-checked here (``pipeline.core.config_io`` checks what a config file holds)."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown model flavour {flavour!r}; choose one of {sorted(FLAVOURS)}")
    return ModelConfig(**{**FLAVOURS[flavour], **overrides})


__all__ = ["ModelConfig", "FLAVOURS", "model_config"]
