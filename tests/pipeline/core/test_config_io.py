"""pipeline.core.config_io: strict loading of every pipeline config, errors that name the file and the dotted key."""

import datetime

import pytest

from hrm.config import ModelConfig
from hrm.step import OptimConfig
from pipeline.core.config_io import flatten, from_dict, set_dotted, to_dict
from pipeline.data.config import DataConfig
from pipeline.train.config import TrainConfig, load_train_config, run_model_config
from pipeline.tune.config import SweepConfig, load_sweep_config


@pytest.mark.parametrize("cls, data, error, message", [
    (TrainConfig, {"optim": {"lr": "abc"}}, TypeError, "run.yaml: optim.lr: expected a number, got str 'abc'"),
    (TrainConfig, {"scaling": {"num_workers": 2.0}}, TypeError,
     "run.yaml: scaling.num_workers: expected an integer or a list of 2 integers, got float 2.0"),
    (TrainConfig, {"tracking": {"register": "yes"}}, TypeError,
     "run.yaml: tracking.register: expected bool, got str 'yes'"),
    (TrainConfig, {"optim": 5}, TypeError, "run.yaml: optim: expected a mapping, got int 5"),
    (TrainConfig, {"model": ["hidden_size"]}, TypeError, "run.yaml: model: expected a mapping, got list"),
    (TrainConfig, {"scaling": {"gpus": 1}}, ValueError,
     "run.yaml: scaling: unknown key(s) ['gpus']; allowed: ['cpus_per_worker', 'gpus_per_worker', 'num_workers', "
     "'resize_check_seconds', 'torch_threads', 'use_gpu']"),
    (TrainConfig, {"optim": {"lr": -1.0}}, ValueError,
     "run.yaml: optim: invalid optim config: lr must be a finite number >= 0, got -1.0"),
    (TrainConfig, {"epochs": 0}, ValueError, "run.yaml: invalid training config: epochs must be >= 1, got 0"),
    (DataConfig, {"arc": {"train_sources": ["a", 3]}}, TypeError,
     "run.yaml: arc.train_sources[1]: expected str, got int 3"),
    (DataConfig, {"arc": {"eval_sources": "arc-agi-1/evaluation"}}, TypeError,
     "run.yaml: arc.eval_sources: expected a list, got str 'arc-agi-1/evaluation'"),
    (DataConfig, {"sudoku": {"box": [2, 3, 4]}}, ValueError, "run.yaml: sudoku.box: expected 2 items, got 3"),
    (DataConfig, {"sudoku": {"box": [2]}}, ValueError, "run.yaml: sudoku.box: expected 2 items, got 1"),
    (DataConfig, {"sudoku": {"box": [2, "3"]}}, TypeError, "run.yaml: sudoku.box[1]: expected an integer, got str"),
    (DataConfig, {"maze": {"source": "web"}}, ValueError,
     "run.yaml: maze.source: must be one of ['generate', 'csv'], got 'web'"),
    (SweepConfig, {"scheduler": {"kind": "hyperband"}}, ValueError,
     "run.yaml: scheduler.kind: must be one of ['asha', 'fifo'], got 'hyperband'"),
    (SweepConfig, {"scheduler": {"max_t": "all"}}, TypeError,
     "run.yaml: scheduler.max_t: expected a number, got str 'all'"),
])
def test_errors_name_the_file_and_the_dotted_key(cls, data, error, message):
    with pytest.raises(error) as err:
        from_dict(cls, data, where="run.yaml")
    assert message in str(err.value)


def test_every_problem_is_listed_one_a_line():
    with pytest.raises(ValueError) as err:
        from_dict(TrainConfig, {"optim": {"lr": "x", "zz": 1}, "seed": "one", "bogus": 2}, where="r.yaml")
    lines = str(err.value).splitlines()
    assert len(lines) == 4 and all(line.startswith("r.yaml: ") for line in lines)
    assert lines[-1].startswith("r.yaml: unknown key(s) ['bogus']; allowed: ['checkpoint_keep', ")


def test_what_today_accepts():
    cfg = from_dict(DataConfig, {"sudoku": {"box": [2, 3], "test_fraction": 0, "givens": None}})
    assert cfg.sudoku.box == (2, 3) and cfg.sudoku.test_fraction == 0.0 and type(cfg.sudoku.test_fraction) is float
    cfg = from_dict(TrainConfig, {"optim": OptimConfig(lr=3e-4), "ema": None, "model": {"anything": [1, {"a": 2}]}})
    assert cfg.optim.lr == 3e-4 and cfg.model == {"anything": [1, {"a": 2}]}
    same = TrainConfig()
    assert from_dict(TrainConfig, same) is same
    assert from_dict(ModelConfig, {"rope_theta": float("inf")}).rope_theta == float("inf")


