"""Evaluation metrics without Ray: ARC voting through the evaluator, and the halting step."""

import numpy as np
import pytest
import torch

from hrm.loss import IGNORE
from hrm.tasks.arc import augment_task, encode_test
from hrm.tasks.arc_sources import load_source
from pipeline.train.evaluate import arc_pass_at_k, halting_step


@pytest.fixture(scope="module")
def arc_rows():
    tasks = load_source("arc-agi-1/evaluation")
    refs, inputs, labels = [], [], []
    for tid in sorted(tasks)[:6]:
        r, x, y = encode_test(tid, augment_task(tasks[tid], n_variants=5, seed=0))
        refs += r
        inputs.append(np.asarray(x))
        labels.append(np.asarray(y))
    labels = np.concatenate(labels).astype(np.int64)
    return refs, {"inputs": np.concatenate(inputs), "labels": np.where(labels == 0, IGNORE, labels)}


def test_arc_pass_at_k_oracle_and_corrupted(arc_rows):
    refs, arrays = arc_rows
    truth = np.where(arrays["labels"] == IGNORE, 0, arrays["labels"]).astype(np.uint8)
    idx = np.arange(len(refs))
    half = len(idx) // 2  # as if two workers had predicted a half each
    ok = arc_pass_at_k(refs, arrays, idx, [truth[:half], truth[half:]], [np.ones(half), np.ones(len(idx) - half)], 1)
    assert ok == {"eval/pass_at_1": 1.0, "eval/pass_at_2": 1.0}
    wrong = truth.copy()
    wrong[wrong >= 2] = 2 + (wrong[wrong >= 2] - 1) % 10  # every colour shifted: no variant votes for the answer
    bad = arc_pass_at_k(refs, arrays, idx, [wrong], [np.ones(len(idx))], 1)
    assert bad == {"eval/pass_at_1": 0.0, "eval/pass_at_2": 0.0}


