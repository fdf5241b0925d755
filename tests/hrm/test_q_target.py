"""The Q-continue target rules (``model.q_target``): extra_segment (the paper's), lagged, none — outputs, loss terms
and gradient paths against their formulas, and the lagged rule's rows across restarts."""

import pytest
import torch
import torch.nn.functional as F

from hrm.config import model_config
from hrm.loss import act_loss
from hrm.model import HRM


def make(q_target, M=4, variant="hrm"):
    kw = dict(variant="trm", h_layers=0) if variant == "trm" else {}
    torch.manual_seed(0)
    m = HRM(model_config("debug", vocab_size=11, seq_len=8, halt_max_steps=M, halt_exploration_prob=0.0,
                         q_target=q_target, **kw)).train()
    with torch.no_grad():  # Q-values that differ per row, so halting and targets are not all alike
        m.q_head.weight.normal_(std=0.5)
        m.q_head.bias.zero_()
    return m


def batch(B, seed):
    g = torch.Generator().manual_seed(seed)
    return {"inputs": torch.randint(1, 11, (B, 8), generator=g), "labels": torch.randint(1, 11, (B, 8), generator=g),
            "puzzle_ids": torch.zeros(B, dtype=torch.long)}


def test_default_rule_per_variant():
    assert model_config("debug").halt_target == "extra_segment"
    assert model_config("trm").halt_target == "none"
    assert model_config("debug", q_target="lagged").halt_target == "lagged"
    with pytest.raises(ValueError, match="q_target 'lagged' needs a Q-continue head"):
        model_config("trm", q_target="lagged")


def test_none_trains_no_continue_head_and_halts_on_q_halt():
    m = make("none")
    b = batch(4, 0)
    carry, out = m(m.initial_carry(b), b)
    assert "target_q_continue" not in out and carry.q_state is None
    total, metrics = act_loss(out, carry.batch["labels"], carry.halted, carry.steps)
    assert "q_continue_loss" not in metrics
    total.backward()
    assert m.q_head.weight.grad[1].abs().sum() == 0 and m.q_head.bias.grad[1] == 0  # continue row untouched
    assert m.q_head.weight.grad[0].abs().sum() > 0
    q_halt, q_continue = torch.tensor([0.5, -0.5, -0.1]), torch.tensor([-1.0, -1.0, 5.0])
    assert m.wants_halt(q_halt, q_continue).tolist() == [True, False, False]  # q_halt > 0, q_continue ignored
    assert make("extra_segment").wants_halt(q_halt, q_continue).tolist() == [True, True, False]


def test_extra_segment_target_is_a_constant_from_one_more_segment():
    m = make("extra_segment")
    b = batch(3, 1)
    carry, out = m(m.initial_carry(b), b)
    assert not out["target_q_continue"].requires_grad
    with torch.no_grad():
        _, (_, qh, qc) = m.reason(carry.z_h, carry.z_l, carry.batch)
    torch.testing.assert_close(out["target_q_continue"], torch.sigmoid(torch.maximum(qh, qc)))
    _, metrics = act_loss(out, carry.batch["labels"], carry.halted, carry.steps)
    expected = F.binary_cross_entropy_with_logits(out["q_continue"], out["target_q_continue"], reduction="sum")
    torch.testing.assert_close(metrics["q_continue_loss"], expected.detach())


def test_lagged_target_comes_from_the_next_call_on_the_rows_that_continued():
    m = make("lagged", M=3)
    b1, b2 = batch(4, 2), batch(4, 3)
    carry, out = m(m.initial_carry(b1), b1)
    assert out["target_mask"].tolist() == [False] * 4  # first call: every row started, nothing to look back on
    torch.testing.assert_close(carry.q_state, carry.z_h[:, 0])
    first_state = carry.q_state.clone()
    carry.halted = torch.tensor([True, False, True, False])  # rows 0, 2 restart on b2's rows; 1, 3 continue
    new, out = m(carry, b2)
    assert out["target_mask"].tolist() == [False, True, False, True]
    torch.testing.assert_close(out["target_q_continue"], torch.sigmoid(torch.maximum(out["q_halt"], out["q_continue"])))
    # The prediction is the previous call's q_continue, recomputed by the current Q-head from the stored z_H[0].
    torch.testing.assert_close(out["lagged_q_continue"], m.q_head(first_state)[:, 1])
    # The continuing rows kept their example; the restarted ones took the new batch's rows.
    assert torch.equal(new.batch["inputs"][1], b1["inputs"][1]) and torch.equal(new.batch["inputs"][0], b2["inputs"][0])
    _, metrics = act_loss(out, new.batch["labels"], new.halted, new.steps)
    bce = F.binary_cross_entropy_with_logits(out["lagged_q_continue"], out["target_q_continue"], reduction="none")
    torch.testing.assert_close(metrics["q_continue_loss"], (bce[1] + bce[3]).detach())


def test_lagged_gradient_reaches_only_the_q_head_through_the_continue_loss():
    m = make("lagged", M=3)
    b = batch(4, 4)
    carry, _ = m(m.initial_carry(b), b)
    carry.halted = torch.zeros(4, dtype=torch.bool)
    _, out = m(carry, b)
    bce = F.binary_cross_entropy_with_logits(out["lagged_q_continue"], out["target_q_continue"], reduction="sum")
    bce.backward()
    grads = {name: p.grad for name, p in m.named_parameters()}
    assert grads["q_head.weight"][1].abs().sum() > 0 and grads["q_head.weight"][0].abs().sum() == 0
    assert all(g is None for name, g in grads.items() if not name.startswith("q_head"))  # the target is a constant


@pytest.mark.parametrize("q_target", ["extra_segment", "lagged", "none"])
def test_every_rule_trains_the_same_lm_and_q_halt_terms(q_target):
    """The rules differ only in the continue term: same weights, same batch, same lm and q_halt losses."""
    m = make(q_target)
    b = batch(4, 5)
    carry, out = m(m.initial_carry(b), b)
    _, metrics = act_loss(out, carry.batch["labels"], carry.halted, carry.steps)
    reference = make("extra_segment")
    ref_carry, ref_out = reference(reference.initial_carry(b), b)
    _, ref = act_loss(ref_out, ref_carry.batch["labels"], ref_carry.halted, ref_carry.steps)
    torch.testing.assert_close(metrics["lm_loss"], ref["lm_loss"])
    torch.testing.assert_close(metrics["q_halt_loss"], ref["q_halt_loss"])


def test_evaluation_has_no_target_whatever_the_rule():
    for q_target in ("extra_segment", "lagged", "none"):
        m = make(q_target).eval()
        b = batch(2, 6)
        carry, out = m(m.initial_carry(b), b)
        assert "target_q_continue" not in out and carry.q_state is None