def test_yaml_dates_are_refused_where_they_are(tmp_path):
    """YAML reads 2024-01-01 as a date: refused (as before) with its key, under free-form sections too."""
    for data, key in [({"name": datetime.date(2024, 1, 1)}, "name"),
                      ({"model": {"rope_theta": datetime.date(2024, 1, 1)}}, "model.rope_theta")]:
        with pytest.raises(TypeError, match=f"r.yaml: {key}: expected a string, number, boolean, list or mapping, "
                                            r"got date datetime.date\(2024, 1, 1\) \(quote a date"):
            from_dict(TrainConfig, data, where="r.yaml")
    run = tmp_path / "run.yaml"
    run.write_text("name: 2024-01-01\n")
    with pytest.raises(TypeError, match="run.yaml: name: .* got date"):
        load_train_config(run)
    run.write_text("name: '2024-01-01'\n")
    assert load_train_config(run).name == "2024-01-01"


def test_keys_must_be_strings():
    with pytest.raises(TypeError, match=r"r.yaml: model: expected str keys, got int 1"):
        from_dict(TrainConfig, {"model": {1: 2}}, where="r.yaml")


def test_error_messages_stay_short():
    with pytest.raises(TypeError) as err:
        from_dict(TrainConfig, {"data": ["x" * 50] * 1000}, where="r.yaml")
    assert len(str(err.value)) < 300 and "characters)" in str(err.value)


def test_set_on_nested_keys_of_a_train_config(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("optim: {lr: 1e-3}\nscaling: null\n")
    cfg = load_train_config(run, {"optim.weight_decay": 0.5, "scaling.num_workers": 2, "global_batch_size": 8,
                                  "model.h_cycles": 3})
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.scaling.num_workers) == (1e-3, 0.5, 2)
    assert cfg.model == {"h_cycles": 3}
    run.write_text("optim: {lr: 1e-3}\n")
    with pytest.raises(TypeError, match=f"{run}: optim.lr: expected a number, got str 'fast'"):
        load_train_config(run, {"optim.lr": "fast"})
    with pytest.raises(ValueError, match=f"{run}: model: unknown key\\(s\\) \\['h_cycle'\\]; allowed: \\["):
        load_train_config(run, {"model.h_cycle": 3})
    with pytest.raises(TypeError, match=f"{run}: model: hidden_size: expected an integer, got str '64'"):
        load_train_config(run, {"model.hidden_size": "64"})
    with pytest.raises(ValueError, match=r"--set optim.lr.x: optim.lr is 0.001, not a mapping"):
        load_train_config(run, {"optim.lr.x": 1})


def test_set_on_nested_keys_of_a_sweep_config(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("scheduler: {kind: fifo}\nspace: {model: {h_cycles: {grid: [1, 2]}}}\n")
    cfg = load_sweep_config(sweep, {"scheduler.grace_period": 2, "overrides.optim.lr": 1e-3,
                                    "space.model.l_cycles": {"grid": [1]}})
    assert (cfg.scheduler.kind, cfg.scheduler.grace_period) == ("fifo", 2)
    assert cfg.overrides == {"optim.lr": 1e-3}
    assert cfg.space == {"model.h_cycles": {"grid": [1, 2]}, "model.l_cycles": {"grid": [1]}}
    assert load_sweep_config(sweep, {"space.h_cycles": None}).space == {}  # KEY=null drops an entry
    with pytest.raises(ValueError, match=f"{sweep}: scheduler: unknown key\\(s\\) \\['grace'\\]"):
        load_sweep_config(sweep, {"scheduler.grace": 2})
    with pytest.raises(TypeError, match=f"{sweep}: scheduler.brackets: expected an integer, got bool True"):
        load_sweep_config(sweep, {"scheduler.brackets": True})


def test_set_dotted():
    data = {"a": {"b": 1}, "n": None}
    set_dotted(data, "a.c", 2)
    set_dotted(data, "n.x.y", 3)
    set_dotted(data, "top", [1])
    assert data == {"a": {"b": 1, "c": 2}, "n": {"x": {"y": 3}}, "top": [1]}
    with pytest.raises(ValueError, match="--set a.b.c: a.b is 1, not a mapping"):
        set_dotted(data, "a.b.c", 4)


def test_run_model_config_takes_the_dataset_sizes():
    class Meta:
        vocab_size, seq_len, num_puzzle_identifiers = 6, 16, 3

    cfg = load_train_config(None, {"model.h_cycles": 3, "name": "r1"})
    model = run_model_config(cfg, Meta, forward_dtype="float32")
    assert (model.vocab_size, model.seq_len, model.num_puzzle_identifiers) == (6, 16, 3)
    assert (model.h_cycles, model.hidden_size, model.forward_dtype) == (3, 64, "float32")  # debug flavour: D 64
    with pytest.raises(ValueError, match="run 'r1': model: forward_dtype: must be one of"):
        run_model_config(cfg, Meta, forward_dtype="int8")


def test_to_dict_and_flatten_round_trip():
    cfg = load_train_config(None, {"optim.lr": 2e-4, "model.h_cycles": 3})
    flat = flatten(cfg)
    assert flat["optim.lr"] == 2e-4 and flat["model.h_cycles"] == 3 and flat["scaling.num_workers"] == 1
    assert load_train_config(None, flat) == cfg
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
