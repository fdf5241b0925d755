"""Training ingest: each Train worker's Ray Dataset reads only the parts of its share (real Parquet, real local Ray)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.meta import DatasetMeta
from pipeline.train.batches import worker_range
from pipeline.train.ingest import LocalShare, ShardedTrainData, list_parts, overlapping, reads_in_workers
from pipeline.train.share import collect_share

SEQ = 4
PARTS = [range(10, 20), range(0, 10), range(20, 30)]  # name order is not example_id order


def write_part(path, ids, statistics=True):
    ids = np.asarray(ids, np.int64)
    tokens = [bytes([i % 250 + 1] * SEQ) for i in ids]
    labels = [bytes([0] + [i % 250 + 1] * (SEQ - 1)) for i in ids]
    table = pa.table({"inputs": pa.array(tokens, pa.binary()), "labels": pa.array(labels, pa.binary()),
                      "puzzle_id": pa.array(ids.astype(np.int32)), "group_id": pa.array(ids),
                      "example_id": pa.array(ids)})
    pq.write_table(table, path, write_statistics=statistics)


@pytest.fixture(scope="module")
def meta(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest")
    (root / "train").mkdir()
    for i, ids in enumerate(PARTS):
        write_part(root / "train" / f"part-{i:05d}.parquet", ids)
    return DatasetMeta(path=str(root), task="sudoku", task_args={}, vocab_size=251, seq_len=SEQ,
                       num_puzzle_identifiers=30, counts={"train": 30, "test": 0}, groups={}, config={}, seed=0,
                       fingerprint="test")


def test_parts_carry_their_example_id_ranges(meta, tmp_path):
    assert [(p.first, p.last) for p in list_parts(meta, "train")] == [(10, 19), (0, 9), (20, 29)]
    listed = dataclasses.replace(meta, files={"train": [{"path": f"train/part-{i:05d}.parquet", "rows": 10,
                                                         "first": r.start} for i, r in enumerate(PARTS)]})
    assert [(p.first, p.last) for p in list_parts(listed, "train")] == [(10, 19), (0, 9), (20, 29)]
    (tmp_path / "train").mkdir()
    write_part(tmp_path / "train" / "part-00000.parquet", range(5), statistics=False)
    bare = dataclasses.replace(meta, path=str(tmp_path))
    part, = list_parts(bare, "train")
    assert (part.first, part.last) == (None, None) and part.overlaps(100, 200)  # no statistics: always read


def test_each_worker_reads_only_the_parts_of_its_share(meta, ray_session):
    data = ShardedTrainData.for_split(meta, shards=6)
    names = [[f.rsplit("/", 1)[1] for f in overlapping(data.parts, *worker_range(30, 6, 2, r))] for r in (0, 1)]
    assert names == [["part-00000.parquet", "part-00001.parquet"], ["part-00000.parquet", "part-00002.parquet"]]
    iterators = data.configure({"train": data.whole()}, world_size=2, worker_handles=None, worker_node_ids=None)
    assert len(iterators) == 2
    for rank, per_name in enumerate(iterators):
        lo, hi = worker_range(30, 6, 2, rank)
        share = collect_share(per_name["train"], lo, hi)
        assert share["puzzle_ids"].tolist() == list(range(lo, hi))  # sorted by example_id
        assert share["inputs"].dtype == np.uint8 and share["inputs"].shape == (hi - lo, SEQ)
        assert (share["inputs"][:, 0] == np.arange(lo, hi) % 250 + 1).all()
        assert (share["labels"][:, 0] == 0).all() and "example_ids" not in share
        local = collect_share(LocalShare(data.parts, lo, hi, SEQ), lo, hi)  # a small split, read by the worker
        assert local.keys() == share.keys() and all((local[k] == share[k]).all() for k in share)


def test_a_share_read_in_the_worker_opens_only_its_parts_and_checks_the_tokens(meta, monkeypatch):
    opened = []
    real = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda path, **kw: opened.append(path.rsplit("/", 1)[1]) or real(path, **kw))
    lo, hi = worker_range(30, 6, 2, 1)
    share = collect_share(LocalShare(list_parts(meta, "train"), lo, hi, SEQ), lo, hi)
    assert share["puzzle_ids"].tolist() == list(range(lo, hi)) and sorted(opened) == ["part-00000.parquet",
                                                                                      "part-00002.parquet"]
    with pytest.raises(ValueError, match=r"where: example_id \d+: .*dataset changed"):
        collect_share(LocalShare(list_parts(meta, "train"), 0, 30, SEQ, vocab=(251, 10), where="where"), 0, 30)


@pytest.mark.parametrize("files, limit, expected", [
    ([{"bytes": 3 << 20}, {"bytes": 1 << 20}], 4, True),  # at the limit
    ([{"bytes": 3 << 20}, {"bytes": 1 << 20}], 3.9, False),
    ([{"bytes": 10}], 0, False),  # 0: always Ray Data
    ([{"bytes": 10}, {"path": "train/x.parquet"}], 64, False),  # a size not listed: Ray Data
    (None, 64, False),  # a dataset from before metadata.json listed its parts
])
def test_a_split_is_read_in_the_workers_only_when_its_listed_parts_are_small(meta, files, limit, expected):
    listed = dataclasses.replace(meta, files=None if files is None else {"train": files})
    assert reads_in_workers(listed, limit) is expected


def test_a_share_is_read_with_one_footer_reader_not_thirty_two(meta, ray_session):
    """Ray Data 2.60 starts 32 actors to read Parquet footers at every read unless told otherwise (init_ray's
    RAY_SETTINGS): one share read starts one."""
    from ray.util.state import list_actors

    def footer_readers() -> set[str]:
        return {a.actor_id for a in list_actors(filters=[("class_name", "=", "FooterReader")], limit=10_000,
                                                raise_on_missing_output=False)}

    before = footer_readers()
    data = ShardedTrainData.for_split(meta, shards=2)
    collect_share(data.share(1, 0).iterator(), 0, 30)
    assert len(footer_readers() - before) == 1


def test_a_share_missing_rows_is_refused(meta, ray_session):
    data = ShardedTrainData.for_split(meta, shards=2)
    with pytest.raises(ValueError, match=r"should hold example ids \[0, 16\) once each; it holds 15 rows"):
        collect_share(data.share(2, 0).iterator(), 0, 16)  # the share is [0, 15)


def test_only_the_train_dataset_is_served(meta):
    data = ShardedTrainData.for_split(meta, shards=2)
    with pytest.raises(ValueError, match="serves only the 'train' dataset, got 'valid'"):
        data.configure({"valid": None}, world_size=1, worker_handles=None, worker_node_ids=None)
