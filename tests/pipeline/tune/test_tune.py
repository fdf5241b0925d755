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
    assert [p.name for p in paths[2:]] == ["accuracy_vs_depth.png", "accuracy_vs_compute.png",
                                           "accuracy_vs_minutes.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths[2:])


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


MINUTES = 0.06  # a trial's training budget in the ASHA sweep: 3.6 s, evaluated every 1.2 s of training


@pytest.fixture(scope="module")
def asha_sweep(workdir, dataset):
    """ASHA on minutes of training: rungs at 0.02 and 0.04 of the trials' 0.06 minutes, comparing token accuracy
    (scheduler.metric) while the sweep ranks by exact accuracy."""
    from pipeline.tune.run import run_sweep

    return run_sweep(sweep_config(workdir, dataset, "asha", metric="eval/exact_accuracy", **{
        "scheduler.time_attr": "train_minutes", "scheduler.grace_period": 0.02, "scheduler.metric": "eval/accuracy",
        "overrides.max_steps": None, "overrides.epochs": 10_000, "overrides.eval_interval": 1_000_000,
        "overrides.max_minutes": MINUTES, "overrides.eval_minutes": 0.02}))


@pytest.mark.slow
def test_sweep_stops_weak_trials_and_reports(workdir, asha_sweep):
    out = asha_sweep
    assert not out.interrupted and len(out.rows) == 4
    by_lr = {(r.params["optim.lr"], r.params["model.halt_max_steps"]): r for r in out.rows}
    assert set(by_lr) == {(1e-2, 2), (1e-2, 3), (0.0, 2), (0.0, 3)}
    assert all(r.status != "error" for r in out.rows)
    stopped = [r for r in out.rows if r.status == "early_stopped"]
    # ASHA stopped at least one trial at a rung of training minutes, before its budget; the others ran it all
    assert stopped and all(r.reports < 3 and r.train_minutes < MINUTES for r in stopped)
    assert all(r.train_minutes >= MINUTES for r in out.rows if r.status == "completed")
    assert all(r.curve and r.curve[-1][0] == pytest.approx(r.train_minutes) for r in out.rows)
    assert out.best is not None and all(0 <= r.best_exact <= 1 for r in out.rows)
    lr0 = max(by_lr[(0.0, m)].best.get("eval/accuracy", 0) for m in (2, 3))  # by ASHA's metric the lr 0 trials lose
    assert max(by_lr[(1e-2, m)].best["eval/accuracy"] for m in (2, 3)) > lr0


@pytest.mark.slow
def test_sweep_parent_run_holds_every_trials_curve_and_what_asha_saved(workdir, asha_sweep):
    from pipeline.tune.curves import curve_key

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    for row in asha_sweep.rows:  # one metric per trial, its steps the seconds of training at its reports
        points = client.get_metric_history(asha_sweep.parent_run_id, curve_key(row.params))
        assert sorted((m.step, m.value) for m in points) == sorted((round(t * 60), e) for t, e in row.curve)
    text = (workdir / "sweeps" / "asha" / "report" / "sweep_report.md").read_text()
    assert "ASHA: 4 trials ran" in text and "% saved" in text


@pytest.mark.slow
def test_a_sweeps_parent_run_exports_to_files(workdir, asha_sweep, tmp_path):
    import json

    from pipeline.tune.curves import curve_key
    from pipeline.tune.export import main

    main([str(workdir / "sweeps" / "asha"), str(tmp_path / "out")])
    parent = json.loads((tmp_path / "out" / "parent_run.json").read_text())
    assert parent["run_id"] == asha_sweep.parent_run_id and parent["status"] == "FINISHED"
    assert parent["params"]["scheduler"] == "asha" and parent["tags"]["best_trial_id"] == asha_sweep.best.trial_id
    curves = json.loads((tmp_path / "out" / "curves.json").read_text())
    assert {curve_key(r.params).removeprefix("curves/"): sorted([round(t * 60), e] for t, e in r.curve)
            for r in asha_sweep.rows} == curves
    assert {"sweep_report.md", "accuracy_vs_minutes.png"} <= {p.name for p in (tmp_path / "out").iterdir()}
    with pytest.raises(FileNotFoundError, match="holds no sweep"):
        main([str(tmp_path), str(tmp_path / "none")])


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
    assert report == {"report/sweep_report.csv", "report/sweep_report.md", "report/accuracy_vs_depth.png",
                      "report/accuracy_vs_compute.png", "report/accuracy_vs_minutes.png"}
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
    report = (workdir / "sweeps" / "resumed" / "report" / "sweep_report.md").read_text()  # the trials so far
    assert "A sweep stopped to be resumed (--resume)" in report and "| completed |" in report
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


@pytest.mark.slow
def test_a_sweep_in_parts_stops_after_its_part_and_ends_when_its_budget_is_spent(workdir, dataset):
    """--stop-after ends a part as Ctrl-C does (resumable); the resumed part's time counts with the first towards
    time_budget_s, which a resume may raise; once spent, the trials running are stopped and the sweep reports."""
    import json

    from pipeline.tune.budget import SPENT_FILE
    from pipeline.tune.run import prepare_sweep, run_sweep

    sets = {"max_concurrent": 1, "metric": "eval/exact_accuracy", "scheduler.kind": "fifo", "time_budget_s": 600,
            "overrides.max_steps": None, "overrides.epochs": 10_000, "overrides.eval_interval": 1_000_000,
            "overrides.max_minutes": 0.1, "overrides.eval_minutes": 0.05, "space.optim.lr": None,
            "space.model.halt_max_steps": {"grid": [1, 2, 3]}}
    folder = workdir / "sweeps" / "parts"
    first = run_sweep(sweep_config(workdir, dataset, "parts", **sets), stop_after_s=8)  # within the first trial
    assert first.interrupted
    spent = json.loads((folder / SPENT_FILE).read_text())["seconds"]
    assert 8 <= spent < 60
    with pytest.raises(ValueError, match=r"it was started with other settings \(space.model.halt_max_steps: "
                                         r"\{\"grid\": \[1, 2, 3\]\} -> \{\"grid\": \[1, 2\]\}\)"):
        prepare_sweep(sweep_config(workdir, dataset, "parts", **{**sets, "space.model.halt_max_steps": {
            "grid": [1, 2]}}), resume=True)
    budget = spent + 20  # the rest: less than the three trials need (6 s of training each, start-up on top)
    out = run_sweep(sweep_config(workdir, dataset, "parts", **{**sets, "time_budget_s": budget}), resume=True)
    assert not out.interrupted
    assert json.loads((folder / "sweep_config.json").read_text())["time_budget_s"] == budget  # what a resume may raise
    assert json.loads((folder / SPENT_FILE).read_text())["seconds"] >= budget
    statuses = [r.status for r in out.rows]
    assert "budget_stopped" in statuses or len(out.rows) < 3, statuses
    text = (folder / "report" / "sweep_report.md").read_text()
    assert ("budget_stopped" in text) or "not run: the sweep's time budget ended first" in text
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    assert client.get_run(out.parent_run_id).info.status == "FINISHED"
    with pytest.raises(ValueError, match="has spent its time_budget_s"):
        run_sweep(sweep_config(workdir, dataset, "parts", **{**sets, "time_budget_s": budget}), resume=True)


@pytest.mark.slow
def test_minutes_and_budget_checks_refuse_before_any_trial(workdir, dataset):
    from pipeline.tune.run import prepare_sweep

    minutes = {"scheduler.time_attr": "train_minutes", "scheduler.grace_period": 2, "overrides.max_minutes": 30}
    with pytest.raises(ValueError, match="set overrides.eval_minutes"):
        prepare_sweep(sweep_config(workdir, dataset, "noeval", **minutes))
    with pytest.raises(ValueError, match=r"grace_period 2 training minutes comes before the first evaluation "
                                         r"\(every eval_minutes = 5\)"):
        prepare_sweep(sweep_config(workdir, dataset, "late", **minutes, **{"overrides.eval_minutes": 5}))
    with pytest.raises(ValueError, match="needs the trials' training budget"):
        prepare_sweep(sweep_config(workdir, dataset, "nobudget", **{**minutes, "overrides.max_minutes": None,
                                                                     "overrides.eval_minutes": 1}))
    prepare_sweep(sweep_config(workdir, dataset, "fits", max_concurrent=1, time_budget_s=600, **minutes,
                               **{"overrides.eval_minutes": 1}))  # fits: 4 trials × 2 minutes in 10
    with pytest.raises(ValueError, match=r"time_budget_s 300 s \(5 min\) cannot fit the sweep: 4 trials × at "
                                         r"least 2 training minutes each \(ASHA's grace period\) at 1 at a time is "
                                         r"8 min"):
        prepare_sweep(sweep_config(workdir, dataset, "short", max_concurrent=1, time_budget_s=300, **minutes,
                                   **{"overrides.eval_minutes": 1}))
    with pytest.raises(ValueError, match="scheduler.metric 'eval/bogus' is never reported"):
        prepare_sweep(sweep_config(workdir, dataset, "badasha", **{"scheduler.metric": "eval/bogus"}))
    assert not any((workdir / "sweeps" / name).exists() for name in ("noeval", "late", "nobudget", "fits", "short"))


def test_asha_savings_are_counted_from_the_trials_own_pace():
    from pipeline.tune.report import asha_savings, savings_text

    m = model_config("debug")
    rows = [TrialRow("a", "completed", {}, m, {}, 15, 100, None, train_minutes=30, wall_minutes=40),
            TrialRow("b", "early_stopped", {}, m, {}, 1, 10, None, train_minutes=2, wall_minutes=3),
            TrialRow("c", "error", {}, m, {}, 0, 0, None)]
    saved = asha_savings(rows, 30)
    # b ran 2 of 30 minutes at 1.5 wall minutes per training minute: 28 more would have taken 42
    assert saved == pytest.approx({"trials": 2, "train_minutes": 32, "wall_minutes": 43, "full_train_minutes": 60,
                                   "full_wall_minutes": 85, "saved_fraction": 1 - 43 / 85})
    assert "(86 against 170 CPU-minutes at 2 cores a trial): 49% saved" in savings_text(saved, 2)
    assert asha_savings(rows, None) is None and savings_text(None) == ""


def test_time_based_trials_plan_their_reports_and_end_completed():
    from types import SimpleNamespace

    import pandas as pd

    from pipeline.tune.config import planned_reports
    from pipeline.tune.report import trial_row

    cfg = load_train_config(None, {"flavour": "debug", "epochs": 1000, "eval_interval": 1_000_000,
                                   "global_batch_size": 8, "max_minutes": 1.0, "eval_minutes": 0.25})
    meta = SimpleNamespace(vocab_size=6, seq_len=16, num_puzzle_identifiers=1, counts={"train": 64})
    assert planned_reports(cfg, meta) == 4  # every 0.25 minutes of training; the last at the budget's end
    history = pd.DataFrame({"eval/exact_accuracy": [0.0, 0.25, 0.5, 0.5], "step": [5, 10, 15, 20],
                            "train_minutes": [0.25, 0.5, 0.75, 1.0], "time_total_s": [20, 40, 60, 80]})

    def row(frame):
        return trial_row(SimpleNamespace(metrics={"trial_id": "t"}, metrics_dataframe=frame, error=None), cfg, {},
                         meta, "eval/exact_accuracy", "max", None)

    full, cut = row(history), row(history[:2])
    assert (full.status, full.train_minutes, full.wall_minutes) == ("completed", 1.0, pytest.approx(80 / 60))
    assert full.curve == [(0.25, 0.0), (0.5, 0.25), (0.75, 0.5), (1.0, 0.5)]
    assert (cut.status, cut.train_minutes) == ("early_stopped", 0.5)


def test_sweep_clock_counts_parts_and_rings_like_ctrl_c(tmp_path):
    import time

    from pipeline.tune.budget import SweepClock

    rang = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: rang.append(True))  # as Ray Tune's handler during a fit
    try:
        clock = SweepClock(tmp_path, budget_s=100, stop_after_s=0.3)
        clock.start()
        time.sleep(1.0)
        clock.stop()
        assert rang == [True] and clock.reason == "part" and 0.9 < clock.spent_s < 5
        clock = SweepClock(tmp_path, budget_s=clock.spent_s + 0.3)  # the budget's rest comes first
        clock.start()
        time.sleep(1.0)
        clock.stop()
        assert rang == [True, True] and clock.reason == "budget" and clock.left_s() < 0
        with pytest.raises(ValueError, match="has spent its time_budget_s"):
            SweepClock(tmp_path, budget_s=1).start()
        quiet = SweepClock(tmp_path / "other", budget_s=None)
        quiet.start()
        quiet.stop()
        assert quiet.reason is None and len(rang) == 2
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_curve_keys_name_the_trials_values():
    from pipeline.tune.curves import curve_key

    assert curve_key({"model.l_cycles": 4, "model.h_cycles": 2, "model.q_target": "none"}) == \
        "curves/h_cycles-2_l_cycles-4_q_target-none"
    assert curve_key({"optim.lr": 0.001, "name": "a:b"}) == "curves/name-a_b_lr-0.001"


def test_a_resume_may_raise_the_budget_and_nothing_else():
    from pipeline.tune.run import RESUME_MAY_CHANGE, changed_keys

    saved = {"time_budget_s": 10, "space": {"model.h_cycles": {"grid": [1, 2]}}, "scheduler": {"grace_period": 1}}
    new = {"time_budget_s": 20, "space": {"model.h_cycles": {"grid": [1]}}, "scheduler": {"grace_period": 2}}
    assert changed_keys(saved, new) == {"time_budget_s": (10, 20), "scheduler.grace_period": (1, 2),
                                        "space.model.h_cycles": ('{"grid": [1, 2]}', '{"grid": [1]}')}
    assert RESUME_MAY_CHANGE == ("time_budget_s",)
