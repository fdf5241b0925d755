"""#25: every paper data config builds from a fresh clone — the shipped YAML as it is, only its counts cut to a test's
size with ``--set``, built from a folder outside the repository, so that nothing it reads may lie beside the checkout
(../shared)."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from hrm.tasks.arc_sources import load_source
from hrm.tasks.maze_solver import is_valid_optimal, shortest_path_length
from hrm.tasks.sudoku_solver import generate_many, rate_many
from pipeline.data.loader import load_split, read_metadata
from tests.pipeline.data.test_data_build import run

CONFIGS = Path(__file__).resolve().parents[3] / "pipeline" / "configs"

# What each shipped config's counts become here; every other key stays as shipped (sources, ratings, sizes, paths).
TINY = {
    "sudoku-extreme-1k": {"count": 4, "augmentations": 2},
    "maze-hard-1k": {"train_count": 1, "test_count": 1},
    "arc-agi-1": {"max_tasks": 1, "variants": 2},
    "arc-agi-2": {"max_tasks": 1, "variants": 2},
    "sudoku-extreme-csv": {"subsample": 3, "augmentations": 2},
}


def official_csv(path: Path, puzzles: np.ndarray, solutions: np.ndarray) -> None:
    """A file in the published Sudoku-Extreme layout: ``source,question,answer,rating``, '.' for a blank."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["source,question,answer,rating"]
    for p, s in zip(puzzles, solutions):
        lines.append("gen," + "".join("." if v == 0 else str(v) for v in p.ravel()) + ","
                     + "".join(map(str, s.ravel())) + ",3")
    path.write_text("\n".join(lines) + "\n")


def expected_arc(cfg: dict) -> dict[str, int]:
    """Rows of an ARC build from the sources themselves: every pair of a training-source task and the demonstrations
    of an evaluation task, ``variants`` times, in train; the evaluation test pairs in test."""
    sec = cfg["arc"]

    def first(source):
        tasks = load_source(source)
        return [tasks[t] for t in sorted(tasks)[: sec["max_tasks"]]]

    train = sum(len(t["train"]) + len(t["test"]) for s in sec["train_sources"] for t in first(s))
    demos = sum(len(t["train"]) for s in sec["eval_sources"] for t in first(s))
    tests = sum(len(t["test"]) for s in sec["eval_sources"] for t in first(s))
    return {"train": sec["variants"] * (train + demos), "test": sec["variants"] * tests}


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_paper_data_config_builds_from_a_fresh_clone(ray_session, tmp_path, monkeypatch, name):
    shipped = yaml.safe_load((CONFIGS / f"data-{name}.yaml").read_text())
    task = shipped["task"]
    cfg = {**shipped, task: {**shipped[task], **TINY[name]}}
    monkeypatch.chdir(tmp_path)  # relative paths of the config (the CSVs) are the user's, from where they run hrm
    if name == "sudoku-extreme-csv":
        p, s, _, _ = generate_many(11, 9, (3, 3))
        official_csv(tmp_path / cfg["sudoku"]["csv_train"], p[:6], s[:6])
        official_csv(tmp_path / cfg["sudoku"]["csv_test"], p[6:], s[6:])
    sets = [a for key, value in TINY[name].items() for a in ("--set", f"{task}.{key}={value}")]
    result = run("build", task, "--config", CONFIGS / f"data-{name}.yaml", *sets, "--out", "built")
    assert result.exit_code == 0, result.output
    meta, test = read_metadata(tmp_path / "built"), load_split(tmp_path / "built", "test")
    expected = {
        "sudoku-extreme-1k": {"train": 2 * 2, "test": 2},  # count 4, test_fraction 0.5, 2 variants a training puzzle
        "maze-hard-1k": {"train": 1, "test": 1},
        "sudoku-extreme-csv": {"train": 3 * 2, "test": 3},  # 3 of 6 training rows, every test row
    }.get(name) or expected_arc(cfg)
    assert meta.counts == expected
    if task == "sudoku":
        assert meta.seq_len == 81
        if name == "sudoku-extreme-1k":  # the test puzzles are originals: each rated >= 10 by an independent count
            solutions, fails = rate_many(test["inputs"] - 1)
            assert (solutions == 1).all() and (fails >= 10).all()
    elif task == "maze":
        mazes, labels = test["inputs"].reshape(-1, 30, 30), test["labels"].reshape(-1, 30, 30)
        assert all(shortest_path_length(m) > 110 and is_valid_optimal(y, m) for m, y in zip(mazes, labels))
    else:
        assert (meta.seq_len, len(meta.puzzle_identifiers)) == (900, meta.num_puzzle_identifiers)
