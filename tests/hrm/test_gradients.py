"""Gradient paths: HRM's one-step gradient and TRM's last-cycle backprop, against loops written here from the spec."""

import pytest
import torch

from hrm.config import model_config
from hrm.model import HRM


def setup(variant):
    kw = dict(h_cycles=2, l_cycles=3) if variant == "hrm" else dict(variant="trm", h_layers=0, h_cycles=3, l_cycles=2)
    m = HRM(model_config("debug", vocab_size=11, seq_len=16, **kw))
    with torch.no_grad():  # non-trivial heads so every path carries gradient
        m.q_head.weight.normal_()
    b = {"inputs": torch.randint(1, 11, (2, 16)), "puzzle_ids": torch.zeros(2, dtype=torch.long)}
    z0 = torch.randn(2, 17, 64)
    return m, b, z0


def grads_of(m, fn):
    m.zero_grad(set_to_none=True)
    fn().backward()
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


def objective(m, z_h):
    logits, q_halt, q_continue = m.heads(z_h)
    return (logits.float() ** 2).mean() + q_halt.sum() + q_continue.sum()


def hrm_by_hand(m, b, z0, detach_early: bool):
    """N·T f_L steps, f_H after every T-th; earlier steps replaced by their detached values when asked."""
    N, T = m.config.h_cycles, m.config.l_cycles
    rope = m.rope()
    x = m.embed_input(b["inputs"], b["puzzle_ids"])
    cut = (lambda t: t.detach()) if detach_early else (lambda t: t)
    z_h, z_l = z0, z0 * 0.5
    for i in range(N * T):
        last = i == N * T - 1
        z_l = m.l_module(z_l, z_h + x, rope)
        z_l = z_l if last else cut(z_l)
        if (i + 1) % T == 0:
            z_h = m.h_module(z_h, z_l, rope)
            z_h = z_h if last else cut(z_h)
    return objective(m, z_h)


def trm_by_hand(m, b, z0, detach_early: bool):
    N, T = m.config.h_cycles, m.config.l_cycles
    rope = m.rope()
    x = m.embed_input(b["inputs"], b["puzzle_ids"])
    cut = (lambda t: t.detach()) if detach_early else (lambda t: t)
    z_h, z_l = z0, z0 * 0.5
    for j in range(N):
        for _ in range(T):
            z_l = m.l_module(z_l, z_h + x, rope)
        z_h = m.l_module(z_h, z_l, rope)
        if j < N - 1:
            z_h, z_l = cut(z_h), cut(z_l)
    return objective(m, z_h)


def model_objective(m, b, z0):
    x = m.embed_input(b["inputs"], b["puzzle_ids"])
    z_h, _ = m.segment(z0, z0 * 0.5, x)
    return objective(m, z_h)


@pytest.mark.parametrize("variant, by_hand", [("hrm", hrm_by_hand), ("trm", trm_by_hand)])
def test_gradient_path_matches_spec(variant, by_hand):
    m, b, z0 = setup(variant)
    ours = grads_of(m, lambda: model_objective(m, b, z0))
    spec = grads_of(m, lambda: by_hand(m, b, z0, detach_early=True))
    full = grads_of(m, lambda: by_hand(m, b, z0, detach_early=False))
    assert ours.keys() == spec.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], spec[name], atol=1e-6, rtol=1e-5, msg=name)
    # The check can fail: full backpropagation through every step gives different gradients.
    assert any(not torch.allclose(ours[n], full[n], atol=1e-6) for n in ours)
    # Every network parameter gets a gradient (embedding through the final f_L, heads, both modules).
    assert set(ours) == {n for n, _ in m.named_parameters()}


def test_hrm_outputs_equal_full_recurrence():
    """The no-grad part changes gradients only, never values."""
    m, b, z0 = setup("hrm")
    with torch.no_grad():
        torch.testing.assert_close(model_objective(m, b, z0), hrm_by_hand(m, b, z0, detach_early=False))


def test_trm_uses_one_network():
    m, _, _ = setup("trm")
    assert m.h_module is None
    assert not any(n.startswith("h_module") for n, _ in m.named_parameters())
