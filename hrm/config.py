"""Typed configuration: the single source of defaults, and a strict loader for mappings (YAML, JSON, MLflow)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
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
    # "auto": chosen by the caller for its device (pipeline.precision.resolve_dtype); a model built with "auto"
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


def _flavour(**overrides: Any) -> dict[str, Any]:
    return overrides


# Named flavours: overrides of ModelConfig's defaults (which are the paper's).
FLAVOURS: dict[str, dict[str, Any]] = {
    "paper": _flavour(),  # D 512, 8 heads, 4+4 layers, N = T = 2, M_max 16: ~27.3 M parameters on Sudoku
    "trm": _flavour(variant="trm", l_layers=2, h_layers=0, h_cycles=3, l_cycles=6, puzzle_prefix_len=16),
    "trm-mlp": _flavour(variant="trm", l_layers=2, h_layers=0, h_cycles=3, l_cycles=6, puzzle_prefix_len=16,
                        mlp_t=True),
    "small": _flavour(hidden_size=128, num_heads=4, h_layers=2, l_layers=2, halt_max_steps=8),
    # The CPU demo (README): D 128, 2+2 layers, a narrow SwiGLU; ~0.66 M parameters on 6×6 Sudoku.
    "demo": _flavour(hidden_size=128, num_heads=4, expansion=2.0, h_layers=2, l_layers=2, halt_max_steps=4),
    "debug": _flavour(hidden_size=64, num_heads=2, expansion=2.0, h_layers=1, l_layers=1, h_cycles=2, l_cycles=2,
                      halt_max_steps=4),
}


def model_config(flavour: str = "paper", **overrides: Any) -> ModelConfig:
    """A flavour's ModelConfig with overrides (e.g. the dataset's vocab_size and seq_len)."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown model flavour {flavour!r}; choose one of {sorted(FLAVOURS)}")
    return from_dict(ModelConfig, {**FLAVOURS[flavour], **overrides}, where=f"flavour {flavour!r}")


# --------------------------------------------------------------------------------------------------------------------
# Strict loading of nested dataclasses from plain mappings.


QUOTE_LIMIT = 200  # characters of a value quoted in an error message


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error message stays short whatever a file holds."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except (TypeError, ValueError):
                pass
        raise TypeError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {quote(value)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"{where}: must be one of {list(typing.get_args(tp))}, got {quote(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: expected a list, got {type(value).__name__} {quote(value)}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected a mapping, got {type(value).__name__} {quote(value)}")
        key_t, val_t = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, key_t, where): _coerce(v, val_t, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{where}: expected a number, got {type(value).__name__} {quote(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where}: expected an integer, got {type(value).__name__} {quote(value)}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise TypeError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {quote(value)}")
        return value
    return value


def from_dict(cls: type, data: Any, *, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise with the key's dotted path."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    kwargs = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as flat dotted keys (MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in (to_dict(obj) if dataclasses.is_dataclass(obj) else obj).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, prefix=name + "."))
        else:
            out[name] = value
    return out


__all__ = ["ModelConfig", "FLAVOURS", "model_config", "from_dict", "to_dict", "flatten", "quote"]
