"""The training job end to end on a real local Ray and a real MLflow sqlite store."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from hrm.optim import lr_at
from pipeline.core.config_io import from_dict
from pipeline.data.build import build_dataset
from pipeline.data.config import DataConfig
from pipeline.train.config import load_train_config
from pipeline.train.run import train
from pipeline.train.run_log import REPLAYED_TAG, RESTART_TAG, WORKERS_TAG

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="module")
def dataset(workdir, ray_session):
    cfg = from_dict(DataConfig, {"name": "tiny", "task": "sudoku", "seed": 3, "sudoku": {
        "box": [2, 2], "count": 60, "min_rating": 0, "test_fraction": 0.2, "augmentations": 4,
        "chunk_size": 20}})
    return build_dataset(cfg, workdir / "data" / "tiny").path


def config(workdir, dataset, name, **overrides):
    base = {"name": name, "data": str(dataset), "storage_path": str(workdir / "runs"), "flavour": "debug",
            "model": {"halt_max_steps": 2, "halt_exploration_prob": 0.0, "forward_dtype": "float32"},
            "global_batch_size": 8,
            "max_steps": 6, "eval_interval": 2, "log_interval": 1, "eval_limit": 16, "eval_samples": 2,
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


def picture_steps(cfg, run_id) -> list[int]:
    """The steps of the run's sample pictures (MLflow's images/<key>+step+<step>+timestamp+...png)."""
    client = MlflowClient(cfg.tracking.tracking_uri)
    pictures = [a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png")]
    return sorted(int(p.split("+step+")[1].split("+")[0]) for p in pictures)


@pytest.fixture(scope="module")
def one_worker(workdir, dataset):
    cfg = config(workdir, dataset, "one")
    return cfg, train(cfg)


def test_two_workers_match_one_worker_through_a_killed_worker(workdir, dataset, one_worker):
    """Two workers at the same global batch train exactly as one (reading their shares through Ray Data, the one
    worker its small split itself), also when one of them is SIGKILLed at step 5:
    Ray Train replaces it, the run restarts from the last checkpoint Train had registered — step 4, 2, or none yet:
    a report is taken ~0.25 s after its checkpoint's upload (async) ends, and the kill comes 0.3-0.6 s after the
    reports of steps 4 and 2 — and trains the same steps again, logged once; every restart point gives the same
    losses (the ACT carry is in the checkpoint)."""
    cfg1, out1 = one_worker
    cfg2 = config(workdir, dataset, "two", max_failures=2, ingest_in_worker_mib=0,  # shares through Ray Data
                  **{"scaling.num_workers": 2, "scaling.cpus_per_worker": 0.5})
    marker = workdir / "killed.marker"
    out2 = train(cfg2, fault={"rank": 1, "step": 5, "kind": "sigkill", "marker": str(marker)})
    assert marker.exists()  # the kill happened
    for key in ("train/lm_loss", "train/q_halt_loss", "train/accuracy", "train/grad_norm"):
        a, b = history(cfg1, out1.run_id, key), history(cfg2, out2.run_id, key)
        # losses at every step; per-example metrics at the steps where rows halted (M_max 2: every other step)
        assert sorted(a) == sorted(b) == (list(range(1, 7)) if "loss" in key or "norm" in key else [2, 4, 6])
        for step in a:
            assert a[step] == pytest.approx(b[step], rel=2e-4, abs=1e-6), (key, step)
    client = MlflowClient(cfg2.tracking.tracking_uri)
    steps = [m.step for m in client.get_metric_history(out2.run_id, "train/lm_loss")]
    assert sorted(steps) == list(range(1, 7))  # steps trained twice after the restart are logged once
    assert picture_steps(cfg2, out2.run_id) == [2, 4, 6]  # and their sample pictures
    replayed = {k: v for k, v in client.get_run(out2.run_id).data.tags.items() if k.startswith(REPLAYED_TAG)}
    (restored,) = [int(k[len(REPLAYED_TAG):]) for k in replayed]  # the restart, from a checkpoint: what it cost
    start = f"the checkpoint of step {restored}" if restored else "step 0 (no checkpoint yet)"
    assert restored in (0, 2, 4) and f"steps {restored + 1}-" in replayed[f"{REPLAYED_TAG}{restored}"]
    assert f"after a restart from {start}" in replayed[f"{REPLAYED_TAG}{restored}"]
    # the restart noted as an event of the run, beside the group's nodes; every logged step says how many workers
    tags = client.get_run(out2.run_id).data.tags
    assert len(tags[WORKERS_TAG].split(", ")) == 2 and [k for k in tags if k.startswith(RESTART_TAG)] == [
        f"{RESTART_TAG}1"]
    assert "2 -> 2 workers" in tags[f"{RESTART_TAG}1"] and start in tags[f"{RESTART_TAG}1"]
    assert set(history(cfg2, out2.run_id, "train/workers").values()) == {2.0}
    # the one-worker run read its small split itself, these workers through Ray Data: the same batches either way
    assert (client.get_run(out1.run_id).data.tags["resolved.ingest"], tags["resolved.ingest"]) == ("worker", "ray_data")


@pytest.mark.timeout(300)  # workers that disagreed on the budget would wait for each other forever
def test_two_workers_stop_together_on_a_time_budget(workdir, dataset):
    """max_minutes ends a run of many epochs; eval_minutes evaluates by training time; both workers take the same
    count (the slowest one's), so they stop, and evaluate, at the same step."""
    cfg = config(workdir, dataset, "budget", max_steps=None, epochs=10_000, eval_interval=1_000_000,
                 max_minutes=0.05, eval_minutes=0.02,
                 **{"scaling.num_workers": 2, "scaling.cpus_per_worker": 0.5})
    out = train(cfg)
    minutes = history(cfg, out.run_id, "train/minutes")
    evals = history(cfg, out.run_id, "eval/exact_accuracy")
    assert sorted(minutes) == sorted(evals) and len(evals) >= 2  # every 0.02 min of training, and at the end
    last = max(minutes)
    assert 0.05 <= minutes[last] < 0.05 + 0.02, minutes  # stopped at the first step past the budget
    times = [0.0] + sorted(minutes.values())[:-1]  # the timed evaluations, without the final one
    assert all(b - a >= 0.02 - 1e-9 for a, b in zip(times, times[1:])), times


def test_mlflow_holds_run_metrics_model_and_alias(one_worker, dataset):
    cfg, out = one_worker
    client = MlflowClient(cfg.tracking.tracking_uri)
    run = client.get_run(out.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["global_batch_size"] == "8" and run.data.params["model.halt_max_steps"] == "2"
    assert run.data.params["resolved.forward_dtype"] == "float32"  # set in the config: it wins over auto
    assert run.data.tags["resolved.forward_dtype.reason"] == "set in the config"
    assert "eval/exact_accuracy" in run.data.metrics and "eval/exact_accuracy_step_2" in run.data.metrics
    assert {a.path for a in client.list_artifacts(out.run_id)} >= {"train_config.json", "images"}
    assert picture_steps(cfg, out.run_id) == [2, 4, 6]  # the sample answers drawn at every evaluation
    lr = history(cfg, out.run_id, "train/lr")
    assert sorted(lr) == list(range(1, 7))  # log_interval 1, max_steps 6
    for step, value in lr.items():  # the schedule's value for the step just taken
        assert value == pytest.approx(lr_at(step - 1, 1e-3, 2, 6, 0.1))
    version = client.get_model_version_by_alias("hrm-test", "champion")
    assert version.run_id == out.run_id and out.champion
    # what mlflow.start_run records, the dataset as input, system metrics from rank 0
    assert run.data.tags["mlflow.source.git.commit"] and run.data.tags["mlflow.user"]
    assert run.data.tags["mlflow.source.name"] and run.data.tags["mlflow.source.type"] == "LOCAL"
    [logged_input] = [i.dataset for i in run.inputs.dataset_inputs]
    meta = json.loads((dataset / "metadata.json").read_text())
    assert logged_input.digest == meta["fingerprint"][:36] and logged_input.name == "tiny"
    assert json.loads(logged_input.profile)["train_count"] == meta["counts"]["train"]
    assert "system/cpu_utilization_percentage" in run.data.metrics
    # the logged model holds the best checkpoint's eval metrics at its step; the run's summary says which it is
    step = int(out.metrics["step"])
    [output] = run.outputs.model_outputs
    assert output.step == step and version.source == f"models:/{output.model_id}"
    logged = client.get_logged_model(output.model_id)
    linked = {m.key: (m.value, m.step) for m in logged.metrics}
    assert linked["eval/exact_accuracy"] == (pytest.approx(out.metrics["eval/exact_accuracy"]), step)
    assert run.data.tags["model.step"] == str(step) and not [k for k in run.data.metrics if k.startswith("model/")]
    assert "eval/count" not in run.data.metrics and int(run.data.tags["eval.count"]) > 0  # a constant: no chart
    assert float(run.data.tags["model.eval/exact_accuracy"]) == pytest.approx(out.metrics["eval/exact_accuracy"],
                                                                              rel=1e-5)
    version = client.get_model_version_by_alias("hrm-test", "champion")  # described, as the registered model is
    assert f"the checkpoint of step {step}: accuracy" in version.description and "exact_accuracy" in \
        version.description and "hrm train" in version.description
    assert client.get_registered_model("hrm-test").description.startswith("HRM models for sudoku")
    assert run.data.tags["model.checkpoint"] == out.checkpoint.name


def test_registered_pyfunc_solves_puzzles(one_worker, dataset):
    """The registry's model answers exactly as the best checkpoint's weights do through ``hrm.solve``."""
    import mlflow.pyfunc
    import torch

    from hrm.config import ModelConfig
    from hrm.model import HRM
    from hrm.solve import solve
    from hrm.tasks.sudoku import SudokuTask
    from pipeline.core.precision import resolve_dtype
    from pipeline.data.loader import load_split

    cfg, out = one_worker
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/hrm-test@champion")
    task = SudokuTask(box=(2, 2))
    arrays = load_split(dataset, "test", limit=3)
    puzzles = [task.render(x.astype(np.uint8)) for x in arrays["inputs"]]
    grid = task.parse(puzzles[0]).reshape(4, 4).tolist()  # the first puzzle again, as a JSON grid of tokens
    grid = [[max(t - 1, 0) for t in row] for row in grid]  # tokens -> digits (0 = blank)
    answers = model.predict(pd.DataFrame({"puzzle": puzzles + [json.dumps(grid)]}))
    assert list(answers.columns) == ["solution", "grid", "steps", "confidence", "valid"] and len(answers) == 4

    info = json.loads((out.checkpoint / "model.json").read_text())
    served_dtype = resolve_dtype("auto", "cpu")[0]  # the pyfunc computes in this host's choice
    reference = HRM(from_dict(ModelConfig, {**info["model"], "forward_dtype": served_dtype}))
    reference.load_state_dict(torch.load(out.checkpoint / "model.pt", weights_only=True))
    expected = solve(reference, task, puzzles + puzzles[:1])
    assert list(answers["grid"]) == [json.dumps(task.decode(e.tokens).tolist()) for e in expected]
    assert list(answers["steps"]) == [e.steps for e in expected]
    assert list(answers["confidence"]) == pytest.approx([e.confidence for e in expected], abs=1e-6)
    assert list(answers["valid"]) == [e.valid for e in expected] == [
        task.follows_rules(e.tokens, task.parse(p)) for e, p in zip(expected, puzzles + puzzles[:1])]
    for text in answers["solution"]:
        assert re.fullmatch(r"[1-4.]{16}", text)  # the compact input format: one line of 16 cells
    with pytest.raises(Exception, match="bad puzzle: expected 16 cells"):
        model.predict(pd.DataFrame({"puzzle": ["1234"]}))


def test_a_job_failing_after_its_run_opened_ends_it_failed_and_frees_the_name(workdir, dataset, monkeypatch):
    """A failure anywhere after the MLflow run opened (here: building the trainer) ends the run FAILED, and the run
    folder, which holds no checkpoint, does not block a fresh start under the same name."""
    import pipeline.train.run as run_module
    from pipeline.train.run import prepare, run_folder

    def broken(*args, **kwargs):
        raise OSError("the dataset went away")

    monkeypatch.setattr(run_module, "make_trainer", broken)
    cfg = config(workdir, dataset, "fails-early")
    with pytest.raises(OSError, match="went away"):
        train(cfg)
    run_id = run_folder(cfg).read("mlflow_run_id.txt").strip()
    assert MlflowClient(cfg.tracking.tracking_uri).get_run(run_id).info.status == "FAILED"
    prepare(cfg, resume=False)  # the name is free again
    assert not run_folder(cfg).exists()


def test_a_finished_run_resumes_only_when_asked_for_more(one_worker, dataset, workdir):
    """--resume of a run that trained all its steps would only register the same model again: refused, naming what
    to ask for, and the run stays FINISHED (with its champion alias); asking for more steps is accepted."""
    from pipeline.data.loader import read_metadata
    from pipeline.train.run import run_folder
    from pipeline.train.run_state import check_resumable

    cfg, outcome = one_worker
    client = MlflowClient(cfg.tracking.tracking_uri)
    versions_before = len(client.search_model_versions("name = 'hrm-test'"))
    with pytest.raises(ValueError, match=r"run 'one' finished \(step 6 of 6\): --resume has nothing to do; ask for "
                                         r"more training"):
        train(cfg, resume=True)
    assert client.get_run(outcome.run_id).info.status == "FINISHED"
    assert len(client.search_model_versions("name = 'hrm-test'")) == versions_before
    more = config(workdir, dataset, "one", max_steps=9)
    check_resumable(more, run_folder(more), read_metadata(dataset), more.tracking.tracking_uri, outcome.run_id)
