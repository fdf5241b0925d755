"""A damaged dataset is named where it is opened (pipeline.data.verify), without Ray: truncated, zeroed, missing or
replaced parts, a wrong schema, tokens or puzzle ids the model cannot embed. Each is refused by ``verify_dataset``
(what ``hrm train`` runs first), by ``load_split`` (evaluation, ``hrm solve``) and by ``hrm data check``, naming
the part (and the row); batches on their way into a training worker are checked too."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.data.loader import load_split, read_metadata
from pipeline.data.meta import write_metadata
from pipeline.data.verify import DatasetError, sha256, verify_dataset
from pipeline.data.write import binary_column, index_parts, part_table, write_part
from pipeline.train.share import compact_rows

L, VOCAB, IDS = 16, 10, 5
PARTS = {"train": (5, 7, 3), "test": (4,)}


def make_dataset(path, checksums=True):
    """A dataset as ``hrm data build`` writes it (parts listed in metadata.json by the build's own index_parts,
    with sizes and checksums), of random tokens below VOCAB."""
    rng = np.random.default_rng(0)
    files, counts = {}, {}
    for split, sizes in PARTS.items():
        (path / split).mkdir(parents=True)
        start = 0
        for k, m in enumerate(sizes):
            tokens = rng.integers(0, VOCAB, (2, m, L), dtype=np.uint8)
            write_part(path / split / f"part-{k:05d}.parquet", tokens[0], tokens[1],
                       rng.integers(0, IDS, m).astype(np.int32), np.arange(m), start)
            start += m
        counts[split] = start
        files[split] = index_parts(str(path / split), split, start)
        if not checksums:
            files[split] = [{k: v for k, v in p.items() if k not in ("bytes", "sha256")} for p in files[split]]
    write_metadata(path, {"task": "sudoku", "task_args": {"box": [2, 2]}, "vocab_size": VOCAB, "seq_len": L,
                          "num_puzzle_identifiers": IDS, "counts": counts, "groups": counts, "config": {}, "seed": 0,
                          "fingerprint": "x", **({"checksums": "sha256"} if checksums else {}), "files": files})
    return path


PART = "train/part-00001.parquet"  # the part every case damages: 7 rows, example ids 5..11


def rewrite(path, table):
    """Replace PART by ``table`` and record its new size and checksum in metadata.json: a dataset edited by hand, or
    written by another tool, whose checksums were recomputed."""
    pq.write_table(table, path / PART, compression="zstd")
    data = (path / PART).read_bytes()
    raw = json.loads((path / "metadata.json").read_text())
    (entry,) = [e for e in raw["files"]["train"] if e["path"] == PART]
    entry.update(bytes=len(data), sha256=sha256(data))
    raw.pop("created")
    write_metadata(path, raw)


def good_table(**change):
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, VOCAB, (2, 7, L), dtype=np.uint8)
    pid = np.zeros(7, np.int32)
    table = part_table(tokens[0], tokens[1], pid, np.arange(7), 5)
    for name, column in change.items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def tokens_with(value, row=2, position=3):
    tokens = np.zeros((7, L), np.uint8)
    tokens[row, position] = value
    return binary_column(tokens)


def truncate(path):
    data = (path / PART).read_bytes()
    (path / PART).write_bytes(data[:-100])


def zero_middle(path):
    data = bytearray((path / PART).read_bytes())
    data[100:300] = bytes(200)
    (path / PART).write_bytes(bytes(data))


CASES = {
    "truncated": (truncate, "bytes, but metadata.json says"),
    "zeroed": (zero_middle, "its SHA-256 differs from the one recorded"),
    "missing": (lambda p: (p / PART).unlink(), "missing, but metadata.json lists it"),
    "token beyond the vocabulary": (lambda p: rewrite(p, good_table(inputs=tokens_with(12))),
                                    "row 2 (example_id 7): inputs token 12 at position 3 is outside the vocabulary "
                                    "(vocab_size 10)"),
    "label beyond the vocabulary": (lambda p: rewrite(p, good_table(labels=tokens_with(200, row=6, position=0))),
                                    "row 6 (example_id 11): labels token 200 at position 0"),
    "puzzle id beyond the embedding": (lambda p: rewrite(p, good_table(puzzle_id=pa.array([0, 0, 0, 9, 0, 0, 0],
                                                                                          pa.int32()))),
                                       "row 3 (example_id 8): puzzle_id 9 is outside [0, 5)"),
    "wrong schema": (lambda p: rewrite(p, good_table(puzzle_id=pa.array(np.zeros(7, np.int64)))),
                     "not the dataset's Parquet schema: puzzle_id is int64 (expected int32)"),
    "rows differ": (lambda p: rewrite(p, good_table().slice(0, 6)), "6 rows, but metadata.json says 7"),
    "short tokens": (lambda p: rewrite(p, good_table(inputs=pa.array([b"\x01" * (L - 1)] * 7, pa.binary()))),
                     "column inputs: every value must hold seq_len=16 bytes"),
}


def test_a_whole_dataset_verifies_with_every_checksum(tmp_path):
    path = make_dataset(tmp_path / "ds")
    done = verify_dataset(read_metadata(path))
    assert (done.parts, done.rows, done.checksums) == (4, 19, 4)
    assert done.bytes == sum(f.stat().st_size for f in path.rglob("*.parquet"))


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_part_is_named_by_every_reader(tmp_path, case):
    path = make_dataset(tmp_path / "ds")
    damage, message = CASES[case]
    damage(path)
    meta = read_metadata(path)
    with pytest.raises(DatasetError, match="rebuild the dataset") as caught:
        verify_dataset(meta)
    assert str(path / PART) in str(caught.value) and message in str(caught.value)
    with pytest.raises(DatasetError) as by_loader:
        load_split(path, "train")
    assert str(by_loader.value) == str(caught.value)
    assert len(load_split(path, "train", limit=5)["inputs"]) == 5  # parts before it still read
    result = CliRunner().invoke(main, ["data", "check", str(path)])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_an_older_dataset_without_checksums_is_checked_for_the_rest(tmp_path):
    path = make_dataset(tmp_path / "ds", checksums=False)
    assert verify_dataset(read_metadata(path)).checksums == 0
    result = CliRunner().invoke(main, ["data", "check", str(path)])
    assert result.exit_code == 0 and "no checksums recorded" in result.output
    zero_middle(path)  # no checksum to catch it: the Parquet reader does
    with pytest.raises(DatasetError, match="not a readable Parquet file|rows, but metadata|outside|schema"):
        verify_dataset(read_metadata(path))


def test_rows_missing_from_the_listing_are_caught(tmp_path):
    path = make_dataset(tmp_path / "ds")
    raw = json.loads((path / "metadata.json").read_text())
    raw["counts"]["train"] = 20
    raw.pop("created")
    write_metadata(path, raw)
    with pytest.raises(DatasetError, match="the train parts hold 15 rows, but metadata.json counts 20"):
        verify_dataset(read_metadata(path))


def test_batches_into_a_training_worker_are_checked_for_the_vocabulary():
    table = good_table(inputs=tokens_with(12))
    rows = compact_rows(table, 5, 12, L)  # no vocabulary given: as before
    assert rows["inputs"].shape == (7, L)
    assert compact_rows(good_table(), 5, 12, L, vocab=(VOCAB, IDS))["example_ids"].tolist() == list(range(5, 12))
    with pytest.raises(ValueError, match=r"/data/x: example_id 7: inputs token 12 at position 3 .*hrm data check"):
        compact_rows(table, 5, 12, L, vocab=(VOCAB, IDS), where="/data/x")
    assert len(compact_rows(table, 8, 12, L, vocab=(VOCAB, IDS))["inputs"]) == 4  # the bad row is outside the share
