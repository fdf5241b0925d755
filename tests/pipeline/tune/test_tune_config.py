"""Sweep configs, spaces, schedulers, reports and clocks, checked without running a sweep."""

from __future__ import annotations

import signal

import pytest
import yaml
from click.testing import CliRunner

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
    from pipeline.tune.plan import Plan
    from pipeline.tune.run import _tune_config
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
