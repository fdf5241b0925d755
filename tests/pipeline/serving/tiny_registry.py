"""Test helper: a tiny (untrained) HRM for 4×4 Sudoku, exported like a training checkpoint and registered in an
MLflow store through the training job's own code (``pipeline.tracking.runs``), with the ``champion`` alias.

Imported by tests/pipeline/serving and tests/notebooks (which put this folder on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path

import torch

from hrm.config import model_config
from hrm.model import HRM
from hrm.tasks.sudoku import SudokuTask
from pipeline.core.export import write as write_export

BOX = (2, 2)
PUZZLES = ["1.3.....2...4..1", "..4.4.....1...3.", "2..1....3......4"]  # 16 cells each: 4×4 Sudoku
SERVE_MODEL, SERVE_HALT_MAX = "hrm-serve-test", 3  # the model of the serving tests' shared registry (conftest.py)


def register_tiny_model(tracking_uri: str, name: str, folder: Path, *, box: tuple[int, int] = BOX,
                        halt_max_steps: int = 3, seed: int = 0, halt_first: bool = False) -> str:
    """Register a fresh debug-flavour Sudoku model of ``box`` as ``name`` (alias ``champion``); return its version.

    ``halt_first``: its Q-head says halt (q_halt 1 > q_continue 0) for every puzzle, so adaptive solving stops after
    one segment while full-depth solving runs all ``halt_max_steps``."""
    from pipeline.tracking import registry, runs

    task = SudokuTask(box)
    torch.manual_seed(seed)
    config = model_config("debug", vocab_size=task.vocab_size, seq_len=task.seq_len, num_puzzle_identifiers=1,
                          halt_max_steps=halt_max_steps, forward_dtype="float32")
    model = HRM(config).eval()
    if halt_first:
        with torch.no_grad():
            model.q_head.bias.copy_(torch.tensor([1.0, 0.0]))
    export = Path(folder) / "export"
    export.mkdir(parents=True, exist_ok=True)
    write_export(export, model, {"task": "sudoku", "task_args": {"box": list(box)},
                                 "metrics": {"eval/exact_accuracy": 0.0, "step": 0}})
    run_id = runs.start_run(tracking_uri, "tests", f"{name}-run", {"flavour": "debug"}, {"task": "sudoku"}, [])
    example = PUZZLES[:1] if tuple(box) == BOX else [task.render(task.parse("." * task.seq_len))]
    logged = registry.log_model(tracking_uri, run_id, export, name, example)
    runs.end_run(tracking_uri, run_id)
    version = str(logged.registered_model_version)
    registry.promote_if_better(tracking_uri, name, version, "eval/exact_accuracy", 0.0)
    return version
