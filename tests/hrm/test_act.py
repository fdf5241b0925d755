"""Adaptive computation time: halting, exploration, restarts, the Q-continue target."""

import pytest
import torch

from hrm.config import model_config
from hrm.model import HRM


def make(M=4, eps=0.0, variant="hrm", **kw):
    if variant == "trm":
        kw = dict(variant="trm", h_layers=0, **kw)
    return HRM(model_config("debug", vocab_size=11, seq_len=8, halt_max_steps=M, halt_exploration_prob=eps, **kw))


def batch(B, offset=0):
    """B rows of random tokens, different for each ``offset``; ``row`` numbers the examples from ``offset``."""
    return {"inputs": torch.randint(1, 11, (B, 8), generator=torch.Generator().manual_seed(offset)),
            "labels": torch.full((B, 8), 3), "puzzle_ids": torch.zeros(B, dtype=torch.long),
            "row": torch.arange(B) + offset}


def set_q(m, halt: float, cont: float):
    with torch.no_grad():
        m.q_head.weight.zero_()
        m.q_head.bias.copy_(torch.tensor([halt, cont]))


def halting_steps(m, B, calls):
    """Steps at which each row of the first batch halted."""
    b = batch(B)
    carry = m.initial_carry(b)
    done = torch.zeros(B, dtype=torch.int32)
    for _ in range(calls):
        carry, _ = m(carry, b)
        done = torch.where((done == 0) & carry.halted, carry.steps, done)
    return done


@pytest.mark.parametrize("variant", ["hrm", "trm"])
def test_eval_runs_exactly_m_max_segments(variant):
    m = make(M=5, variant=variant).eval()
    set_q(m, 10.0, -10.0)  # would halt at once in training
    assert halting_steps(m, 4, 5).tolist() == [5, 5, 5, 5]
    b = batch(4)
    _, out = m(m.initial_carry(b), b)
    assert "target_q_continue" not in out


def test_training_halts_when_q_halt_beats_q_continue():
    m = make(M=6).train()
    set_q(m, 1.0, 0.0)
    assert halting_steps(m, 4, 6).tolist() == [1, 1, 1, 1]
    set_q(m, 0.0, 1.0)
    assert halting_steps(m, 4, 6).tolist() == [6, 6, 6, 6]


def test_trm_halts_on_positive_q_halt_only():
    m = make(M=6, variant="trm").train()
    set_q(m, -0.5, -10.0)  # q_halt > q_continue but negative: TRM keeps going
    assert halting_steps(m, 3, 6).tolist() == [6, 6, 6]
    set_q(m, 0.5, 10.0)
    assert halting_steps(m, 3, 6).tolist() == [1, 1, 1]
    b = batch(3)
    _, out = m(m.initial_carry(b), b)
    assert "target_q_continue" not in out


@pytest.mark.parametrize(("variant", "q", "adaptive_steps"), [
    ("hrm", (1.0, 0.0), 1), ("hrm", (0.0, 1.0), 4),
    ("trm", (0.5, 10.0), 1), ("trm", (-0.5, -10.0), 4),  # TRM: q_halt > 0, whatever q_continue says
])
def test_solve_stops_where_the_model_would_halt(variant, q, adaptive_steps):
    from hrm.solve import solve
    from hrm.tasks.sudoku import SudokuTask

    task = SudokuTask((2, 2))
    m = HRM(model_config("debug", vocab_size=task.vocab_size, seq_len=task.seq_len, halt_max_steps=4,
                         **({"variant": "trm", "h_layers": 0} if variant == "trm" else {})))
    set_q(m, *q)
    puzzles = ["1.3.....2...4..1", "..4.4.....1...3."]
    assert [s.steps for s in solve(m, task, puzzles)] == [adaptive_steps] * 2
    assert [s.steps for s in solve(m, task, puzzles, adaptive=False)] == [4, 4]


def test_exploration_respects_its_minimum():
    M = 5
    m = make(M=M, eps=1.0).train()
    set_q(m, 1.0, 0.0)  # wants to halt at once; exploration forces a minimum from uniform{2..M}
    steps = halting_steps(m, 400, M)
    assert steps.min() >= 2 and steps.max() <= M
    assert set(steps.tolist()) == set(range(2, M + 1))
    m = make(M=M, eps=0.3).train()
    set_q(m, 1.0, 0.0)
    share_at_one = (halting_steps(m, 2000, M) == 1).float().mean().item()
    assert abs(share_at_one - 0.7) < 0.05


def test_halted_rows_take_new_examples_and_restart():
    m = make(M=3).train()
    set_q(m, 0.0, 1.0)  # never halts before M
    b1, b2 = batch(4, offset=0), batch(4, offset=100)
    carry = m.initial_carry(b1)
    carry, _ = m(carry, b1)
    carry.halted = torch.tensor([True, False, True, False])
    z_h_before = carry.z_h.clone()
    new, _ = m(carry, b2)
    assert new.batch["row"].tolist() == [100, 1, 102, 3]
    for r, source in enumerate((b2, b1, b2, b1)):  # halted rows took the new batch's example, the others kept theirs
        assert torch.equal(new.batch["inputs"][r], source["inputs"][r])
    assert new.steps.tolist() == [1, 2, 1, 2]
    # A restarted row computes exactly what a fresh carry computes on its example.
    fresh, _ = m(m.initial_carry(b2), b2)
    torch.testing.assert_close(new.z_h[0], fresh.z_h[0])
    assert not torch.allclose(new.z_h[1], fresh.z_h[1])
    assert not torch.allclose(z_h_before[1], new.z_h[1])


def test_q_continue_target_bootstraps_from_extra_segment():
    m = make(M=2).train()
    with torch.no_grad():
        m.q_head.weight.normal_()
    b = batch(3)
    torch.manual_seed(1)
    carry, out = m(m.initial_carry(b), b)
    _, (_, qh, qc) = m.reason(carry.z_h, carry.z_l, carry.batch)
    torch.testing.assert_close(out["target_q_continue"], torch.sigmoid(torch.maximum(qh, qc)))
    carry.halted = torch.zeros(3, dtype=torch.bool)
    carry, out = m(carry, b)  # step 2 = M_max: the target is q_halt′ alone
    assert carry.steps.tolist() == [2, 2, 2]
    _, (_, qh, _) = m.reason(carry.z_h, carry.z_l, carry.batch)
    torch.testing.assert_close(out["target_q_continue"], torch.sigmoid(qh))
