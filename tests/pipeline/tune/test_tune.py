"""Ray Tune sweeps: space and config checks (fast), and real sweeps of tiny models on a local Ray (slow)."""

from __future__ import annotations

import math
import os
import pickle
import signal
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from hrm.config import model_config
from pipeline.core.config_io import from_dict
from pipeline.train.config import load_train_config
from pipeline.tune.config import SweepConfig, load_sweep_config
from pipeline.tune.report import TrialRow, compute_per_example, depth, write_report
from pipeline.tune.space import check_space

BASE = load_train_config(None, {"flavour": "debug"})


@pytest.mark.parametrize("space, searcher, fixed, match", [
    ({}, "grid", {}, "space is empty"),
    ({"model.bogus": {"grid": [1]}}, "grid", {}, "not a model field"),
    ({"optim.nope": {"grid": [1]}}, "grid", {}, "not a training config key"),
    ({"scaling.num_workers": {"grid": [1, 2]}}, "grid", {}, "cannot be searched"),
    ({"model.seq_len": {"grid": [81]}}, "grid", {}, "set from the dataset"),
    ({"model.halt_max_steps": {"grid": []}}, "grid", {}, "non-empty list"),
    ({"model.halt_max_steps": 4}, "grid", {}, "fixed values belong in overrides"),
    ({"optim.lr": {"loguniform": [1e-2, 1e-4]}}, "random", {}, "must be below"),
    ({"optim.lr": {"loguniform": [0, 1e-4]}}, "random", {}, "positive low bound"),
    ({"model.halt_max_steps": {"grid": [2, 4]}}, "grid", {"model.halt_max_steps": 4}, "also fixed in overrides"),
    ({"model.halt_max_steps": {"uniform": [2, 8]}}, "random", {}, "expected an integer"),
    ({"model.halt_max_steps": {"grid": [0, 2]}}, "grid", {}, "halt_max_steps must be >= 1"),
    ({"optim.lr": {"choice": [1e-3, 1e-4]}}, "grid", {}, "grid entries only"),
    ({"model.h_cycles": {"grid": [1, 2]}}, "optuna", {}, "use choice instead of grid"),
    ({"model.variant": {"grid": ["hrm", "trm"]}, "model.mlp_t": {"grid": [True]}}, "grid", {}, "mlp_t is a TRM"),
])
def test_bad_space_is_rejected(space, searcher, fixed, match):
    with pytest.raises(ValueError, match=match):
        check_space(space, searcher=searcher, base=BASE, fixed=fixed)


def test_space_keys_nest_and_alias():
    cfg = from_dict(SweepConfig, {
        "space": {"H_cycles": {"grid": [1, 2]}, "model": {"L_cycles": {"grid": [1]}},
                  "optim.lr": {"loguniform": [1e-4, 3e-3]}},
        "overrides": {"model": {"halt_max_steps": 2}, "scaling.cpus_per_worker": 0.5}, "searcher": "random"})
    assert set(cfg.space) == {"model.h_cycles", "model.l_cycles", "optim.lr"}
    assert cfg.overrides == {"model.halt_max_steps": 2, "scaling.cpus_per_worker": 0.5}
    check_space(cfg.space, searcher="random", base=BASE, fixed=cfg.overrides)
    with pytest.raises(ValueError, match="given twice"):
        from_dict(SweepConfig, {"space": {"h_cycles": {"grid": [1]}, "model.H_cycles": {"grid": [2]}}})


def test_sweep_config_errors(tmp_path):
    for sets, match in [({"num_samples": 0}, "num_samples must be >= 1"),
                        ({"scheduler.reduction_factor": 1}, "reduction_factor must be > 1"),
                        ({"scheduler.max_t": 1, "scheduler.grace_period": 2}, "below scheduler.grace_period"),
                        ({"searcher": "bayes"}, "must be one of"),
                        ({"bogus": 1}, "unknown key"),
                        ({"storage_path": "gs://bucket/sweeps"}, "must be a local or mounted folder")]:
        with pytest.raises(ValueError, match=match):
            load_sweep_config(None, sets)


def test_cli_rejects_bad_space_before_any_cluster(tmp_path):
    from pipeline.cli import main

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "bad", "storage_path": str(tmp_path / "sweeps"),
                                     "space": {"model.halt_max_steps": {"grid": []}}}))
    result = CliRunner().invoke(main, ["tune", "--config", str(sweep)])
    assert result.exit_code != 0 and "non-empty list" in result.output
    result = CliRunner().invoke(main, ["tune", "--config", str(sweep), "--set",
                                       "space.model.halt_max_steps={grid: [2]}", "--set",
                                       "overrides.model.halt_max_steps=2"])
    assert result.exit_code != 0 and "also fixed in overrides" in result.output
    assert not (tmp_path / "sweeps").exists()


