"""Every shipped sweep file loads, its space fits its training run file, its time budget fits its trials; the
reasoning study's sweeps are the grid issue #27 asks for, measured in training minutes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.train.config import load_train_config
from pipeline.tune.config import check_budget, load_sweep_config, minimum_minutes, train_config_path
from pipeline.tune.plan import planned_trials
from pipeline.tune.space import candidates, check_space

CONFIGS = Path(__file__).resolve().parents[3] / "pipeline" / "configs"
SWEEPS = sorted(CONFIGS.glob("sweep-*.yaml"))


def load(path: Path):
    sweep = load_sweep_config(path)
    return sweep, load_train_config(train_config_path(sweep, path), sweep.overrides)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_shipped_sweep_loads_and_fits_its_budget(path):
    sweep, base = load(path)
    check_space(sweep.space, searcher=sweep.searcher, base=base, fixed=sweep.overrides)
    check_budget(sweep, base, planned_trials(sweep))
    if sweep.data_config:
        assert (path.parent / sweep.data_config).is_file()


@pytest.mark.parametrize("name, trials", [("sweep-reasoning-depth", 54), ("sweep-reasoning-depth-trm", 9)])
def test_the_reasoning_study_counts_training_minutes(name, trials):
    sweep, base = load(CONFIGS / f"{name}.yaml")
    assert planned_trials(sweep) == trials
    s = sweep.scheduler
    assert (s.kind, s.time_attr, s.metric, sweep.metric) == ("asha", "train_minutes", "eval/accuracy",
                                                             "eval/exact_accuracy")
    assert base.max_minutes == 30 and base.eval_minutes <= s.grace_period
    assert trials * minimum_minutes(sweep, base) * 60 <= sweep.time_budget_s
    if name == "sweep-reasoning-depth":  # at least the M_max, N, T and both halting rules
        assert {k: candidates(v) for k, v in sweep.space.items()} == {
            "model.halt_max_steps": [2, 4, 8], "model.h_cycles": [1, 2, 3], "model.l_cycles": [1, 2, 4],
            "model.q_target": ["none", "extra_segment"]}
