"""hrm.vote.answer: votes = 1 is plain inference; oracle "models" show what the vote does; bad input is refused."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hrm.config import model_config
from hrm.infer import infer
from hrm.model import HRM
from hrm.tasks import arc_scoring
from hrm.tasks.arc import ArcTask, crop, encode_grid, encode_pair
from hrm.tasks.base import Task
from hrm.tasks.maze import FREE, PATH, MazeTask, generate_many, solve
from hrm.tasks.sudoku import SudokuTask
from hrm.tasks.sudoku_solver import solve as solve_sudoku
from hrm.vote import MAX_STEPS_CAP, MAX_VOTES, answer, vote


class Oracle(nn.Module):
    """A fake model with the HRM interface ``infer`` uses: every segment it answers ``rule(row)`` for each input
    row (one-hot logits), with q_halt ``q(row)`` and q_continue 0 (so it wants to halt where q_halt > 0)."""

    def __init__(self, vocab: int, rule, q=lambda row: 5.0, M: int = 2):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(halt_max_steps=M)
        self.vocab, self.rule, self.q = vocab, rule, q
        self.batches: list[int] = []

    def initial_carry(self, batch):
        B = len(batch["inputs"])
        return SimpleNamespace(halted=torch.ones(B, dtype=torch.bool), steps=torch.zeros(B, dtype=torch.int32))

    def wants_halt(self, q_halt, q_continue):
        return q_halt > q_continue

    def forward(self, carry, batch):
        rows = batch["inputs"].cpu().numpy().astype(np.uint8)
        self.batches.append(len(rows))
        ans = torch.as_tensor(np.stack([self.rule(r) for r in rows]).astype(np.int64))
        q = torch.tensor([float(self.q(r)) for r in rows])
        carry.steps = carry.steps + 1
        return carry, {"logits": F.one_hot(ans, self.vocab).float(), "q_halt": q, "q_continue": torch.zeros_like(q)}


def wrong_on(bad: set, right, wrong):
    """A rule that answers ``wrong(row)`` on the input rows in ``bad`` (bytes) and ``right(row)`` elsewhere."""
    return lambda row: wrong(row) if row.tobytes() in bad else right(row)


def images(task, inputs, votes, seed, which):
    """The transformed inputs of the symmetries ``which`` (indices) that ``answer(votes, seed)`` will draw."""
    syms = task.symmetries(votes, np.random.default_rng(seed))
    return {row.tobytes() for i in which for row in syms[i].apply(inputs)}


# ------------------------------------------------------------------------------------------------------ data
def sudoku(box=(2, 3), count=5, seed=0):
    task = SudokuTask(box=box)
    p, s, _, _ = task.generate_many(seed, count)
    x, y = zip(*(task.encode(i) for i in zip(p, s)))

    def oracle(row):
        return solve_sudoku(task.decode(row), task.box)[0].reshape(-1).astype(np.uint8) + 1

    return task, np.stack(x), np.stack(y), oracle


def maze(count=6, seed=3, size=10):
    q, a = generate_many(seed, count, size, 12)
    x, y = q.reshape(count, -1), a.reshape(count, -1)
    return MazeTask(size, 12), x, y, lambda r: solve(r.reshape(size, size)).ravel()


def arc(count=5, seed=0):
    """The copy rule: the output is the input grid."""
    rng = np.random.default_rng(seed)
    pairs = [encode_pair(g, g) for g in (rng.integers(0, 10, rng.integers(2, 9, 2)).astype(np.uint8)
                                         for _ in range(count))]
    x, y = (np.stack(v) for v in zip(*pairs))
    return ArcTask(), x, y, lambda row: encode_grid(crop(row))


def zeros_grid(row):
    return encode_grid(np.zeros_like(crop(row)))  # a wrong ARC answer that maps back onto itself


def exact(task, preds, labels):
    return np.mean([task.score(p, y, y)["exact"] for p, y in zip(preds, labels)])


def hrm_model(task, M=3, seed=0):
    torch.manual_seed(seed)
    return HRM(model_config("debug", vocab_size=task.vocab_size, seq_len=task.seq_len, halt_max_steps=M))


# ------------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("max_steps,adaptive", [(None, False), (2, True), (5, False), (5, True)])
def test_one_vote_is_plain_inference(max_steps, adaptive):
    task, x, _, _ = sudoku(box=(2, 2), count=6)
    model = hrm_model(task)
    ids = torch.zeros(len(x), dtype=torch.long)
    ref = infer(model, {"inputs": torch.as_tensor(x, dtype=torch.long), "puzzle_ids": ids}, max_steps=max_steps,
                adaptive=adaptive)
    got = answer(model, task, x, votes=1, max_steps=max_steps, adaptive=adaptive)
    assert got.preds.dtype == np.uint8 and np.array_equal(got.preds, ref.preds.numpy())
    assert np.array_equal(got.steps, ref.steps.numpy())
    assert np.allclose(got.confidence, ref.confidence.numpy())
    assert got.forward_passes == int(np.ceil(ref.steps.sum().item() / len(x)))


@pytest.mark.parametrize("make", [sudoku, maze, arc], ids=["sudoku", "maze", "arc"])
def test_an_oracle_gets_everything_under_every_transform(make):
    task, x, y, oracle = make()
    model = Oracle(task.vocab_size, oracle, M=2)
    got = answer(model, task, x, votes=8, seed=4)
    if task.name == "maze":  # a turned maze's shortest path, mapped back, may be another shortest path: votes split
        assert all(task.score(p, l, q)["valid_optimal"] for p, l, q in zip(got.preds, y, x))
        assert np.all(got.agreement >= 0.5)
    else:
        assert exact(task, got.preds, y) == 1.0 and np.allclose(got.agreement, 1.0)
    assert np.allclose(got.confidence, 1 / (1 + np.exp(-5.0)))
    assert model.batches == [8 * len(x)] * 2  # all N·B rows as one batch, M_max segments
    assert got.forward_passes == 16 and np.allclose(got.steps, 2.0)


def test_maze_votes_for_other_shortest_paths_still_give_a_shortest_path():
    """A turned maze's shortest path, mapped back, need not be the labels' path: the winner is still a valid
    shortest path (the scorer's valid_optimal), though no longer always the labels' one (exact)."""
    task, x, y, oracle = maze(count=12)
    syms = task.symmetries(8, np.random.default_rng(0))
    differs = sum(int((s.invert(np.stack([oracle(r) for r in s.apply(x)])) != y).any(1).sum()) for s in syms)
    assert differs >= 1  # the premise: some mapped-back answers are other paths than the labels'
    got = answer(Oracle(6, oracle), task, x, votes=8, seed=0)
    assert all(task.score(p, l, q)["valid_optimal"] for p, l, q in zip(got.preds, y, x))
    assert np.all(got.agreement > 0)


@pytest.mark.parametrize("n_wrong,winner_right", [(2, True), (3, False)])
def test_the_majority_wins(n_wrong, winner_right):
    task, x, y, oracle = arc()
    bad = images(task, x, 5, 1, range(n_wrong))  # the identity among the wrong ones
    got = answer(Oracle(12, wrong_on(bad, oracle, zeros_grid)), task, x, votes=5, seed=1)
    assert exact(task, got.preds, y) == float(winner_right)
    assert np.allclose(got.agreement, (5 - n_wrong) / 5 if winner_right else n_wrong / 5)


@pytest.mark.parametrize("right_q,winner_right", [(3.0, True), (-3.0, False)])
def test_ties_go_to_the_more_confident(right_q, winner_right):
    task, x, y, oracle = arc()
    bad = images(task, x, 4, 2, [1, 3])
    right = {r.tobytes() for r in x} | images(task, x, 4, 2, [2])
    model = Oracle(12, wrong_on(bad, oracle, zeros_grid), q=lambda r: right_q if r.tobytes() in right else 0.0)
    got = answer(model, task, x, votes=4, seed=2)
    assert exact(task, got.preds, y) == float(winner_right)
    assert np.allclose(got.agreement, 0.5)


def test_sudoku_invalid_votes_are_dropped():
    task, x, y, oracle = sudoku()
    bad = images(task, x, 5, 0, range(3))  # 3 of 5 votes keep the blanks: not a solution
    got = answer(Oracle(task.vocab_size, wrong_on(bad, oracle, lambda r: r)), task, x, votes=5)
    assert exact(task, got.preds, y) == 1.0 and np.allclose(got.agreement, 1.0)


def broken_path(size):
    def rule(row):
        a = solve(row.reshape(size, size)).ravel()
        a[np.flatnonzero(a == PATH)[len(a[a == PATH]) // 2]] = FREE  # a gap in the middle of the path
        return a

    return rule


@pytest.mark.parametrize("wrong", ["no_path", "broken"])
def test_maze_rejects_invalid_mapped_back_paths(wrong):
    task, x, y, oracle = maze()
    bad = images(task, x, 8, 5, range(6))  # 6 of 8 votes invalid, the identity's included
    rule = (lambda r: r) if wrong == "no_path" else broken_path(task.size)
    got = answer(Oracle(6, wrong_on(bad, oracle, rule)), task, x, votes=8, seed=5)
    # the 2 valid votes win over the 6 invalid ones (identical junk: it would win a plain majority)
    assert all(task.score(p, l, q)["valid_optimal"] for p, l, q in zip(got.preds, y, x))
    assert np.all(got.agreement >= 0.5)


def test_no_valid_vote_falls_back_to_the_identity():
    task, x, y, _ = maze()
    got = answer(Oracle(6, lambda r: r, q=lambda r: -1.0), task, x, votes=4, seed=0)
    assert np.array_equal(got.preds, x) and np.allclose(got.agreement, 0.0)
    assert np.allclose(got.confidence, 1 / (1 + np.exp(1.0)))


def test_deterministic_for_a_seed_and_chunking_changes_nothing():
    task, x, _, _ = sudoku(box=(2, 2), count=6)
    model = hrm_model(task)
    a = answer(model, task, x, votes=4, seed=3)
    b = answer(model, task, x, votes=4, seed=3, batch_size=5)
    for k in ("preds", "confidence", "agreement", "steps"):
        assert np.allclose(getattr(a, k), getattr(b, k))
    oracle = Oracle(task.vocab_size, lambda r: r)
    answer(oracle, task, x, votes=4, seed=3, batch_size=5)
    assert oracle.batches == [5] * 8 + [4] * 2  # 24 rows in chunks of 5, two segments each


def test_an_empty_batch_runs_nothing():
    task, x, _, oracle = sudoku(box=(2, 2), count=2)
    model = Oracle(task.vocab_size, oracle)
    got = answer(model, task, x[:0], votes=4)
    assert got.preds.shape == (0, 16) and got.forward_passes == 0 and model.batches == []


def test_arc_scoring_shares_the_vote():
    assert arc_scoring.vote is vote


@pytest.mark.parametrize("kw,msg", [
    (dict(votes=0), "votes must be between 1 and 1024, got 0"),
    (dict(votes=MAX_VOTES + 1), "got 1025"),
    (dict(max_steps=0), "max_steps must be between 1 and 1024, got 0"),
    (dict(max_steps=MAX_STEPS_CAP + 1), "between 1 and 1024, got 1025"),
])
def test_bad_settings_are_refused(kw, msg):
    task, x, _, oracle = sudoku(box=(2, 2), count=2)
    model = Oracle(task.vocab_size, oracle)
    with pytest.raises(ValueError, match=msg):
        answer(model, task, x, **kw)
    assert model.batches == []  # refused before any work


def test_votes_on_a_task_without_symmetries_are_refused():
    class Plain(SudokuTask):
        name = "plain"
        symmetries = Task.symmetries

    task = Plain(box=(2, 2))
    _, x, _, oracle = sudoku(box=(2, 2), count=2)
    with pytest.raises(ValueError, match="plain has no symmetries to vote over"):
        answer(Oracle(task.vocab_size, oracle), task, x, votes=2)
    assert answer(Oracle(task.vocab_size, oracle), task, x, votes=1).preds.shape == x.shape  # one vote: no need


def test_inputs_of_the_wrong_shape_are_refused():
    task, x, _, oracle = sudoku(box=(2, 2), count=2)
    with pytest.raises(ValueError, match=r"inputs must be \(B, 16\) tokens for sudoku"):
        answer(Oracle(task.vocab_size, oracle), task, x[:, :10])
