import math

import pytest
import torch

from hrm.config import model_config
from hrm.layers import rms_norm, swiglu_inner_size
from hrm.model import HRM

VARIANTS = {
    "hrm": dict(),
    "hrm-learned-pos": dict(pos_encoding="learned"),
    "hrm-no-puzzle-emb": dict(puzzle_emb_dim=0),
    "hrm-wide-puzzle-emb": dict(puzzle_emb_dim=100, num_puzzle_identifiers=5),
    "trm": dict(variant="trm", h_layers=0, h_cycles=3, l_cycles=2, puzzle_prefix_len=4),
    "trm-mlp": dict(variant="trm", h_layers=0, h_cycles=2, l_cycles=2, puzzle_prefix_len=4, mlp_t=True),
}


def make(variant="hrm", **kw):
    return HRM(model_config("debug", vocab_size=11, seq_len=16, **{**VARIANTS[variant], **kw}))


def batch(B=3, L=16, V=11, ids=1):
    return {"inputs": torch.randint(1, V, (B, L)), "labels": torch.randint(1, V, (B, L)),
            "puzzle_ids": torch.randint(0, ids, (B,))}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_shapes_and_dtypes(variant, dtype):
    m = make(variant, forward_dtype=dtype)
    b = batch(ids=m.config.num_puzzle_identifiers)
    carry, out = m(m.initial_carry(b), b)
    P = m.config.prefix_len
    assert out["logits"].shape == (3, 16, 11) and out["logits"].dtype == getattr(torch, dtype)
    assert out["q_halt"].shape == (3,) and out["q_halt"].dtype == torch.float32
    assert carry.z_h.shape == (3, P + 16, 64) and not carry.z_h.requires_grad
    assert carry.steps.tolist() == [1, 1, 1]


@pytest.mark.parametrize("E, P", [(64, 1), (100, 2), (128, 2), (0, 0)])
def test_puzzle_prefix_is_zero_padded_embedding(E, P):
    m = make(puzzle_emb_dim=E, num_puzzle_identifiers=3)
    assert m.config.prefix_len == P
    if E:
        m.puzzle_emb.weight.normal_()
    b = batch(ids=3)
    x = m.embed_input(b["inputs"], b["puzzle_ids"])
    assert x.shape == (3, P + 16, 64)
    D = 64
    tok = m.tok_emb.weight[b["inputs"]] * math.sqrt(D)
    torch.testing.assert_close(x[:, P:], tok)
    if E:
        flat = x[:, :P].reshape(3, P * D) / math.sqrt(D)
        torch.testing.assert_close(flat[:, :E], m.puzzle_emb.weight[b["puzzle_ids"]])
        assert flat[:, E:].abs().sum() == 0


def test_learned_positions_scale():
    m = make("hrm-learned-pos", puzzle_emb_dim=0)
    b = batch()
    expected = math.sqrt(64) * 0.707106781 * (m.tok_emb.weight[b["inputs"]] + m.pos_emb.weight)
    torch.testing.assert_close(m.embed_input(b["inputs"], b["puzzle_ids"]), expected)


def test_paper_flavour_size():
    m = HRM(model_config("paper"))
    assert abs(m.num_parameters() - 27.3e6) < 0.05e6
    assert swiglu_inner_size(512, 4) == 1536
    assert m.l_module.layers[0].mlp.gate_up.weight.shape == (2 * 1536, 512)


def test_rms_norm_formula():
    x = torch.randn(4, 7, 32)
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(rms_norm(x), expected)


def test_init_statistics():
    m = HRM(model_config("paper"))
    w = m.l_module.layers[0].attn.qkv.weight
    assert abs(w.std().item() - 512**-0.5) / 512**-0.5 < 0.01  # σ corrected for the truncation
    assert w.abs().max().item() <= 2 * 512**-0.5 / 0.8796 + 1e-6  # ±2 of the underlying normal
    assert m.q_head.weight.abs().sum() == 0 and m.q_head.bias.tolist() == [-5.0, -5.0]
    assert m.puzzle_emb.weight.abs().sum() == 0
    assert abs(m.h_init.std().item() - 1.0) < 0.15


def test_attention_matches_explicit_formula():
    m = make(puzzle_emb_dim=0)
    attn = m.l_module.layers[0].attn
    x = torch.randn(2, 16, 64)
    cos, sin = m.rope()
    B, L, D, H, d = 2, 16, 64, 2, 32
    qkv = x @ attn.qkv.weight.T
    q, k, v = (qkv[..., i * D:(i + 1) * D].view(B, L, H, d).transpose(1, 2) for i in range(3))

    def rope(t):  # dimension i pairs with i + d/2, frequencies θ^(−2i/d)
        i = torch.arange(d // 2)
        ang = torch.arange(L)[:, None] * 10000.0 ** (-2 * i / d)[None]
        a, b = t[..., : d // 2], t[..., d // 2:]
        return torch.cat([a * ang.cos() - b * ang.sin(), b * ang.cos() + a * ang.sin()], -1)

    q, k = rope(q), rope(k)
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1)
    expected = (w @ v).transpose(1, 2).reshape(B, L, D) @ attn.out.weight.T
    torch.testing.assert_close(attn(x, (cos, sin)), expected, atol=1e-5, rtol=1e-4)
