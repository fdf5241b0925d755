"""Loading weights trained with the paper's code (a ``torch.save``d state dict) into :class:`hrm.model.HRM`."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from hrm.model import HRM

PREFIXES = ("_orig_mod.model.inner.", "model.inner.")
# Buffers the reference keeps that carry no learned state.
IGNORED = re.compile(r"^(puzzle_emb\.local_(weights|ids)|rotary_emb\..*)$")

_LAYER_PARTS = {
    "self_attn.qkv_proj.weight": "attn.qkv.weight",
    "self_attn.o_proj.weight": "attn.out.weight",
    "mlp.gate_up_proj.weight": "mlp.gate_up.weight",
    "mlp.down_proj.weight": "mlp.down.weight",
}
_FIXED = {
    "embed_tokens.embedding_weight": "tok_emb.weight",
    "embed_pos.embedding_weight": "pos_emb.weight",
    "lm_head.weight": "lm_head.weight",
    "q_head.weight": "q_head.weight",
    "q_head.bias": "q_head.bias",
    "puzzle_emb.weights": "puzzle_emb.weight",
    "H_init": "h_init",
    "L_init": "l_init",
}
_LAYER = re.compile(r"^(H|L)_level\.layers\.(\d+)\.(.+)$")


def reference_to_ours(key: str) -> str | None:
    """Our parameter name for a reference key (without prefix), or None when the key is unknown."""
    if key in _FIXED:
        return _FIXED[key]
    m = _LAYER.match(key)
    if m and m.group(3) in _LAYER_PARTS:
        return f"{m.group(1).lower()}_module.layers.{m.group(2)}.{_LAYER_PARTS[m.group(3)]}"
    return None


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        out[key] = value
    return out


def load_reference_state_dict(model: HRM, state: dict[str, torch.Tensor] | str | Path) -> HRM:
    """Copy a reference state dict into ``model``; any missing, unknown or mis-shaped key raises one ValueError."""
    if not isinstance(state, dict):
        state = torch.load(state, map_location="cpu", weights_only=True)
    ours = model.state_dict()
    converted, unknown, misshaped = {}, [], []
    for key, value in strip_prefix(state).items():
        if IGNORED.match(key):
            continue
        name = reference_to_ours(key)
        if name is None or name not in ours:
            unknown.append(key)
        elif tuple(value.shape) != tuple(ours[name].shape):
            misshaped.append(f"{key}: {tuple(value.shape)}, expected {tuple(ours[name].shape)}")
        else:
            converted[name] = value
    missing = sorted(set(ours) - set(converted))
    if missing or unknown or misshaped:
        parts = []
        if missing:
            parts.append(f"missing for {missing}")
        if unknown:
            parts.append(f"unknown keys {sorted(unknown)}")
        if misshaped:
            parts.append(f"mis-shaped {misshaped}")
        raise ValueError("reference state dict does not fit this model config: " + "; ".join(parts))
    model.load_state_dict(converted)
    return model
