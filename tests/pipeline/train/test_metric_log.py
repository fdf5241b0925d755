"""Train metrics between logs: per-example metrics averaged over the rows that halted, losses per step."""

import pytest
import torch

from pipeline.train.metric_log import MetricLog


def step(count, exact, lm_loss):
    return {"count": torch.tensor(count), "accuracy": torch.tensor(0.5 * count), "exact_accuracy": torch.tensor(exact),
            "q_halt_accuracy": torch.tensor(count), "steps": torch.tensor(2 * count), "lm_loss": torch.tensor(lm_loss),
            "q_halt_loss": torch.tensor(0.1), "grad_norm": torch.tensor(1.0)}


def test_averages_over_the_rows_that_halted():
    log = MetricLog()
    log.add(step(0, 0, 4.0))  # no row halted in this step: it adds no example
    log.add(step(3, 2, 2.0))
    out = log.read(world=1)
    assert out["train/exact_accuracy"] == pytest.approx(2 / 3)
    assert out["train/steps"] == pytest.approx(2.0) and out["train/accuracy"] == pytest.approx(0.5)
    assert out["train/lm_loss"] == pytest.approx(3.0)  # losses: per step, over both steps


def test_an_interval_without_halted_rows_logs_no_per_example_metric():
    log = MetricLog()
    log.add(step(0, 0, 4.0))
    out = log.read(world=1)
    assert not {"train/accuracy", "train/exact_accuracy", "train/q_halt_accuracy", "train/steps"} & set(out)
    assert out["train/lm_loss"] == pytest.approx(4.0) and out["train/grad_norm"] == pytest.approx(1.0)
    log.add(step(2, 2, 1.0))  # the sums were reset by the read
    assert log.read(world=1)["train/exact_accuracy"] == pytest.approx(1.0)
