"""hrm.infer: the one ACT inference loop, against a plain reference loop written here."""

import pytest
import torch

from hrm.config import model_config
from hrm.infer import infer
from hrm.model import HRM


def make(M=4, variant="hrm", seed=0):
    torch.manual_seed(seed)
    kw = dict(variant="trm", h_layers=0) if variant == "trm" else {}
    return HRM(model_config("debug", vocab_size=11, seq_len=8, halt_max_steps=M, **kw))


def batch(B=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"inputs": torch.randint(1, 11, (B, 8), generator=g), "puzzle_ids": torch.zeros(B, dtype=torch.long)}


@torch.no_grad()
def reference(model, b, S):
    """Every segment's argmax and Q-values for S segments, each row kept on its puzzle: (S, B, L), (S, B), (S, B)."""
    model.eval()
    carry = model.initial_carry(b)
    preds, qh, qc = [], [], []
    for _ in range(S):
        carry, out = model(carry, b)
        carry.halted = torch.zeros_like(carry.halted)
        preds.append(out["logits"].argmax(-1))
        qh.append(out["q_halt"])
        qc.append(out["q_continue"])
    return torch.stack(preds), torch.stack(qh), torch.stack(qc)


def set_q_per_row(model, wants_at: list[int]):
    """Make row r want to halt from segment wants_at[r] on (0: never), by wrapping the model's q-head output."""
    forward = model.forward

    def patched(carry, b):
        carry, out = forward(carry, b)
        step = carry.steps.long()  # segments run so far on each row, this one included
        want = torch.tensor([w > 0 for w in wants_at]) & (step >= torch.tensor(wants_at))
        out["q_halt"] = torch.where(want, torch.full_like(out["q_halt"], 5.0), torch.full_like(out["q_halt"], -5.0))
        out["q_continue"] = torch.zeros_like(out["q_continue"])
        return carry, out

    model.forward = patched
    return model


@pytest.mark.parametrize("variant", ["hrm", "trm"])
@pytest.mark.parametrize("max_steps", [None, 2, 9])  # the trained M_max (4), fewer, and past it
def test_full_run_equals_reference(variant, max_steps):
    model, b = make(variant=variant), batch()
    S = max_steps or 4
    preds, qh, qc = reference(model, b, S)
    got = infer(model, b, max_steps=max_steps, keep_steps=True)
    assert torch.equal(got.per_step["preds"], preds)
    assert torch.allclose(got.per_step["q_halt"], qh) and torch.allclose(got.per_step["q_continue"], qc)
    assert torch.equal(got.preds, preds[-1]) and got.steps.tolist() == [S] * 6
    assert torch.allclose(got.q_halt, qh[-1].float())
    wants = qh > 0 if model.config.halt_target == "none" else qh > qc  # no continue head: halt_target none
    first = [int(w.nonzero()[0]) + 1 if w.any() else S for w in wants.T]
    assert got.halt_step.tolist() == first


def test_adaptive_takes_each_rows_first_halt():
    model = set_q_per_row(make(M=4), wants_at=[1, 3, 0, 2, 4, 0])
    b = batch()
    preds, _, _ = reference(make(M=4), b, 6)  # same weights (same seed), unpatched: the argmax per segment
    got = infer(model, b, max_steps=6, adaptive=True)
    assert got.steps.tolist() == [1, 3, 6, 2, 4, 6]  # never wanting: the last segment
    assert got.halt_step.tolist() == [1, 3, 6, 2, 4, 6]
    for r, s in enumerate(got.steps.tolist()):
        assert torch.equal(got.preds[r], preds[s - 1, r])
    assert got.confidence.tolist() == pytest.approx([torch.sigmoid(torch.tensor(5.0)).item() if w else
                                                     torch.sigmoid(torch.tensor(-5.0)).item()
                                                     for w in [1, 3, 0, 2, 4, 0]])


def test_adaptive_stops_the_batch_once_every_row_halted():
    model = set_q_per_row(make(M=4), wants_at=[2, 1, 2])
    calls = []
    inner = model.forward
    model.forward = lambda carry, b: (calls.append(1), inner(carry, b))[1]
    got = infer(model, batch(3), max_steps=50, adaptive=True)
    assert len(calls) == 2 and got.steps.tolist() == [2, 1, 2] and got.per_step is None


def test_not_adaptive_ignores_halting_and_restores_training_mode():
    model = set_q_per_row(make(M=4), wants_at=[1, 1])
    model.train()
    got = infer(model, batch(2), adaptive=False)
    assert got.steps.tolist() == [4, 4] and got.halt_step.tolist() == [1, 1] and model.training


@pytest.mark.parametrize("bad", [0, -3])
def test_max_steps_below_one_is_refused(bad):
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        infer(make(), batch(), max_steps=bad)
