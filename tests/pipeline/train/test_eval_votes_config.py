"""The training job's periodic evaluation can vote (``eval_votes``, issue #11): off by default, checked in range,
and passed to ``evaluate`` by the worker."""

import pytest

from pipeline.core.config_io import from_dict
from pipeline.train.config import TrainConfig


def test_off_by_default():
    assert TrainConfig().eval_votes == 1
    assert from_dict(TrainConfig, {"eval_votes": 8}).eval_votes == 8


@pytest.mark.parametrize(("votes", "message"), [(0, "eval_votes must be >= 1, got 0"),
                                                (-3, "eval_votes must be >= 1, got -3"),
                                                (1025, "eval_votes must be at most 1024, got 1025")])
def test_out_of_range_is_refused(votes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(eval_votes=votes)


def test_the_worker_passes_it_to_evaluate(monkeypatch):
    """evaluate_and_checkpoint hands ``eval_votes`` and the run's seed to evaluate (stopped right after the call)."""
    from types import SimpleNamespace

    from pipeline.train import worker

    seen = {}

    class Stop(Exception):
        pass

    def fake(model, arrays, task, **kw):
        seen.update(kw, model=model)
        raise Stop

    monkeypatch.setattr(worker, "evaluate", fake)
    w = SimpleNamespace(ema=None, model="the model", evals=SimpleNamespace(arrays={}, task=None, arc_refs=None),
                        cfg=TrainConfig(eval_votes=4, seed=9, global_batch_size=8), rank=0, world=1, device="cpu")
    with pytest.raises(Stop):
        worker.evaluate_and_checkpoint(w)
    assert (seen["model"], seen["votes"], seen["seed"], seen["batch_size"]) == ("the model", 4, 9, 8)


@pytest.mark.parametrize(("votes", "refused"), [(8, False), (9, True)])
def test_more_votes_than_the_task_has_symmetries_are_refused_before_training(votes, refused):
    """prepare's check_eval_votes: a maze has 8 symmetries, so eval_votes 9 fails up front, not at the first eval."""
    from types import SimpleNamespace

    from pipeline.train.run import check_eval_votes

    meta = SimpleNamespace(task="maze", task_args={"size": 7})
    if refused:
        with pytest.raises(ValueError, match=r"^eval_votes: maze has 8 symmetries"):
            check_eval_votes(TrainConfig(eval_votes=votes), meta)
    else:
        check_eval_votes(TrainConfig(eval_votes=votes), meta)
