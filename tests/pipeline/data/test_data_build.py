"""``hrm data build`` / ``show``: Parquet round trip, determinism across workers, metadata, atomicity, errors."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from hrm.tasks.sudoku import (
    SudokuTask,
    apply_transform,
    canonical,
    random_transform,
    valid_solutions,
)
from hrm.tasks.sudoku_solver import generate_many
from pipeline.cli.data import data
from pipeline.data.build_sudoku import transform_indices
from pipeline.data.builder import derive_seed
from pipeline.data.config import load_config
from pipeline.data.loader import load_split, read_metadata

BOX = (2, 3)
SMALL = {"name": "tiny", "task": "sudoku", "seed": 5, "rows_per_file": 60,
         "sudoku": {"box": list(BOX), "count": 60, "min_rating": 0, "test_fraction": 0.25, "augmentations": 4,
                    "chunk_size": 10}}


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(*args):
    return CliRunner().invoke(data, [str(a) for a in args], catch_exceptions=False)


def build(tmp: Path, cfg: dict, out: str, *extra, task="sudoku"):
    config = write_config(tmp / f"{out}.yaml", cfg)
    return run("build", task, "--config", config, "--out", tmp / out, *extra)


def originals(arrays, task):
    """Variant-0 rows: (group ids, puzzles, solutions) decoded."""
    first = np.flatnonzero(np.r_[True, np.diff(arrays["group_ids"]) != 0])
    labels = np.where(arrays["labels"] < 0, 0, arrays["labels"])
    return (arrays["group_ids"][first], [task.decode(arrays["inputs"][i]) for i in first],
            [task.decode(labels[i]) for i in first])


@pytest.fixture(scope="module")
def tiny(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    result = build(tmp, SMALL, "w1", "--workers", 1)
    assert result.exit_code == 0, result.output
    return tmp


# ------------------------------------------------------------------------------------------------ no Ray
def test_vectorised_symmetries_match_apply_transform():
    p, s, _, _ = generate_many(1, 3, (3, 3))
    rng_a, rng_b = np.random.default_rng(4), np.random.default_rng(4)
    index, digits = transform_indices((3, 3), 20, rng_a)
    for k in range(20):
        tf = random_transform((3, 3), rng_b)
        for grid in (p[0], s[2]):
            assert np.array_equal(digits[k][grid.ravel()[index[k]]], apply_transform(grid, tf).ravel())


def test_unknown_config_key_is_an_error(tmp_path):
    bad = write_config(tmp_path / "bad.yaml", {"task": "sudoku", "sudoku": {"count": 3, "bogus_key": 1}})
    result = run("build", "sudoku", "--config", bad, "--out", tmp_path / "x")
    assert result.exit_code != 0 and "bogus_key" in result.output and "bad.yaml" in result.output
    wrong = write_config(tmp_path / "wrong.yaml", {"sudoku": {"count": "many"}})
    result = run("build", "sudoku", "--config", wrong, "--out", tmp_path / "x")
    assert result.exit_code != 0 and "sudoku.count" in result.output
    other = write_config(tmp_path / "maze.yaml", {"task": "maze"})
    result = run("build", "sudoku", "--config", other, "--out", tmp_path / "x")
    assert result.exit_code != 0 and "maze" in result.output
    assert not (tmp_path / "x").exists()


def test_config_defaults_and_fingerprint(tmp_path):
    from pipeline.data.config import fingerprint

    a = load_config(write_config(tmp_path / "a.yaml", SMALL))
    b = load_config(write_config(tmp_path / "b.yaml", {**SMALL, "name": "renamed", "out": "elsewhere"}))
    c = load_config(write_config(tmp_path / "c.yaml", SMALL), seed=6)
    assert a.sudoku.box == BOX and a.maze.size == 30 and fingerprint(a) == fingerprint(b) != fingerprint(c)
    with pytest.raises(ValueError, match="augmentations"):
        load_config(None, task="maze", maze={"augmentations": 9})


# ------------------------------------------------------------------------------------------------ sudoku
def test_metadata_contents(tiny):
    meta = read_metadata(tiny / "w1")
    assert (meta.task, meta.task_args, meta.vocab_size, meta.seq_len) == ("sudoku", {"box": [2, 3]}, 8, 36)
    assert meta.num_puzzle_identifiers == 1 and meta.seed == 5
    assert meta.groups == {"train": 45, "test": 15} and meta.counts == {"train": 180, "test": 15}
    assert meta.config["sudoku"]["augmentations"] == 4 and meta.code_version["package"]
    # three train parts of 60 rows (15 originals × 4), listed in example_id order; nothing else on disk
    assert meta.parts == {"train": 3, "test": 1}
    assert [(p["rows"], p["first"]) for p in meta.files["train"]] == [(60, 0), (60, 60), (60, 120)]
    listed = sorted(p["path"] for split in ("train", "test") for p in meta.files[split])
    on_disk = sorted(str(p.relative_to(tiny / "w1")) for p in (tiny / "w1").rglob("*.parquet"))
    assert listed == on_disk and all(p.startswith(("train/part-", "test/part-")) for p in listed)
    assert sorted(p.name for p in (tiny / "w1").iterdir()) == ["metadata.json", "test", "train"]
    assert not list(tiny.glob("w1.tmp-*"))


def test_parquet_round_trip_matches_task_encoding(tiny):
    task = SudokuTask(BOX)
    expected = {}
    for chunk in range(6):  # the generated chunks, regenerated independently
        p, s, _, _ = generate_many(derive_seed(5, 0, chunk), 10, BOX, 0)
        for q, a in zip(p, s):
            inputs, labels = task.encode((q, a))
            expected[inputs.tobytes()] = labels
    for split in ("train", "test"):
        arrays = load_split(tiny / "w1", split, with_ids=True)
        assert arrays["inputs"].dtype == np.int32 and arrays["labels"].dtype == np.int64
        assert arrays["puzzle_ids"].dtype == np.int32 and not arrays["puzzle_ids"].any()
        assert (arrays["example_ids"] == np.arange(len(arrays["inputs"]))).all()
        groups, puzzles, solutions = originals(arrays, task)
        assert (groups == np.arange(len(groups))).all()
        for q, a in zip(puzzles, solutions):
            inputs, labels = task.encode((q, a))
            assert np.array_equal(expected[inputs.tobytes()], labels)
        # every variant is a valid Sudoku consistent with its puzzle and symmetric to its original
        sol = arrays["labels"] - 1
        assert valid_solutions(sol.reshape(-1, 6, 6), BOX).all()
        given = arrays["inputs"] >= 2
        assert (arrays["inputs"][given] == arrays["labels"][given]).all()
        keys = [canonical(task.decode(x), BOX) for x in arrays["inputs"]]
        by_group = {}
        for g, k in zip(arrays["group_ids"], keys):
            by_group.setdefault(int(g), set()).add(k)
        assert all(len(v) == 1 for v in by_group.values())


def test_no_symmetry_leak_between_splits(tiny):
    task = SudokuTask(BOX)
    keys = {}
    for split in ("train", "test"):
        _, puzzles, _ = originals(load_split(tiny / "w1", split, with_ids=True), task)
        keys[split] = [canonical(p, BOX) for p in puzzles]
        assert len(set(keys[split])) == len(keys[split])  # de-duplicated
    assert not set(keys["train"]) & set(keys["test"])


def same_dataset(a, b):
    """The definition of 'the same dataset': equal metadata (but when and where parts were written) and the same
    rows in the same example_id order when read back."""
    ma, mb = read_metadata(a), read_metadata(b)
    for m in (ma, mb):
        m.path, m.created, m.files = None, None, {s: [(p["rows"], p["first"]) for p in v] for s, v in m.files.items()}
    assert ma == mb
    for split in ("train", "test"):
        x, y = load_split(a, split, with_ids=True), load_split(b, split, with_ids=True)
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x), split


def test_one_and_two_workers_give_the_same_dataset(tiny):
    result = build(tiny, SMALL, "w2", "--workers", 2)
    assert result.exit_code == 0, result.output
    same_dataset(tiny / "w1", tiny / "w2")


def test_rebuild_is_noop_and_different_config_errors(tiny):
    before = (tiny / "w1" / "metadata.json").read_text()
    result = build(tiny, SMALL, "w1")
    assert result.exit_code == 0 and "nothing to do" in result.output
    assert (tiny / "w1" / "metadata.json").read_text() == before
    result = build(tiny, SMALL, "w1", "--seed", 9)
    assert result.exit_code != 0 and "different dataset" in result.output and "seed" in result.output
    assert (tiny / "w1" / "metadata.json").read_text() == before


def test_overwrite_replaces_a_dataset_but_never_other_folders(tiny, tmp_path):
    import shutil

    shutil.copytree(tiny / "w1", tmp_path / "w3")
    for name in ("w3.old-2025backup", "w3.tmp-mine"):  # the user's folders, named like a build's leftovers
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.parquet").write_text("keep me")
    result = build(tmp_path, SMALL, "w3", "--seed", 9, "--overwrite")
    assert result.exit_code == 0, result.output
    assert read_metadata(tmp_path / "w3").seed == 9 and not (tmp_path / "w3" / ".hrm-build").exists()
    assert sorted(p.name for p in tmp_path.glob("w3.*-*")) == ["w3.old-2025backup", "w3.tmp-mine"]  # untouched
    for name in ("w3.old-2025backup", "w3.tmp-mine"):
        assert (tmp_path / name / "results.parquet").read_text() == "keep me"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    result = build(tmp_path, SMALL, "mine", "--overwrite")
    assert result.exit_code != 0 and "not a dataset" in result.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_show_renders_grids(tiny):
    result = run("show", tiny / "w1", "-n", 2)
    assert result.exit_code == 0, result.output
    assert "vocab_size 8, seq_len 36" in result.output and "train 180" in result.output
    assert result.output.count("--- train example") == 2 and "input" in result.output
    assert "------+------" in result.output and " | " in result.output
    result = run("show", tiny / "missing")
    assert result.exit_code != 0 and "does not exist" in result.output


# ------------------------------------------------------------------------------------------------ CSV import
def csv_rows(n=12, seed=3):
    p, s, _, _ = generate_many(seed, n, BOX)
    return [["gen", "".join("." if v == 0 else str(v) for v in p[i].ravel()), "".join(map(str, s[i].ravel())), "0"]
            for i in range(n)], p, s


def write_csv(path, rows):
    path.write_text("source,question,answer,rating\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def csv_config(train, test=None):
    return {"task": "sudoku", "sudoku": {"source": "csv", "box": list(BOX), "csv_train": str(train),
                                         "csv_test": None if test is None else str(test), "min_rating": 0,
                                         "augmentations": 2, "import_chunk": 4}}


def test_csv_import_keeps_rows(ray_session, tmp_path):
    rows, p, s = csv_rows()
    train, test = write_csv(tmp_path / "train.csv", rows[:8]), write_csv(tmp_path / "test.csv", rows[8:])
    result = build(tmp_path, csv_config(train, test), "imp")
    assert result.exit_code == 0, result.output
    task = SudokuTask(BOX)
    got = load_split(tmp_path / "imp", "test")
    for i in range(4):
        inputs, labels = task.encode((p[8 + i], s[8 + i]))
        assert np.array_equal(got["inputs"][i], inputs) and np.array_equal(got["labels"][i], labels)
    assert read_metadata(tmp_path / "imp").counts == {"train": 16, "test": 4}


@pytest.mark.parametrize("kind", ["malformed", "nonunique"])
def test_bad_csv_row_fails_atomically(ray_session, tmp_path, kind):
    rows, _, _ = csv_rows()
    if kind == "malformed":
        rows[5][1] = "x" + rows[5][1][1:]
    else:
        rows[5][1] = "." * 36  # the answer still fits, but the puzzle has many solutions
    train = write_csv(tmp_path / "broken.csv", rows)
    result = build(tmp_path, csv_config(train), "out")
    assert result.exit_code != 0
    assert "broken.csv, line 7" in result.output
    assert ("unknown characters" if kind == "malformed" else "more than one solution") in result.output
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))
    result = build(tmp_path, csv_config(train), "out", "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert "skipped 1 invalid" in result.output
    meta = read_metadata(tmp_path / "out")
    assert meta.groups["train"] + meta.groups["test"] == 11
    assert meta.stats["skipped"] + meta.stats["rejected"] == 1


# ------------------------------------------------------------------------------------------------ maze
def test_maze_build(ray_session, tmp_path):
    from hrm.tasks.grids import N_DIHEDRAL, dihedral
    from hrm.tasks.maze import is_valid_optimal

    cfg = {"task": "maze", "maze": {"size": 8, "min_path": 8, "train_count": 12, "test_count": 6,
                                    "augmentations": 3, "chunk_size": 5}}
    result = build(tmp_path, cfg, "maze", task="maze")
    assert result.exit_code == 0, result.output
    meta = read_metadata(tmp_path / "maze")
    assert (meta.vocab_size, meta.seq_len, meta.task_args) == (6, 64, {"size": 8, "min_path": 8})
    assert meta.counts == {"train": 36, "test": 6} and meta.groups == {"train": 12, "test": 6}
    keys = {}
    for split in ("train", "test"):
        arrays = load_split(tmp_path / "maze", split, with_ids=True)
        labels = np.where(arrays["labels"] < 0, 0, arrays["labels"])
        grids = arrays["inputs"].reshape(-1, 8, 8)
        assert all(is_valid_optimal(y.reshape(8, 8), x) for x, y in zip(grids, labels))
        first = {}
        for g, x in zip(arrays["group_ids"], grids):
            first.setdefault(int(g), x)
            assert any(np.array_equal(dihedral(first[int(g)], k), x) for k in range(N_DIHEDRAL))
        keys[split] = {min(dihedral(x, k).tobytes() for k in range(N_DIHEDRAL)) for x in first.values()}
        assert len(keys[split]) == meta.groups[split]
    assert not keys["train"] & keys["test"]


def test_a_long_build_says_how_far_each_stage_got(ray_session, tmp_path, monkeypatch, caplog):
    """In a log, each stage of a build prints how far it got while it runs (every 30 s; here every 50 ms): chunks
    of originals made, parts written of each split."""
    import re

    from pipeline.core import progress

    monkeypatch.setenv("HRM_PROGRESS", "lines")
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.05)
    caplog.set_level(logging.INFO, logger="pipeline.core.progress")
    cfg = {"task": "maze", "rows_per_file": 6, "maze": {"size": 8, "min_path": 8, "train_count": 12,
                                                        "test_count": 6, "augmentations": 3, "chunk_size": 3}}
    result = build(tmp_path, cfg, "maze", "--workers", 1, task="maze")
    assert result.exit_code == 0, result.output
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.core.progress"]
    made = [re.fullmatch(r"maze originals: (\d+)/(\d+) chunks \(\d+%\), \S+ elapsed, ETA \S+", line) for line in lines]
    made = [(int(m[1]), int(m[2])) for m in made if m]
    assert made and all(done <= total for done, total in made), lines
    written = [re.fullmatch(r"maze (train|test): (\d+)/(\d+) parts written \(\d+%\), .*", line) for line in lines]
    written = [(m[1], int(m[2]), int(m[3])) for m in written if m]
    assert ("train", 6) in {(split, total) for split, _, total in written}, lines  # 36 rows, 6 a part
    assert all(done <= total for _, done, total in written), lines
    assert len(made) + len(written) == len(lines), lines


def test_maze_csv_import_and_bad_row(ray_session, tmp_path):
    from hrm.tasks.maze import CHARS
    from hrm.tasks.maze import generate_many as mazes

    q, a = mazes(4, 6, 8, 8)

    def text(grid):
        return "".join(CHARS[v - 1] for v in grid.ravel())

    rows = [["gen", text(x), text(y), "0"] for x, y in zip(q, a)]
    train, test = write_csv(tmp_path / "mtrain.csv", rows[:4]), write_csv(tmp_path / "mtest.csv", rows[4:])
    cfg = {"task": "maze", "maze": {"source": "csv", "size": 8, "min_path": 8, "csv_train": str(train),
                                    "csv_test": str(test), "augmentations": 2}}
    result = build(tmp_path, cfg, "mz", task="maze")
    assert result.exit_code == 0, result.output
    got = load_split(tmp_path / "mz", "test")
    assert np.array_equal(got["inputs"], q[4:].reshape(2, -1)) and np.array_equal(got["labels"], a[4:].reshape(2, -1))
    assert read_metadata(tmp_path / "mz").counts == {"train": 8, "test": 2}
    rows[1][1] = "X" + rows[1][1][1:]
    write_csv(train, rows[:4])
    result = build(tmp_path, cfg, "mz2", task="maze")
    assert result.exit_code != 0 and "mtrain.csv, line 3" in result.output and "unknown characters" in result.output
    assert not (tmp_path / "mz2").exists() and not list(tmp_path.glob("mz2.tmp-*"))


# ------------------------------------------------------------------------------------------------ ARC
def arc_task(rng, n_train=2, n_test=1, size=(3, 4)):
    def grid():
        return rng.integers(0, 10, size).tolist()

    return {"train": [{"input": grid(), "output": grid()} for _ in range(n_train)],
            "test": [{"input": grid(), "output": grid()} for _ in range(n_test)]}


def arc_sources(tmp_path):
    rng = np.random.default_rng(0)
    train_dir, eval_dir = tmp_path / "arc_train", tmp_path / "arc_eval"
    train_dir.mkdir(), eval_dir.mkdir()
    for tid in ("t0", "t1", "t2"):
        (train_dir / f"{tid}.json").write_text(json.dumps(arc_task(rng)))
    tasks = {"e0": arc_task(rng, n_test=2), "e1": arc_task(rng)}
    (eval_dir / "x_challenges.json").write_text(json.dumps(
        {tid: {"train": t["train"], "test": [{"input": p["input"]} for p in t["test"]]} for tid, t in tasks.items()}))
    (eval_dir / "x_solutions.json").write_text(json.dumps(
        {tid: [p["output"] for p in t["test"]] for tid, t in tasks.items()}))
    cfg = {"task": "arc", "arc": {"train_sources": [str(train_dir)], "eval_sources": [str(eval_dir / "x_challenges.json")],
                                  "variants": 3, "test_variants": 2, "tasks_per_chunk": 2}}
    return cfg, tasks, train_dir


def test_arc_build_and_inverse_transforms(ray_session, tmp_path):
    from hrm.tasks.arc import crop, invert
    from pipeline.data.loader import arc_test_refs

    cfg, tasks, _ = arc_sources(tmp_path)
    result = build(tmp_path, cfg, "arc", task="arc")
    assert result.exit_code == 0, result.output
    meta = read_metadata(tmp_path / "arc")
    assert (meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers) == (12, 900, 1 + 5 * 3)
    assert meta.puzzle_identifiers[0] == "<blank>" and meta.puzzle_identifiers[1] == "e0|0"
    assert meta.groups == {"train": 5, "test": 2}
    # training: 3 train tasks × (2 demos + 1 test pair) + 2 eval tasks × 2 demos, 3 variants each
    assert meta.counts == {"train": 3 * (3 * 3 + 2 * 2), "test": 2 * (2 + 1)}
    test = load_split(tmp_path / "arc", "test")
    refs = arc_test_refs(meta, test["puzzle_ids"])
    assert sorted({(r.task_id, r.test_index) for r in refs}) == [("e0", 0), ("e0", 1), ("e1", 0)]
    for ref, label in zip(refs, test["labels"]):
        grid = invert(crop(np.where(label < 0, 0, label)), ref.transform)
        assert np.array_equal(grid, np.array(tasks[ref.task_id]["test"][ref.test_index]["output"]))
    train = load_split(tmp_path / "arc", "train", with_ids=True)
    assert set(test["puzzle_ids"]) <= set(train["puzzle_ids"])  # test variants are trained on (demonstrations)
    assert set(train["puzzle_ids"]) == set(range(1, 16))


def test_arc_bad_grid_fails_or_is_skipped(ray_session, tmp_path):
    cfg, _, train_dir = arc_sources(tmp_path)
    big = arc_task(np.random.default_rng(1))
    big["train"][0]["input"] = [[1] * 31] * 3
    (train_dir / "t9.json").write_text(json.dumps(big))
    result = build(tmp_path, cfg, "arc", task="arc")
    assert result.exit_code != 0 and "t9.json" in result.output and "31" in result.output
    assert not (tmp_path / "arc").exists() and not list(tmp_path.glob("arc.tmp-*"))
    result = build(tmp_path, cfg, "arc", "--skip-invalid", task="arc")
    assert result.exit_code == 0, result.output
    assert read_metadata(tmp_path / "arc").stats["skipped"] == 1
