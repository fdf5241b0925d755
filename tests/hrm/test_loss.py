import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hrm.loss import IGNORE, act_loss, softmax_cross_entropy, stablemax_cross_entropy


def test_stablemax_against_formula():
    logits = torch.tensor([[[-2.0, 0.0, 3.0], [0.5, -0.5, 1.5]]])
    labels = torch.tensor([[2, IGNORE]])
    s = lambda x: 1 / (1 - x) if x < 0 else x + 1  # noqa: E731
    row = [-2.0, 0.0, 3.0]
    expected = -math.log(s(3.0) / sum(s(x) for x in row))
    got = stablemax_cross_entropy(logits, labels)
    assert got.dtype == torch.float64
    assert got[0, 0].item() == pytest.approx(expected, rel=1e-12)
    assert got[0, 1].item() == 0.0


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
def test_stablemax_gradient_where_a_logit_is_exactly_one(dtype, tol):
    row, label = [1.0, -3.0, 0.0, 2.0], 3
    logits = torch.tensor([[row]], dtype=dtype, requires_grad=True)
    stablemax_cross_entropy(logits, torch.tensor([[label]])).sum().backward()
    # loss = -log s(x_y) + log Σ s(x_j); s(x) = x + 1 (x >= 0), 1/(1 - x) (x < 0); s'(x) = 1, 1/(1 - x)²
    s = [x + 1 if x >= 0 else 1 / (1 - x) for x in row]
    ds = [1.0 if x >= 0 else 1 / (1 - x) ** 2 for x in row]
    expected = [ds[j] / sum(s) - (ds[j] / s[j] if j == label else 0.0) for j in range(len(row))]
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[0, 0].double().tolist() == pytest.approx(expected, abs=tol)


def test_softmax_option_matches_torch():
    logits, labels = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    labels[0, 1] = IGNORE
    expected = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
    torch.testing.assert_close(softmax_cross_entropy(logits, labels), expected)


def test_act_loss_sums_and_metrics():
    V = 4
    labels = torch.tensor([[1, 2, IGNORE], [3, 3, 3], [1, 1, 1]])
    logits = torch.full((3, 3, V), -1.0)
    for r, row in enumerate([[1, 2, 0], [3, 0, 3], [1, 1, 1]]):  # row 0 exact, row 1 two of three, row 2 exact
        for t, tok in enumerate(row):
            logits[r, t, tok] = 2.0
    out = {"logits": logits, "q_halt": torch.tensor([1.0, -1.0, -2.0]), "q_continue": torch.zeros(3),
           "target_q_continue": torch.tensor([0.2, 0.5, 0.9])}
    halted = torch.tensor([True, True, False])
    steps = torch.tensor([2, 3, 1])
    total, m = act_loss(out, labels, halted, steps)
    ce = stablemax_cross_entropy(logits, labels)
    lm = ce[0, :2].mean() + ce[1].mean() + ce[2].mean()
    exact = torch.tensor([1.0, 0.0, 1.0])
    qh = F.binary_cross_entropy_with_logits(out["q_halt"], exact, reduction="sum")
    qc = F.binary_cross_entropy_with_logits(out["q_continue"], out["target_q_continue"], reduction="sum")
    assert total.item() == pytest.approx((lm + 0.5 * (qh + qc)).item(), rel=1e-6)
    assert m["count"].item() == 2  # only halted rows count
    assert m["exact_accuracy"].item() == 1
    assert m["accuracy"].item() == pytest.approx(1.0 + 2 / 3)
    assert m["q_halt_accuracy"].item() == 2  # row 0: q≥0 & exact; row 1: q<0 & not exact
    assert m["steps"].item() == 5
    assert np.isclose(m["q_continue_loss"].item(), qc.item())
