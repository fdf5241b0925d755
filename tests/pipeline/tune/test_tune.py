"""Real Ray Tune sweeps of tiny models on a local Ray (slow): ASHA, MLflow runs, reports, resume, parts, budgets."""

from __future__ import annotations

import math
import os
import pickle
import signal
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from pipeline.core.config_io import from_dict
from pipeline.tune.config import load_sweep_config


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
            "space": {"optim.lr": {"grid": [1e-3, 0.0]}, "model.halt_max_steps": {"grid": [2, 3]}}}
    return load_sweep_config(None, {**{f"overrides.{k}": v for k, v in data.pop("overrides").items()},
                                    **{f"space.{k}": v for k, v in data.pop("space").items()}, **data, **sets})


def child_runs(workdir, parent):
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tune-tests").experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")


MINUTES = 0.06  # a trial's training budget in the ASHA sweep: 3.6 s, evaluated every 1.2 s of training
# The ASHA sweep's three trials, in Tune's grid order, two at a time: the two that learn start together, and the one
# that cannot (lr 0) starts when one of them ends, so it meets both at ASHA's first rung and is stopped there.
LRS = [1e-3, 3e-3, 0.0]


@pytest.fixture(scope="module")
def asha_sweep(workdir, dataset):
    """ASHA on minutes of training: rungs at 0.02 and 0.04 of the trials' 0.06 minutes, comparing token accuracy
    (scheduler.metric) while the sweep ranks by exact accuracy."""
    from pipeline.tune.run import run_sweep

    return run_sweep(sweep_config(workdir, dataset, "asha", metric="eval/exact_accuracy", **{
        "space.optim.lr": {"grid": LRS}, "space.model.halt_max_steps": None, "overrides.model.halt_max_steps": 2,
        "scheduler.time_attr": "train_minutes", "scheduler.grace_period": 0.02, "scheduler.metric": "eval/accuracy",
        "overrides.max_steps": None, "overrides.epochs": 10_000, "overrides.eval_interval": 1_000_000,
        "overrides.max_minutes": MINUTES, "overrides.eval_minutes": 0.02}))


@pytest.mark.slow
def test_sweep_stops_weak_trials_and_reports(workdir, asha_sweep):
    out = asha_sweep
    assert not out.interrupted and len(out.rows) == len(LRS)
    by_lr = {r.params["optim.lr"]: r for r in out.rows}
    assert set(by_lr) == set(LRS)
    assert all(r.status != "error" for r in out.rows)
    stopped = [r for r in out.rows if r.status == "early_stopped"]
    # ASHA stopped at least one trial at a rung of training minutes, before its budget; the others ran it all
    assert stopped and all(r.reports < 3 and r.train_minutes < MINUTES for r in stopped)
    assert all(r.train_minutes >= MINUTES for r in out.rows if r.status == "completed")
    assert all(r.curve and r.curve[-1][0] == pytest.approx(r.train_minutes) for r in out.rows)
    assert out.best is not None and all(0 <= r.best_exact <= 1 for r in out.rows)
    lr0 = by_lr[0.0].best.get("eval/accuracy", 0)  # by ASHA's metric the lr 0 trial loses
    assert max(by_lr[lr].best["eval/accuracy"] for lr in LRS if lr) > lr0


@pytest.mark.slow
def test_sweep_parent_run_holds_every_trials_curve_and_what_asha_saved(workdir, asha_sweep):
    from pipeline.tune.curves import curve_key

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    for row in asha_sweep.rows:  # one metric per trial, its steps the seconds of training at its reports
        points = client.get_metric_history(asha_sweep.parent_run_id, curve_key(row.params))
        assert sorted((m.step, m.value) for m in points) == sorted((round(t * 60), e) for t, e in row.curve)
    text = (workdir / "sweeps" / "asha" / "report" / "sweep_report.md").read_text()
    assert f"ASHA: {len(LRS)} trials ran" in text and "% saved" in text


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
def test_a_resumed_sweep_gets_asha_s_rungs_back_from_its_trials_reports(workdir, asha_sweep):
    """Tune restores ASHA blank (pipeline.tune.rungs): on a resume the rungs come back from the saved reports."""
    from ray import tune

    from pipeline.tune.run import run_trial
    from pipeline.tune.rungs import restore_rungs, saved_reports

    path = workdir / "sweeps" / "asha" / "tune"
    reports = saved_reports(path, "train_minutes", "eval/exact_accuracy")
    assert {row.trial_id: [(t, e) for _, trial, t, e in reports if trial == row.trial_id]
            for row in asha_sweep.rows} == {row.trial_id: row.curve for row in asha_sweep.rows}
    tuner = tune.Tuner.restore(str(path), tune.with_parameters(run_trial, setup={}))
    assert restore_rungs(tuner, path, "train_minutes", "eval/accuracy") == len(LRS)
    rungs = tuner._local_tuner._tune_config.scheduler._brackets[0]._rungs
    first = min(rungs)[1]  # every trial reported at the first rung (0.02 training minutes)
    assert set(first) == {row.trial_id for row in asha_sweep.rows}


