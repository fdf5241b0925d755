"""The dataset loader: metadata errors, binary decoding, NumPy and Ray Data readers agree."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.data.loader import (
    IGNORE_LABEL,
    decode_table,
    load_split,
    read_metadata,
    read_split,
)
from pipeline.data.meta import write_metadata
from pipeline.data.write import write_part

L = 16


def make_dataset(path, parts=(5, 7, 3), test_rows=4, seed=0):
    """A hand-made dataset in the build format: random tokens, some label zeros, known puzzle ids."""
    rng = np.random.default_rng(seed)
    rows = {"train": [], "test": []}
    start = {"train": 0, "test": 0}
    for split, sizes in (("train", parts), ("test", (test_rows,))):
        (path / split).mkdir(parents=True)
        for k, m in enumerate(sizes):
            inputs = rng.integers(0, 10, (m, L), dtype=np.uint8)
            labels = rng.integers(0, 10, (m, L), dtype=np.uint8)
            pid = rng.integers(0, 5, m).astype(np.int32)
            write_part(path / split / f"part-{k:05d}.parquet", inputs, labels, pid, np.arange(m), start[split])
            start[split] += m
            rows[split].append((inputs, labels, pid))
    write_metadata(path, {"task": "sudoku", "task_args": {"box": [2, 2]}, "vocab_size": 10, "seq_len": L,
                          "num_puzzle_identifiers": 5, "counts": dict(start), "groups": dict(start), "config": {},
                          "seed": seed, "fingerprint": "x"})
    return {s: [np.concatenate(c) for c in zip(*r)] for s, r in rows.items()}


@pytest.fixture
def dataset(tmp_path):
    expected = make_dataset(tmp_path / "ds")
    return tmp_path / "ds", expected


def test_load_split_decodes_all_rows(dataset):
    path, expected = dataset
    for split in ("train", "test"):
        inputs, labels, pid = expected[split]
        got = load_split(path, split, with_ids=True)
        assert got["inputs"].dtype == np.int32 and got["labels"].dtype == np.int64 and got["puzzle_ids"].dtype == np.int32
        assert np.array_equal(got["inputs"], inputs) and np.array_equal(got["puzzle_ids"], pid)
        assert np.array_equal(got["labels"], np.where(labels == 0, IGNORE_LABEL, labels.astype(np.int64)))
        assert (got["labels"] == IGNORE_LABEL).any()
        assert np.array_equal(got["example_ids"], np.arange(len(inputs)))


def test_load_split_limit(dataset):
    path, expected = dataset
    got = load_split(path, "train", limit=6)  # crosses the first part
    assert np.array_equal(got["inputs"], expected["train"][0][:6])
    assert len(load_split(path, "train", limit=0)["inputs"]) == 0


def test_decode_table_accepts_arrow_and_numpy(dataset):
    path, expected = dataset
    table = pq.read_table(path / "train" / "part-00001.parquet")
    a = decode_table(table, L)
    b = decode_table({c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}, L)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert np.array_equal(a["inputs"], expected["train"][0][5:12])
    with pytest.raises(ValueError, match="seq_len=17"):
        decode_table(table, L + 1)
    with pytest.raises(ValueError, match="seq_len=15"):
        decode_table({c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}, L - 1)


def test_metadata_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_metadata(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="half.*metadata.json is missing"):
        load_split(tmp_path / "half", "train")
    (tmp_path / "half" / "metadata.json").write_text(json.dumps({"task": "sudoku"}))
    with pytest.raises(ValueError, match="half.*missing.*vocab_size"):
        read_metadata(tmp_path / "half")
    (tmp_path / "half" / "metadata.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_metadata(tmp_path / "half")


def test_missing_split_folder_and_unknown_split(dataset):
    import shutil

    path, _ = dataset
    with pytest.raises(ValueError, match="unknown split"):
        load_split(path, "valid")
    shutil.rmtree(path / "test")
    with pytest.raises(FileNotFoundError, match="test"):
        read_metadata(path)


@pytest.mark.slow
def test_read_split_matches_load_split(ray_session, tmp_path):
    path = tmp_path / "ds"
    make_dataset(path, parts=(50, 70, 30))
    expected = load_split(path, "train")
    batches = list(read_split(path, "train").iter_batches(batch_size=32, batch_format="numpy"))
    got = {k: np.concatenate([b[k] for b in batches]) for k in expected}
    assert all(got[k].dtype == expected[k].dtype for k in expected)

    def rows(d):  # the same rows, in any order (Ray Data may interleave parts unless preserve_order is set)
        table = np.concatenate([d["inputs"], d["labels"], d["puzzle_ids"][:, None]], axis=1)
        return table[np.lexsort(table.T[::-1])]

    assert np.array_equal(rows(got), rows(expected))
    rows = read_split(path, "train").take_batch(8, batch_format="numpy")
    assert rows["inputs"].shape == (8, L)
