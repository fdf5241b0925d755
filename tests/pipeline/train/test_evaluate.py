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
