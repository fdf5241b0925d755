"""The training job end to end on a real local Ray and a real MLflow sqlite store."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from hrm.config import from_dict
from hrm.optim import lr_at
from pipeline.data.build import build_dataset
from pipeline.data.config import DataConfig
from pipeline.train.config import load_train_config
from pipeline.train.run import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from pipeline.ray_utils import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(workdir, ray_session):
    cfg = from_dict(DataConfig, {"name": "tiny", "task": "sudoku", "seed": 3, "sudoku": {
        "box": [2, 2], "count": 60, "min_rating": 0, "test_fraction": 0.2, "augmentations": 4,
        "chunk_size": 20}})
    return build_dataset(cfg, workdir / "data" / "tiny").path


def config(workdir, dataset, name, **overrides):
    base = {"name": name, "data": str(dataset), "storage_path": str(workdir / "runs"), "flavour": "debug",
            "model": {"halt_max_steps": 2, "halt_exploration_prob": 0.0}, "global_batch_size": 8,
            "max_steps": 6, "eval_interval": 3, "log_interval": 1, "eval_limit": 16, "eval_samples": 2,
            "optim": {"lr": 1e-3, "lr_warmup_steps": 2, "lr_min_ratio": 0.1},
            "tracking": {"tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}", "experiment": "tests",
                         "model_name": "hrm-test"}}
    for key, value in overrides.items():
        node = base
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return load_train_config(None, base)


def history(cfg, run_id, key):
    client = MlflowClient(cfg.tracking.tracking_uri)
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


@pytest.fixture(scope="module")
def one_worker(workdir, dataset):
    cfg = config(workdir, dataset, "one")
    return cfg, train(cfg)


def test_two_workers_match_one_worker(workdir, dataset, one_worker):
    cfg1, out1 = one_worker
    cfg2 = config(workdir, dataset, "two", **{"scaling.num_workers": 2, "scaling.cpus_per_worker": 0.5})
    out2 = train(cfg2)
    for key in ("train/lm_loss", "train/q_halt_loss", "train/accuracy", "train/grad_norm"):
        a, b = history(cfg1, out1.run_id, key), history(cfg2, out2.run_id, key)
        assert sorted(a) == sorted(b) == list(range(1, 7))
        for step in a:
            assert a[step] == pytest.approx(b[step], rel=2e-4, abs=1e-6), (key, step)


def test_mlflow_holds_run_metrics_model_and_alias(one_worker):
    cfg, out = one_worker
    client = MlflowClient(cfg.tracking.tracking_uri)
    run = client.get_run(out.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["global_batch_size"] == "8" and run.data.params["model.halt_max_steps"] == "2"
    assert "eval/exact_accuracy" in run.data.metrics and "eval/exact_accuracy_step_2" in run.data.metrics
    assert {a.path for a in client.list_artifacts(out.run_id)} >= {"train_config.json", "eval_samples.png"}
    lr = history(cfg, out.run_id, "train/lr")
    for step, value in lr.items():  # the schedule's value for the step just taken
        assert value == pytest.approx(lr_at(step - 1, 1e-3, 2, 6, 0.1))
    version = client.get_model_version_by_alias("hrm-test", "champion")
    assert version.run_id == out.run_id and out.champion


def test_registered_pyfunc_solves_puzzles(one_worker, dataset):
    import mlflow.pyfunc

    from hrm.tasks.sudoku import SudokuTask
    from pipeline.data.loader import load_split

    cfg, _ = one_worker
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/hrm-test@champion")
    task = SudokuTask(box=(2, 2))
    arrays = load_split(dataset, "test", limit=3)
    puzzles = [task.render(x.astype(np.uint8)) for x in arrays["inputs"]]
    grid = [[1, 0, 0, 0], [0, 0, 3, 0], [0, 4, 0, 0], [0, 0, 0, 2]]
    out = model.predict(pd.DataFrame({"puzzle": puzzles + [json.dumps(grid)]}))
    assert list(out.columns) == ["solution", "steps", "confidence"] and len(out) == 4
    for text in out["solution"]:
        assert len(re.findall(r"[1-4.]", text)) == 16  # a full 4×4 grid in the task's own format
    assert set(out["steps"]) <= {1, 2} and ((out["confidence"] >= 0) & (out["confidence"] <= 1)).all()
    with pytest.raises(Exception, match="bad puzzle"):
        model.predict(pd.DataFrame({"puzzle": ["1234"]}))


def test_killed_worker_is_replaced_and_run_finishes(workdir, dataset):
    cfg = config(workdir, dataset, "killed", max_failures=2, max_steps=8, eval_interval=2,
                 **{"scaling.num_workers": 2, "scaling.cpus_per_worker": 0.5})
    marker = workdir / "killed.marker"
    out = train(cfg, fault={"rank": 1, "step": 5, "kind": "sigkill", "marker": str(marker)})
    assert marker.exists()  # the kill happened
    assert history(cfg, out.run_id, "train/lm_loss").keys() == set(range(1, 9))
    steps = [m.step for m in MlflowClient(cfg.tracking.tracking_uri).get_metric_history(out.run_id, "train/lm_loss")]
    assert max(steps) == 8
    repeated = len(steps) - len(set(steps))  # steps trained twice: what the kill cost
    assert 0 < repeated <= 4


def test_resume_continues_step_count_and_schedule(workdir, dataset):
    cfg = config(workdir, dataset, "resumed", max_steps=8, eval_interval=2)
    with pytest.raises(Exception):
        train(cfg, fault={"rank": 0, "step": 5, "kind": "raise", "marker": str(workdir / "resumed.marker")})
    first = history(cfg, MlflowClient(cfg.tracking.tracking_uri).search_runs(
        [MlflowClient(cfg.tracking.tracking_uri).get_experiment_by_name("tests").experiment_id],
        "tags.mlflow.runName = 'resumed'")[0].info.run_id, "train/lm_loss")
    assert max(first) == 5
    out = train(cfg, resume=True)
    lr = history(cfg, out.run_id, "train/lr")
    assert max(lr) == 8
    for step, value in lr.items():
        assert value == pytest.approx(lr_at(step - 1, 1e-3, 2, 8, 0.1))
    assert math.isfinite(out.metrics["eval/exact_accuracy"])
