"""The reasoning benchmark's files and their checks, without Ray: the committed benchmark loads (every variant a valid
training run with the budget set, the dataset minimal 6×6), bad benchmark files and flags are refused by name."""

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline.benchmark.config import ReasoningBench, load_bench
from pipeline.benchmark.reasoning import load_variant
from pipeline.cli import main
from pipeline.cli.bench import pick_variants
from pipeline.core.config_io import CONFIGS
from pipeline.data.config import load_config

BENCH = CONFIGS / "bench-reasoning.yaml"


def test_the_committed_benchmark_compares_hrm_and_trm_on_minimal_6x6():
    bench = load_bench(BENCH)
    assert list(bench.variants) == ["hrm", "hrm-fast", "trm", "trm-mlp"] and bench.minutes == 60
    data = load_config(bench.path(bench.data_config, CONFIGS))
    assert data.task == "sudoku" and tuple(data.sudoku.box) == (2, 3)
    assert data.sudoku.givens is None and data.sudoku.source == "generate"  # minimal: no clue added back
    configs = {label: load_variant(bench, CONFIGS, label, "t") for label in bench.variants}
    for label, cfg in configs.items():
        assert (cfg.name, cfg.max_minutes, cfg.eval_minutes) == (f"reasoning-{label}-t", 60, 5)
        assert not cfg.tracking.register and cfg.tracking.experiment == "hrm-bench"
    batches = {cfg.global_batch_size for cfg in configs.values()}
    assert len(batches) == 1, "the variants train on the same batch size"
    assert configs["hrm"].model["q_target"] == "extra_segment"
    assert configs["hrm-fast"].model["q_target"] == "none"
    assert configs["trm"].flavour == "trm" and configs["trm-mlp"].flavour == "trm-mlp"


@pytest.mark.parametrize("change, message", [
    ({"variants": {}}, "variants is empty"),
    ({"minutes": 0}, "minutes must be a number of minutes > 0"),
    ({"minutes": 2, "eval_minutes": 5}, "eval_minutes 5 is longer than the budget"),
    ({"votes": 0}, "deeper and votes must be >= 1"),
    ({"variants": {"a/b": "x.yaml"}}, "a variant's label must be a plain folder name"),
])
def test_bad_benchmark_settings_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        ReasoningBench(**{"variants": {"hrm": "bench-reasoning-hrm.yaml"}, **change})


def test_unknown_keys_and_wrong_types_in_the_file_are_refused(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump({"variants": {"hrm": "x.yaml"}, "minuts": 3}))
    with pytest.raises(ValueError, match="minuts"):
        load_bench(path)
    path.write_text(yaml.safe_dump({"variants": {"hrm": "x.yaml"}, "minutes": "ten"}))
    with pytest.raises((TypeError, ValueError), match="minutes"):
        load_bench(path)


def test_variants_flag_picks_and_orders_and_refuses_unknown_labels():
    bench = load_bench(BENCH)
    assert list(pick_variants(bench, "trm-mlp, hrm").variants) == ["trm-mlp", "hrm"]
    with pytest.raises(ValueError, match=r"unknown \['gpt'\]; the file has \['hrm', 'hrm-fast', 'trm', 'trm-mlp'\]"):
        pick_variants(bench, "hrm,gpt")


def test_cli_refuses_bad_flags_before_any_work(tmp_path):
    result = CliRunner().invoke(main, ["bench", "reasoning", "--variants", "nope", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "unknown ['nope']" in result.output
    result = CliRunner().invoke(main, ["bench", "reasoning", "--minutes", "-1", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "minutes must be a number of minutes > 0" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_missing_variant_file_is_named_before_the_dataset_is_built(tmp_path):
    bench = ReasoningBench(variants={"ghost": "no-such-run.yaml"})
    with pytest.raises(FileNotFoundError, match="no-such-run.yaml"):
        load_variant(bench, Path(tmp_path), "ghost", "t")