def test_optuna_searcher_samples_the_space():
    from pipeline.tune.run import Plan, _tune_config
    from pipeline.tune.space import to_tune

    sweep = from_dict(SweepConfig, {"searcher": "optuna", "max_concurrent": 2, "space": {
        "halt_max_steps": {"choice": [2, 4]}, "optim.lr": {"loguniform": [1e-4, 1e-2]},
        "model.l_layers": {"randint": [1, 2]}}})
    check_space(sweep.space, searcher="optuna", base=BASE, fixed={})
    searcher = _tune_config(Plan(sweep=sweep, base=BASE, folder=None, meta=None, max_t=4), 2).search_alg
    assert searcher.set_search_properties(sweep.metric, sweep.mode, to_tune(sweep.space))
    points = [searcher.suggest(f"t{i}") for i in range(6)]
    assert all(p["model.halt_max_steps"] in (2, 4) and 1e-4 <= p["optim.lr"] <= 1e-2 and p["model.l_layers"] in (1, 2)
               for p in points)


def test_report_table_and_plot(tmp_path):
    hrm_ = model_config("debug", halt_max_steps=4, h_cycles=2, l_cycles=3)
    trm = model_config("trm", halt_max_steps=2)
    assert depth(hrm_) == 24 and compute_per_example(hrm_) == 4 * 2 * (3 * 1 + 1)
    assert compute_per_example(trm) == 2 * 3 * (6 * 2 + 2)
    rows = [TrialRow("a_00000", "completed", {"model.variant": "hrm"}, hrm_, {"eval/exact_accuracy": 0.5, "step": 8},
                     4, 8, "r1", best_exact=0.5),
            TrialRow("a_00001", "early_stopped", {"model.variant": "trm"}, trm, {"eval/exact_accuracy": 0.75,
                                                                                    "step": 2}, 1, 2, "r2", 0.75),
            TrialRow("a_00002", "error", {"model.variant": "hrm"}, hrm_, {}, 0, 0, None)]
    paths = write_report(rows, tmp_path, "eval/exact_accuracy", "max")
    lines = paths[0].read_text().splitlines()
    assert lines[0].startswith("trial,status,model.variant,variant,M_max,N,T,layers,depth,compute_per_example")
    assert [line.split(",")[0] for line in lines[1:]] == ["a_00001", "a_00000", "a_00002"]
    assert "| a_00001 | early_stopped |" in paths[1].read_text()
    header = lines[0].split(",")
    assert lines[1].split(",")[header.index("best exact accuracy")] == "0.75"
    assert paths[2].read_bytes()[:4] == b"\x89PNG"


def test_the_plots_labels_stay_inside_its_axes(tmp_path, monkeypatch):
    """Each point's "M×N×T" label, the deepest one's too (it was cut at the right edge), lies within the axes."""
    import matplotlib.figure

    from pipeline.tune.report import plot

    rows = [TrialRow(f"t{i}", "completed", {}, model_config("debug", halt_max_steps=m, h_cycles=n, l_cycles=t), {},
                     1, 8, None, best_exact=e)
            for i, (m, n, t, e) in enumerate([(2, 1, 1, 0.2), (4, 2, 2, 1.0), (2, 2, 2, 0.5)])]
    inside, save = {}, matplotlib.figure.Figure.savefig

    def measured(fig, *args, **kwargs):
        renderer = fig.canvas.get_renderer()
        (ax,) = fig.axes
        box = ax.get_window_extent(renderer)
        inside.update({t.get_text(): box.x0 <= t.get_window_extent(renderer).x0 and
                       t.get_window_extent(renderer).x1 <= box.x1 for t in ax.texts})
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", measured)
    plot(rows, tmp_path / "plot.png")
    assert inside == {"2×1×1": True, "4×2×2": True, "2×2×2": True}


def test_trial_row_reads_a_tune_result():
    """A trial's row comes from its Ray Tune Result alone: id from its metrics, failure from its error."""
    from types import SimpleNamespace

    import pandas as pd

    from pipeline.tune.report import trial_row

    cfg = load_train_config(None, {"flavour": "debug", "max_steps": 6, "eval_interval": 2, "global_batch_size": 8,
                                   "model.halt_max_steps": 3})
    meta = SimpleNamespace(vocab_size=6, seq_len=16, num_puzzle_identifiers=1, counts={"train": 64})
    history = pd.DataFrame({"eval/accuracy": [0.5, 0.7, 0.7], "eval/exact_accuracy": [0.0, 0.25, 0.5],
                            "step": [2, 4, 6], "train/lm_loss": [1.0, 0.9, 0.8]})

    def result(frame, error=None):
        return SimpleNamespace(metrics={"trial_id": "t_00001"}, metrics_dataframe=frame, error=error)

    row = trial_row(result(history), cfg, {"optim.lr": 0.01}, meta, "eval/accuracy", "max", "run1")
    assert (row.trial_id, row.status, row.reports, row.last_step, row.run_id) == ("t_00001", "completed", 3, 6, "run1")
    assert row.best == {"eval/accuracy": 0.7, "eval/exact_accuracy": 0.25, "step": 4.0}  # the first of equals
    assert row.best_exact == 0.5 and row.model.halt_max_steps == 3 and row.model.seq_len == 16
    assert trial_row(result(history[:2]), cfg, {}, meta, "eval/accuracy", "max", None).status == "early_stopped"
    failed = trial_row(result(None, RuntimeError("boom")), cfg, {}, meta, "eval/accuracy", "max", None)
    assert (failed.status, failed.best, failed.reports) == ("error", {}, 0)


