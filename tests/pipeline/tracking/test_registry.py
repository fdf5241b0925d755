"""The registry's champion: moved only between versions that solve the same puzzles (task, its arguments, sequence
length, vocabulary: tags every registered version carries)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from pipeline.tracking import registry

sys.path.insert(0, str(Path(__file__).parents[1] / "serving"))
from tiny_registry import register_tiny_model  # noqa: E402


def test_a_model_of_other_puzzles_never_takes_the_champion(tmp_path, caplog):
    """The probe's case: a 4×4 model took @champion from a 9×9 one of the same name."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    nine = register_tiny_model(store, "sudoku", tmp_path / "9x9", box=(3, 3))  # the champion (first version)
    four = register_tiny_model(store, "sudoku", tmp_path / "4x4", box=(2, 2))
    client = MlflowClient(store)
    tags = client.get_model_version("sudoku", four).tags
    assert {k: json.loads(tags[k]) for k in registry.KIND_TAGS} == {
        "hrm.task": "sudoku", "hrm.task_args": {"box": [2, 2]}, "hrm.seq_len": 16, "hrm.vocab_size": 6}
    assert registry.promote_if_better(store, "sudoku", four, "eval/exact_accuracy", 0.99) is False  # better, other
    assert str(client.get_model_version_by_alias("sudoku", registry.CHAMPION).version) == nine
    assert "solves other puzzles than the champion" in caplog.text and 'seq_len 16 against 81' in caplog.text
