"""Every config's YAML: numbers as Python writes them, alias bombs refused, errors that quote at most a few lines."""

import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.core.yaml_io import MAX_NODES, parse
from pipeline.data.config import load_config
from pipeline.train.config import load_train_config

BOMB = "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefghi", "bcdefghij"))
BOMB = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + BOMB  # 9^10 ≈ 3.5 billion values once expanded, 400 bytes


@pytest.mark.parametrize("text, expected", [
    ("1e-4", 1e-4), ("3E5", 3e5), ("-2.5e+3", -2500.0), ("7.0e-5", 7e-5), ("12", 12), ("1_000", 1000),
    (".5", 0.5), ("-.inf", float("-inf")), ("'1e-4'", "1e-4"), ("x1e3", "x1e3"), ("true", True), ("null", None),
])
def test_scalars_load_as_python_writes_them(text, expected):
    value = parse(text, "t")
    assert value == expected and type(value) is type(expected)


def test_a_learning_rate_in_e_notation_loads_everywhere(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("optim: {lr: 1e-4, puzzle_emb_lr: 1E-2}\n")
    cfg = load_train_config(run, {"optim.weight_decay": parse("1e-1", "--set")})
    assert (cfg.optim.lr, cfg.optim.puzzle_emb_lr, cfg.optim.weight_decay) == (1e-4, 1e-2, 0.1)
    data = tmp_path / "data.yaml"
    data.write_text("task: sudoku\nsudoku: {test_fraction: 5e-2}\n")
    assert load_config(data).sudoku.test_fraction == 0.05


def test_set_values_use_the_same_reader(tmp_path):
    result = CliRunner().invoke(main, ["train", "--set", "optim.lr=1e-4", "--set", "data=" + str(tmp_path / "none")])
    assert result.exit_code != 0 and "dataset not found" in result.output  # the lr was accepted
    result = CliRunner().invoke(main, ["train", "--set", "optim.lr=[1, 2"])
    assert result.exit_code == 2 and "--set optim.lr: not valid YAML" in result.output


def test_alias_bomb_is_refused_before_expansion(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 500
    for load in (lambda: load_train_config(path), lambda: load_config(path)):
        with pytest.raises(ValueError, match=f"more than {MAX_NODES:,} values once its aliases"):
            load()
    assert parse("x: &a [1, 2]\ny: *a\n", "t") == {"x": [1, 2], "y": [1, 2]}  # a few aliases are fine


def test_alias_bomb_under_a_memory_limit(tmp_path):
    """In a process limited to 1 GiB of address space, the bomb is refused with a message, not an out-of-memory."""
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB.replace("[1, 1", "[{x: 1}, {x: 1}"))
    code = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from click.testing import CliRunner
        from pipeline.cli import main
        result = CliRunner().invoke(main, ["train", "--config", {str(path)!r}])
        print(result.exit_code, result.output)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("1 ") and "once its aliases (*name) are expanded" in out.stdout
    assert len(out.stdout) < 1000


def test_error_messages_quote_at_most_a_few_hundred_characters(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: [" + ", ".join(["abcdefgh"] * 20000) + "]\n")
    result = CliRunner().invoke(main, ["train", "--config", str(path)])
    assert result.exit_code == 1 and "name: expected str" in result.output
    assert len(result.output) < 600 and "characters)" in result.output
