"""The stages of ``hrm data build`` one by one, in process and without Ray: originals → split → plan → encode → parts."""

import hashlib

import numpy as np
import pytest

from hrm.tasks.sudoku import SudokuTask, canonical
from hrm.tasks.sudoku_solver import generate_many
from pipeline.data.build import plan_parts
from pipeline.data.build_sudoku import SudokuBuilder
from pipeline.data.builder import Builder
from pipeline.data.builders import make_builder
from pipeline.data.config import load_config
from pipeline.data.grid_builder import MAX_ROUNDS, GridBuilder
from pipeline.data.split import first_occurrences, split_pool, split_streams
from pipeline.data.write import index_parts, write_part

BOX = (2, 3)
SUDOKU = {"box": list(BOX), "count": 40, "min_rating": 0, "test_fraction": 0.25, "augmentations": 3,
          "chunk_size": 10}


def sudoku_config(**sudoku):
    return load_config(None, task="sudoku", seed=5, rows_per_file=30, sudoku={**SUDOKU, **sudoku})


def run_stages(builder):
    """The driver's sequence of ``build_dataset`` with stage 1 run in process: (originals, splits, jobs)."""
    summaries = []
    chunks = builder.first_chunks()
    while chunks:
        summaries += [builder.make_chunk(c) for c in chunks]
        originals = builder.originals(summaries)
        chunks = builder.top_up(originals)
    splits = builder.split(originals)
    return originals, splits, plan_parts(builder.jobs(splits))


# ------------------------------------------------------------------------------------------------ split
def test_first_occurrences_keeps_the_first_of_each_key_across_calls():
    seen = set()
    assert first_occurrences(["a", "b", "a", "c", "b"], seen) == [0, 1, 3]
    assert first_occurrences(["c", "d", "d"], seen) == [1]
    assert seen == {"a", "b", "c", "d"}


def test_split_pool_draws_the_test_fraction_from_the_seed():
    mask = split_pool(40, 0.25, seed=3)
    assert mask.dtype == bool and mask.sum() == 10
    assert (split_pool(40, 0.25, seed=3) == mask).all() and not (split_pool(40, 0.25, seed=4) == mask).all()
    assert split_pool(0, 0.25, seed=3).shape == (0,)
    assert split_pool(7, 0.0, seed=3).sum() == 0


def test_split_streams_keeps_published_splits_and_divides_the_pool():
    kept = {"all": np.arange(20).reshape(10, 2), "train": np.full((2, 2), -1), "test": np.full((1, 2), -2)}
    splits = split_streams(kept, 0.3, seed=1)
    assert len(splits["train"]) == 2 + 7 and len(splits["test"]) == 1 + 3
    assert (splits["train"][:2] == -1).all() and (splits["test"][:1] == -2).all()
    pool = np.concatenate([splits["train"][2:], splits["test"][1:]])
    assert sorted(pool[:, 0].tolist()) == list(range(0, 20, 2))
    assert (np.diff(splits["train"][2:, 0]) > 0).all()  # the pool's share keeps its order


def test_no_test_original_is_symmetric_to_a_training_one():
    """Three symmetric copies of each puzzle, imported as one pool: one copy is kept, and the split cannot leak."""
    task = SudokuTask(BOX)
    rng = np.random.default_rng(0)
    p, s, _, _ = generate_many(5, 30, BOX)
    copies = [task.augment((p[i % 30], s[i % 30]), rng) for i in range(90)]
    q = np.stack([c[0].ravel() for c in copies])
    a = np.stack([c[1].ravel() for c in copies])
    builder = SudokuBuilder(sudoku_config(), skip_invalid=False)
    chunk = {"mode": "check", "stream": "all", "chunk": 0, "size": 90, "q": q, "a": a,
             "rating": np.zeros(90, np.int32), "line": np.arange(2, 92)}
    originals = builder.originals([builder.make_chunk(chunk)])
    splits = builder.split(originals)
    keys = {split: [canonical(x.reshape(6, 6), BOX) for x in originals.grids(refs)[0]]
            for split, (_, refs) in splits.items()}
    assert len(keys["train"]) + len(keys["test"]) == 30 and len(keys["test"]) == round(0.25 * 30)
    assert len(set(keys["train"]) | set(keys["test"])) == 30 and not set(keys["train"]) & set(keys["test"])
    assert builder.stats["duplicates"] == 60


# ------------------------------------------------------------------------------------------------ originals
def test_generated_originals_reach_the_target_in_chunk_order():
    builder = make_builder(sudoku_config())
    chunks = builder.first_chunks()
    assert [(c["stream"], c["chunk"], c["size"]) for c in chunks] == [("all", k, 10) for k in range(4)]
    originals, splits, jobs = run_stages(builder)
    assert len(splits["train"][1]) == 30 and len(splits["test"][1]) == 10
    assert builder.groups == {"train": 30, "test": 10} and builder.stats["candidates"] >= 40


def summary(chunk: int, keys: list[bytes]) -> dict:
    """A stage-1 summary of generated originals with the given canonical keys (grids left blank)."""
    n = len(keys)
    return {"mode": "generate", "stream": "all", "chunk": chunk, "n": n, "q": np.zeros((n, 36), np.int8),
            "a": np.zeros((n, 36), np.int8), "keys": keys, "bad": [], "rating_sum": 0}


