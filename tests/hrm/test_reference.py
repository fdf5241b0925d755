"""A state dict in the paper code's layout reproduces the outputs of the model it was written from."""

import pytest
import torch

from hrm.config import model_config
from hrm.model import HRM
from hrm.reference import load_reference_state_dict

# The reference layout, spelled out here from its documentation (not from hrm.reference).
LAYER = {"attn.qkv.weight": "self_attn.qkv_proj.weight", "attn.out.weight": "self_attn.o_proj.weight",
         "mlp.gate_up.weight": "mlp.gate_up_proj.weight", "mlp.down.weight": "mlp.down_proj.weight"}


def reference_layout(m: HRM, prefix: str) -> dict[str, torch.Tensor]:
    out = {"embed_tokens.embedding_weight": m.tok_emb.weight, "lm_head.weight": m.lm_head.weight,
           "q_head.weight": m.q_head.weight, "q_head.bias": m.q_head.bias, "H_init": m.h_init, "L_init": m.l_init,
           "puzzle_emb.weights": m.puzzle_emb.weight,
           "puzzle_emb.local_weights": torch.zeros(4, m.config.emb_dim),  # non-persistent extras are ignored
           "puzzle_emb.local_ids": torch.zeros(4, dtype=torch.int32)}
    if m.pos_emb is not None:
        out["embed_pos.embedding_weight"] = m.pos_emb.weight
    for level, module in (("H", m.h_module), ("L", m.l_module)):
        for i, layer in enumerate(module.layers):
            for ours, theirs in LAYER.items():
                out[f"{level}_level.layers.{i}.{theirs}"] = layer.get_parameter(ours)
    return {prefix + k: v.detach().clone() for k, v in out.items()}


def run(m, b):
    m.eval()
    carry = m.initial_carry(b)
    with torch.no_grad():
        for _ in range(m.config.halt_max_steps):
            carry, out = m(carry, b)
    return out


@pytest.mark.parametrize("prefix", ["_orig_mod.model.inner.", "model.inner."])
@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_reference_state_dict_reproduces_outputs(tmp_path, prefix, pos):
    cfg = model_config("debug", vocab_size=11, seq_len=16, num_puzzle_identifiers=3, pos_encoding=pos)
    torch.manual_seed(1)
    source = HRM(cfg)
    with torch.no_grad():
        source.puzzle_emb.weight.normal_()
        source.q_head.weight.normal_()
    path = tmp_path / "ref.pt"
    torch.save(reference_layout(source, prefix), path)
    torch.manual_seed(2)
    target = load_reference_state_dict(HRM(cfg), path)
    b = {"inputs": torch.randint(1, 11, (4, 16)), "puzzle_ids": torch.tensor([0, 1, 2, 1])}
    a, c = run(source, b), run(target, b)
    for key in ("logits", "q_halt", "q_continue"):
        torch.testing.assert_close(a[key], c[key], atol=0, rtol=0)


def test_missing_and_misshaped_keys_are_listed():
    cfg = model_config("debug", vocab_size=11, seq_len=16)
    state = reference_layout(HRM(cfg), "model.inner.")
    del state["model.inner.H_init"]
    state["model.inner.lm_head.weight"] = torch.zeros(12, 64)
    state["model.inner.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        load_reference_state_dict(HRM(cfg), state)
    msg = str(err.value)
    assert "h_init" in msg and "lm_head.weight: (12, 64), expected (11, 64)" in msg and "extra.weight" in msg