# ------------------------------------------------------------------------------------------------------------------
# Real sweeps (slow): 4×4 Sudoku, debug models, one worker of half a CPU per trial, two trials at a time.


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("tune")


@pytest.fixture(scope="module")
def dataset(workdir, ray_session):
    from pipeline.data.build import build_dataset
    from pipeline.data.config import DataConfig

    cfg = from_dict(DataConfig, {"name": "tiny", "task": "sudoku", "seed": 3, "sudoku": {
        "box": [2, 2], "count": 60, "min_rating": 0, "test_fraction": 0.2, "augmentations": 4, "chunk_size": 20}})
    return build_dataset(cfg, workdir / "data" / "tiny").path


def sweep_config(workdir, dataset, name, **sets):
    data = {"name": name, "storage_path": str(workdir / "sweeps"), "max_concurrent": 2,
            "metric": "eval/accuracy", "mode": "max",
            "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
            "overrides": {"data": str(dataset), "flavour": "debug", "model.halt_exploration_prob": 0.0,
                          "global_batch_size": 8, "max_steps": 6, "eval_interval": 2, "log_interval": 2,
                          "eval_limit": 16, "eval_samples": 2, "optim.lr_warmup_steps": 0,
                          "scaling.cpus_per_worker": 0.5,
                          "tracking.tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}",
                          "tracking.experiment": "tune-tests", "tracking.model_name": "hrm-tune-test"},
            "space": {"optim.lr": {"grid": [1e-2, 0.0]}, "model.halt_max_steps": {"grid": [2, 3]}}}
    return load_sweep_config(None, {**{f"overrides.{k}": v for k, v in data.pop("overrides").items()},
                                    **{f"space.{k}": v for k, v in data.pop("space").items()}, **data, **sets})


def child_runs(workdir, parent):
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tune-tests").experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")


@pytest.fixture(scope="module")
def asha_sweep(workdir, dataset):
    from pipeline.tune.run import run_sweep

    return run_sweep(sweep_config(workdir, dataset, "asha"))


@pytest.mark.slow
def test_sweep_stops_weak_trials_and_reports(workdir, asha_sweep):
    out = asha_sweep
    assert not out.interrupted and len(out.rows) == 4
    by_lr = {(r.params["optim.lr"], r.params["model.halt_max_steps"]): r for r in out.rows}
    assert set(by_lr) == {(1e-2, 2), (1e-2, 3), (0.0, 2), (0.0, 3)}
    assert all(r.status != "error" for r in out.rows)
    stopped = [r for r in out.rows if r.status == "early_stopped"]
    assert stopped and all(r.reports < 3 for r in stopped)  # ASHA stopped at least one trial at an evaluation
    assert out.best is not None and out.best.params["optim.lr"] == 1e-2
    assert out.best.best["eval/accuracy"] > max(by_lr[(0.0, m)].best["eval/accuracy"] for m in (2, 3))
    assert all(0 <= r.best_exact <= 1 for r in out.rows)