def test_halting_step_is_the_first_q_halt_win():
    q_halt = torch.tensor([[0.0, 1.0, -1.0], [2.0, 1.0, -1.0], [3.0, 1.0, -1.0]])  # (S, B)
    q_cont = torch.tensor([[1.0, 0.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    assert halting_step(q_halt > q_cont).tolist() == [2, 1, 3]


def test_reduce_sums_averages_over_the_rows_and_names_the_steps():
    from pipeline.train.evaluate import reduce_sums

    sums = {"count": 4.0, "exact_accuracy": 3.0, "accuracy": 2.0}
    metrics = reduce_sums(sums, torch.tensor([1.0, 3.0], dtype=torch.float64), world=1)
    assert metrics == {"eval/exact_accuracy": 0.75, "eval/accuracy": 0.5, "eval/exact_accuracy_step_1": 0.25,
                       "eval/exact_accuracy_step_2": 0.75, "eval/count": 4.0}
    assert reduce_sums({"count": 0.0, "accuracy": 0.0}, torch.zeros(1, dtype=torch.float64), 1)["eval/count"] == 1.0


# --- one ACT loop (hrm.infer) behind evaluate, checked against a hand-written reference -------------------------

def tiny_sudoku(M=3, seed=0):
    """A fresh debug-flavour HRM for 4×4 Sudoku (M_max ``M``) and its task."""
    from hrm.config import model_config
    from hrm.model import HRM
    from hrm.tasks.sudoku import SudokuTask

    task = SudokuTask((2, 2))
    torch.manual_seed(seed)
    model = HRM(model_config("debug", vocab_size=task.vocab_size, seq_len=task.seq_len, num_puzzle_identifiers=1,
                             halt_max_steps=M, forward_dtype="float32")).eval()
    return model, task


@torch.no_grad()
def old_loop(model, inputs: np.ndarray, S: int):
    """The loop evaluate ran before hrm.infer: S segments on one batch, no carry reset (S <= M_max)."""
    b = {"inputs": torch.as_tensor(inputs, dtype=torch.long), "puzzle_ids": torch.zeros(len(inputs), dtype=torch.long)}
    b["labels"] = torch.zeros_like(b["inputs"])
    carry = model.initial_carry(b)
    preds, qh, qc = [], [], []
    for _ in range(S):
        carry, out = model(carry, b)
        preds.append(out["logits"].argmax(-1))
        qh.append(out["q_halt"])
        qc.append(out["q_continue"])
    return torch.stack(preds).numpy(), torch.stack(qh).numpy(), torch.stack(qc).numpy()


@pytest.fixture(scope="module")
def sudoku_rows():
    """12 puzzles whose labels make the untrained model partly right: rows 0-3 are its own last-step answers, rows 4-5
    its first-step answers, rows 6-11 real solutions; givens (input token >= 2) are not scored."""
    model, task = tiny_sudoku()
    puzzles, solutions, _, _ = task.generate_many(0, 12)
    enc = [task.encode((p, s)) for p, s in zip(puzzles, solutions)]
    inputs = np.stack([x for x, _ in enc]).astype(np.int64)
    labels = np.stack([y for _, y in enc]).astype(np.int64)
    preds, _, _ = old_loop(model, inputs, 3)
    labels[:4], labels[4:6] = preds[-1][:4], preds[0][4:6]
    labels = np.where(inputs >= 2, IGNORE, labels)
    return {"inputs": inputs, "labels": labels, "puzzle_ids": np.zeros(12, np.int64)}


def hand_metrics(model, task, arrays, S):
    """evaluate's metrics computed row by row with numpy from the old loop's outputs."""
    preds, qh, qc = old_loop(model, arrays["inputs"], S)
    mask = arrays["labels"] != IGNORE
    right = (preds == arrays["labels"]) | ~mask  # (S, B, L)
    exact = right.all(-1)  # (S, B)
    wants = qh > qc
    halt = np.where(wants.any(0), wants.argmax(0) + 1, S)
    acc = ((preds[-1] == arrays["labels"]) & mask).sum(-1) / mask.sum(-1)
    out = {"eval/exact_accuracy": exact[-1].mean(), "eval/accuracy": acc.mean(),
           "eval/q_halt_accuracy": ((qh[-1] >= 0) == exact[-1]).mean(), "eval/steps": halt.mean(),
           "eval/count": float(len(exact[-1]))}
    out.update({f"eval/exact_accuracy_step_{s + 1}": exact[s].mean() for s in range(S)})
    labels = np.where(mask, arrays["labels"], 0)
    for p, y, x in zip(preds[-1], labels, arrays["inputs"]):
        for key, ok in task.score(p, y, x).items():
            if key != "exact":
                out[f"eval/task_{key}"] = out.get(f"eval/task_{key}", 0.0) + ok / len(labels)
    return out


def test_predict_equals_the_old_loop(sudoku_rows):
    from pipeline.train.evaluate import predict

    model, _ = tiny_sudoku()
    b = {k: torch.as_tensor(v) for k, v in sudoku_rows.items()}
    got = predict(model, b)
    want = old_loop(model, sudoku_rows["inputs"], 3)
    for key, ref in zip(["preds", "q_halt", "q_continue"], want):
        assert got[key].shape[0] == 3
        np.testing.assert_array_equal(got[key].numpy(), ref)


@pytest.mark.parametrize("batch_size", [12, 5])
def test_evaluate_equals_a_hand_computed_reference(sudoku_rows, batch_size):
    from pipeline.train.evaluate import evaluate

    model, task = tiny_sudoku()
    got = evaluate(model, sudoku_rows, task, batch_size=batch_size, device="cpu")
    want = hand_metrics(model, task, sudoku_rows, 3)
    assert set(got) == set(want)
    assert got == pytest.approx(want)
    assert got["eval/exact_accuracy"] >= 4 / 12 and got["eval/exact_accuracy_step_1"] >= 2 / 12  # not all zeros


def test_evaluate_runs_past_m_max_and_keeps_the_first_steps(sudoku_rows):
    from pipeline.train.evaluate import evaluate

    model, task = tiny_sudoku()
    plain = evaluate(model, sudoku_rows, task, batch_size=12, device="cpu")
    deep = evaluate(model, sudoku_rows, task, batch_size=12, device="cpu", max_steps=5)
    assert [k for k in deep if "_step_" in k] == [f"eval/exact_accuracy_step_{s}" for s in range(1, 6)]
    for s in (1, 2, 3):
        assert deep[f"eval/exact_accuracy_step_{s}"] == plain[f"eval/exact_accuracy_step_{s}"]
    short = evaluate(model, sudoku_rows, task, batch_size=12, device="cpu", max_steps=1)
    assert short["eval/exact_accuracy"] == plain["eval/exact_accuracy_step_1"]


def test_one_vote_keeps_the_metric_names(sudoku_rows):
    from pipeline.train.evaluate import evaluate

    model, task = tiny_sudoku()
    assert evaluate(model, sudoku_rows, task, batch_size=12, device="cpu", votes=1) == \
        evaluate(model, sudoku_rows, task, batch_size=12, device="cpu")


class FakeVoted:
    def __init__(self, preds, passes):
        self.preds, self.forward_passes = preds, passes


def oracle_votes(monkeypatch, right_from: int):
    """hrm.vote stood in for by an oracle: the true answer from ``right_from`` votes on, a wrong one below."""
    import pipeline.train.evaluate as ev

    calls = []

    def fake(model, task, rows, *, votes, max_steps, seed, batch_size=None):
        calls.append((votes, max_steps, seed, len(rows["inputs"])))
        truth = np.where(rows["labels"] == IGNORE, rows["inputs"], rows["labels"]).astype(np.uint8)
        return FakeVoted(truth if votes >= right_from else truth * 0, votes * (max_steps or 3))

    monkeypatch.setattr(ev, "vote_batch", fake)
    return calls


def test_evaluate_adds_the_voted_exact_accuracy(sudoku_rows, monkeypatch):
    from pipeline.train.evaluate import evaluate

    calls = oracle_votes(monkeypatch, right_from=2)
    model, task = tiny_sudoku()
    got = evaluate(model, sudoku_rows, task, batch_size=5, device="cpu", votes=4, seed=7)
    plain = evaluate(model, sudoku_rows, task, batch_size=5, device="cpu")
    assert got.pop("eval/exact_accuracy_votes_4") == 1.0
    assert got == plain
    assert calls == [(4, 3, 7, 5), (4, 3, 7, 5), (4, 3, 7, 2)]


@pytest.mark.parametrize(("votes", "counts"), [(1, [1]), (2, [1, 2]), (4, [1, 2, 4]), (6, [1, 2, 4, 6]),
                                               (8, [1, 2, 4, 8])])
def test_vote_counts_double_up_to_votes(votes, counts):
    from pipeline.evaluate.curves import vote_counts

    assert vote_counts(votes) == counts


def test_votes_curve_scores_each_count_with_its_cost(sudoku_rows, monkeypatch):
    from pipeline.evaluate.curves import votes_curve

    calls = oracle_votes(monkeypatch, right_from=4)
    model, task = tiny_sudoku()
    points = votes_curve(model, sudoku_rows, task, counts=[1, 2, 4], max_steps=6, seed=3, batch_size=8)
    assert [(p["votes"], p["exact_accuracy"], p["forward_passes"]) for p in points] == \
        [(1, 0.0, 6), (2, 0.0, 12), (4, 1.0, 24)]
    assert all(p["seconds"] >= 0 for p in points)
    assert calls == [(n, 6, 3, rows) for n in (1, 2, 4) for rows in (8, 4)]


def test_curves_plot_has_both_panels():
    from pipeline.evaluate.curves import plot_curves

    fig = plot_curves([{"segment": s, "exact_accuracy": s / 4, "forward_passes": s} for s in (1, 2, 3, 4)],
                      [{"votes": n, "exact_accuracy": 0.5, "forward_passes": 4 * n} for n in (1, 2, 4)])
    assert [ax.get_xlabel() for ax in fig.axes] == ["ACT segments run", "votes (symmetries per puzzle)"]
    assert list(fig.axes[0].lines[0].get_ydata()) == [0.25, 0.5, 0.75, 1.0]


def test_reasoning_trace_equals_the_old_loop(sudoku_rows):
    """pipeline.explore.reasoning.trace (the reasoning notebook) runs hrm.infer: the same segments as before."""
    from pipeline.explore.reasoning import trace

    model, _ = tiny_sudoku()
    x = sudoku_rows["inputs"][6]
    preds, qh, qc = old_loop(model, x[None], 3)
    t = trace(model, x, sudoku_rows["labels"][6])
    assert [s.step for s in t.segments] == [1, 2, 3]
    for s, p, h, c in zip(t.segments, preds[:, 0], qh[:, 0], qc[:, 0]):
        np.testing.assert_array_equal(s.tokens, p.astype(np.uint8))
        assert (s.q_halt, s.q_continue, s.halts) == (pytest.approx(float(h)), pytest.approx(float(c)), bool(h > c))
    assert t.segments[0].changed.all()
    np.testing.assert_array_equal(t.segments[1].changed, preds[1, 0] != preds[0, 0])
    assert len(trace(model, x, max_steps=6).segments) == 6  # past M_max when asked


def test_evaluate_votes_through_hrm_vote(sudoku_rows):
    """With hrm.vote itself: 1 vote is plain inference; the voted accuracy is a share of the rows, deterministic."""
    from pipeline.evaluate.curves import votes_curve
    from pipeline.train.evaluate import evaluate, exact_rows, vote_batch

    model, task = tiny_sudoku()
    one = vote_batch(model, task, sudoku_rows, votes=1, max_steps=None, seed=0)
    plain = evaluate(model, sudoku_rows, task, batch_size=12, device="cpu")
    assert exact_rows(one.preds, sudoku_rows["labels"]).mean() == plain["eval/exact_accuracy"]
    voted = evaluate(model, sudoku_rows, task, batch_size=5, device="cpu", votes=4, seed=1)
    again = evaluate(model, sudoku_rows, task, batch_size=12, device="cpu", votes=4, seed=1)
    assert voted == pytest.approx(again)
    assert voted["eval/exact_accuracy_votes_4"] * 12 == pytest.approx(round(voted["eval/exact_accuracy_votes_4"] * 12))
    points = votes_curve(model, sudoku_rows, task, counts=[1, 4], seed=1, batch_size=12)
    assert points[0]["exact_accuracy"] == plain["eval/exact_accuracy"] and points[0]["forward_passes"] == 3
    assert points[1]["exact_accuracy"] == voted["eval/exact_accuracy_votes_4"] and points[1]["forward_passes"] == 12