@pytest.mark.slow
def test_registered_checkpoint_is_the_best_trials_best_kept_one(workdir, asha_sweep):
    import json
    from pathlib import Path

    from pipeline.train.run import run_folder
    from pipeline.tune.finish import best_checkpoint
    from pipeline.tune.plan import BASE_FILE, trial_name
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
def test_a_sweep_stopped_and_resumed_reruns_no_trial_and_ends_when_its_budget_is_spent(workdir, dataset):
    """A sweep stopped as Ctrl-C stops it (once its first trial has finished) reports its trials so far and records
    the time it ran; a resume refuses a tampered Tune state and changed settings but may raise time_budget_s, trains
    no finished trial again, and once the budget is spent stops the trial running and reports."""
    import json

    from pipeline.tune.budget import SPENT_FILE
    from pipeline.tune.run import prepare_sweep, run_sweep

    sets = {"max_concurrent": 1, "metric": "eval/exact_accuracy", "scheduler.kind": "fifo", "time_budget_s": 600,
            "overrides.max_steps": None, "overrides.epochs": 10_000, "overrides.eval_interval": 1_000_000,
            "overrides.max_minutes": 0.05, "overrides.eval_minutes": 0.025, "space.optim.lr": None,
            "space.model.halt_max_steps": {"grid": [1, 2, 3]}}
    folder, marker = workdir / "sweeps" / "parts", workdir / "interrupted.marker"
    first = run_sweep(sweep_config(workdir, dataset, "parts", **sets), callbacks=[InterruptAfter(1, marker)])
    assert first.interrupted and marker.exists()
    spent = json.loads((folder / SPENT_FILE).read_text())["seconds"]
    assert 3 <= spent < 300  # at least the finished trial's 3 s of training
    report = (folder / "report" / "sweep_report.md").read_text()  # the trials so far
    assert "A sweep stopped to be resumed (--resume)" in report and "| completed |" in report
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    before = {c.data.tags["trial_id"]: c.info.run_id for c in child_runs(workdir, first.parent_run_id)}
    done = before[marker.read_text()]  # the finished trial's run and every step it logged
    steps = [m.step for m in client.get_metric_history(done, "train/lm_loss")]
    assert steps and len(steps) == len(set(steps))

    tuner_pkl = folder / "tune" / "tuner.pkl"
    kept, planted = tuner_pkl.read_bytes(), workdir / "planted.ran"
    tuner_pkl.write_bytes(pickle.dumps(Planted(planted)))  # a crafted state: unpickling it runs code
    with pytest.raises(ValueError, match=r"not resuming sweep folder .*parts: its Tune state is not the one hrm "
                                         r"tune sealed when the sweep last stopped \(changed: tune/tuner.pkl\)"):
        run_sweep(sweep_config(workdir, dataset, "parts", **sets), resume=True)
    assert not planted.exists()
    tuner_pkl.write_bytes(kept)
    with pytest.raises(ValueError, match=r"it was started with other settings \(space.model.halt_max_steps: "
                                         r"\{\"grid\": \[1, 2, 3\]\} -> \{\"grid\": \[1, 2\]\}\)"):
        prepare_sweep(sweep_config(workdir, dataset, "parts", **{**sets, "space.model.halt_max_steps": {
            "grid": [1, 2]}}), resume=True)

    budget = spent + 14  # the rest: less than the two trials left need (3 s of training each, ~15 s of start-up)
    out = run_sweep(sweep_config(workdir, dataset, "parts", **{**sets, "time_budget_s": budget}), resume=True)
    assert not out.interrupted and out.parent_run_id == first.parent_run_id
    assert json.loads((folder / "sweep_config.json").read_text())["time_budget_s"] == budget  # what a resume may raise
    assert json.loads((folder / SPENT_FILE).read_text())["seconds"] >= budget
    after = child_runs(workdir, out.parent_run_id)
    trial_ids = [c.data.tags["trial_id"] for c in after]
    assert len(trial_ids) == len(set(trial_ids)) and set(before) <= set(trial_ids)  # a run per trial, none twice
    assert [m.step for m in client.get_metric_history(done, "train/lm_loss")] == steps  # not trained again
    statuses = {r.trial_id: r.status for r in out.rows}
    assert statuses[marker.read_text()] == "completed" and math.isfinite(
        next(r for r in out.rows if r.trial_id == marker.read_text()).best["eval/exact_accuracy"])
    assert "budget_stopped" in statuses.values() or len(out.rows) < 3, statuses
    text = (folder / "report" / "sweep_report.md").read_text()
    assert ("budget_stopped" in text) or "not run: the sweep's time budget ended first" in text
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