@pytest.mark.slow
def test_sweep_mlflow_parent_children_report_and_model(workdir, asha_sweep):
    out = asha_sweep
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    parent = client.get_run(out.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["kind"] == "sweep"
    children = child_runs(workdir, out.parent_run_id)
    assert sorted(c.info.run_id for c in children) == sorted(r.run_id for r in out.rows)
    assert all(c.info.status == "FINISHED" and c.data.tags["tune.status"] in ("completed", "early_stopped")
               for c in children)
    assert all("eval/accuracy" in c.data.metrics for c in children)
    report = {a.path for a in client.list_artifacts(out.parent_run_id, "report")}
    assert report == {"report/sweep_report.csv", "report/sweep_report.md", "report/accuracy_vs_depth.png"}
    assert parent.data.tags["best_run_id"] == out.best.run_id
    version = client.get_model_version_by_alias("hrm-tune-test", "champion")
    assert version.run_id == out.best.run_id and out.champion and out.model_uri.startswith("models:/hrm-tune-test/")


@pytest.mark.slow
def test_registered_checkpoint_is_the_best_trials_best_kept_one(workdir, asha_sweep):
    import json
    from pathlib import Path

    from pipeline.train.run import run_folder
    from pipeline.tune.run import BASE_FILE, best_checkpoint, trial_name
    from pipeline.tune.space import trial_config

    out = asha_sweep
    base = json.loads((workdir / "sweeps" / "asha" / BASE_FILE).read_text())
    cfg = trial_config(base, out.best.params, trial_name("asha", out.best.trial_id))
    kept = [json.loads(p.read_text())["metrics"] for p in Path(run_folder(cfg).uri).glob("**/model.json")]
    chosen = json.loads((Path(best_checkpoint(cfg).path) / "model.json").read_text())["metrics"]
    assert kept and chosen[cfg.checkpoint_metric] == max(m[cfg.checkpoint_metric] for m in kept)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    assert int(client.get_run(out.best.run_id).data.tags["model.step"]) == chosen["step"]
    assert best_checkpoint(trial_config(base, out.best.params, "asha-no-such-trial")) is None


class InterruptAfter(Callback):
    """Presses Ctrl-C (SIGINT to this process) once ``count`` trials have completed; once (a marker file)."""

    def __init__(self, count: int, marker):
        self.count, self.marker, self.done = count, marker, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        if self.done >= self.count and not self.marker.exists():
            self.marker.write_text(trial.trial_id)
            os.kill(os.getpid(), signal.SIGINT)


class Planted:
    """Unpickled, writes ``ran`` to a file: what a crafted tuner.pkl could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path(self.marker).write_text, ("ran",)


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_rerunning_finished_trials(workdir, dataset):
    from pipeline.tune.run import run_sweep

    cfg = sweep_config(workdir, dataset, "resumed", max_concurrent=1, metric="eval/exact_accuracy",
                       **{"scheduler.kind": "fifo", "overrides.max_steps": 4,
                          "space.optim.lr": None, "space.model.halt_max_steps": {"grid": [1, 2]}})
    marker = workdir / "interrupted.marker"
    first = run_sweep(cfg, callbacks=[InterruptAfter(1, marker)])
    assert first.interrupted and marker.exists()
    before = {c.info.run_id: c for c in child_runs(workdir, first.parent_run_id)}
    assert len(before) >= 1
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    finished_before = [r for r, c in before.items() if "eval/exact_accuracy" in c.data.metrics
                       and max(m.step for m in client.get_metric_history(r, "train/lm_loss")) == 4]
    assert len(finished_before) >= 1
    tuner_pkl = workdir / "sweeps" / "resumed" / "tune" / "tuner.pkl"
    kept, planted = tuner_pkl.read_bytes(), workdir / "planted.ran"
    tuner_pkl.write_bytes(pickle.dumps(Planted(planted)))  # a crafted state: unpickling it runs code
    with pytest.raises(ValueError, match=r"not resuming sweep folder .*resumed: its Tune state is not the one hrm "
                                         r"tune sealed when the sweep last stopped \(changed: tune/tuner.pkl\)"):
        run_sweep(cfg, resume=True)
    assert not planted.exists()
    tuner_pkl.write_bytes(kept)
    out = run_sweep(cfg, resume=True)
    assert not out.interrupted and out.parent_run_id == first.parent_run_id
    after = child_runs(workdir, out.parent_run_id)
    assert len(after) == 2 and set(before) <= {c.info.run_id for c in after}  # one run per trial, none twice
    for run_id in finished_before:  # not trained again: every step logged once
        steps = [m.step for m in client.get_metric_history(run_id, "train/lm_loss")]
        assert sorted(steps) == [2, 4]
    assert all(r.status == "completed" and math.isfinite(r.best["eval/exact_accuracy"]) for r in out.rows)


@pytest.mark.slow
def test_unreported_metric_and_unplaceable_trials_fail_before_trials(workdir, dataset):
    from pipeline.tune.run import prepare_sweep, run_sweep

    with pytest.raises(ValueError, match="never reported"):
        prepare_sweep(sweep_config(workdir, dataset, "badmetric", metric="eval/bogus"))
    with pytest.raises(ValueError, match="never reported"):
        prepare_sweep(sweep_config(workdir, dataset, "badstep", metric="eval/exact_accuracy_step_3"))
    big = sweep_config(workdir, dataset, "toobig", **{"overrides.scaling.num_workers": 4,
                                                       "overrides.scaling.cpus_per_worker": 1.0})
    with pytest.raises(ValueError, match="CPUs"):
        run_sweep(big)
    assert not (workdir / "sweeps" / "toobig").exists()