def test_top_up_asks_for_fresh_chunks_until_max_rounds():
    builder = make_builder(sudoku_config(count=1000))
    assert len(builder.first_chunks()) == 100  # chunks 0..99
    summaries = [summary(0, [b"k0"])]
    asked = []
    for round_ in range(MAX_ROUNDS + 2):
        more = builder.top_up(builder.originals(summaries))
        asked.append([c["chunk"] for c in more])
        summaries.append(summary(len(summaries), [f"k{round_ + 1}".encode()]))  # every round: one new original
    rounds = [a for a in asked if a]
    assert len(rounds) == MAX_ROUNDS and not asked[-1]
    numbers = [n for a in rounds for n in a]
    assert numbers == list(range(100, 100 + len(numbers)))  # chunk numbers continue, never reused
    assert all(len(a) == 100 for a in rounds)  # 999 missing at a yield of 1 → capped at 4 × 1000 originals


def test_top_up_stops_when_a_round_brings_nothing_new():
    builder = make_builder(sudoku_config(count=1000))
    summaries = [summary(0, [b"a", b"b"])]
    assert builder.top_up(builder.originals(summaries))
    summaries.append(summary(1, [b"a", b"b"]))  # only duplicates
    assert builder.top_up(builder.originals(summaries)) == [] and builder.stats["duplicates"] == 2


def test_invalid_imported_rows_raise_or_are_counted():
    p, s, _, _ = generate_many(2, 3, BOX)
    q, a = p.reshape(3, -1).copy(), s.reshape(3, -1)
    q[1] = 0  # a blank grid has many solutions
    chunk = {"mode": "check", "stream": "all", "chunk": 0, "size": 3, "q": q, "a": a,
             "rating": np.zeros(3, np.int32), "line": np.array([2, 3, 4])}
    strict = SudokuBuilder(sudoku_config(source="csv", csv_train="x.csv"))
    with pytest.raises(ValueError, match=r"x.csv, line 3: puzzle has more than one solution \(1 such row"):
        strict.originals([strict.make_chunk(chunk)])
    lenient = SudokuBuilder(sudoku_config(source="csv", csv_train="x.csv"), skip_invalid=True)
    originals = lenient.originals([lenient.make_chunk(chunk)])
    assert lenient.stats["rejected"] == 1 and originals.kept["all"][:, 1].tolist() == [0, 2]


# ------------------------------------------------------------------------------------------------ plan and encode
def test_plan_parts_numbers_examples_per_split():
    jobs = plan_parts([{"split": "train", "rows": 4}, {"split": "test", "rows": 2}, {"split": "train", "rows": 3}])
    assert [(j["split"], j["example_start"]) for j in jobs] == [("train", 0), ("test", 0), ("train", 4)]


def test_jobs_hold_whole_originals_and_encode_to_their_rows():
    builder = make_builder(sudoku_config())
    _, splits, jobs = run_stages(builder)
    assert [(j["split"], j["rows"], j["example_start"]) for j in jobs] == [
        ("train", 30, 0), ("train", 30, 30), ("train", 30, 60), ("test", 10, 0)]  # 10 originals × 3 per part
    inputs, labels, puzzle_id, group_id = builder.encode_job(jobs[1])
    assert inputs.shape == labels.shape == (30, 36) and inputs.dtype == np.uint8
    assert not puzzle_id.any() and group_id.tolist() == np.repeat(np.arange(10, 20), 3).tolist()
    assert (labels[::3] - 1 == jobs[1]["a"]).all()  # variant 0 of each original is the original
    again = make_builder(sudoku_config()).encode_job(jobs[1])  # a fresh builder, as on another worker
    assert all(np.array_equal(x, y) for x, y in zip((inputs, labels), again))


# ------------------------------------------------------------------------------------------------ parts
def test_index_parts_orders_parts_by_example_id_and_checks_the_tiling(tmp_path):
    rows = np.ones((4, 36), np.uint8)
    ids = np.zeros(4)
    write_part(tmp_path / "part-b.parquet", rows, rows, ids, ids, 0)
    write_part(tmp_path / "part-a.parquet", rows, rows, ids, ids, 4)
    parts = index_parts(str(tmp_path), "train", 8)
    assert [{k: p[k] for k in ("path", "rows", "first")} for p in parts] == [
        {"path": "train/part-b.parquet", "rows": 4, "first": 0}, {"path": "train/part-a.parquet", "rows": 4, "first": 4}]
    for p in parts:  # what readers check the part against (pipeline.data.verify)
        written = (tmp_path / p["path"].split("/")[1]).read_bytes()
        assert (p["bytes"], p["sha256"]) == (len(written), hashlib.sha256(written).hexdigest())
    with pytest.raises(RuntimeError, match="wrote 8 rows, planned 9"):
        index_parts(str(tmp_path), "train", 9)
    write_part(tmp_path / "part-c.parquet", rows, rows, ids, ids, 10)
    with pytest.raises(RuntimeError, match="do not tile"):
        index_parts(str(tmp_path), "train", 14)


# ------------------------------------------------------------------------------------------------ the interface
def test_builders_are_abstract():
    with pytest.raises(TypeError):
        Builder()

    class Half(GridBuilder):
        def targets(self):
            return None

    with pytest.raises(TypeError, match="abstract"):
        Half(sudoku_config())
    assert isinstance(make_builder(load_config(None, task="arc")), Builder)
