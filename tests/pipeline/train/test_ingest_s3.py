"""Training ingest from an ``s3://`` dataset (moto's S3 API server on 127.0.0.1): part ranges from the footers on
S3, and each worker's share read by Ray Data from S3."""

from __future__ import annotations

import pytest

from pipeline.data.meta import DatasetMeta
from pipeline.train.batches import worker_range
from pipeline.train.ingest import ShardedTrainData, list_parts
from pipeline.train.share import collect_share
from tests.pipeline.train.test_ingest import PARTS, SEQ, write_part

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_s3(s3, ray_session):
    """The S3 server, with the suite's Ray (started after it: its workers inherit the AWS environment)."""
    return s3


def test_shares_read_from_s3(ray_s3, tmp_path):
    client = ray_s3.client()
    for i, ids in enumerate(PARTS):
        local = tmp_path / f"part-{i:05d}.parquet"
        write_part(local, ids)
        client.upload_file(str(local), ray_s3.bucket, f"ingest/train/part-{i:05d}.parquet")
    meta = DatasetMeta(path=ray_s3.uri("ingest"), task="sudoku", task_args={}, vocab_size=251, seq_len=SEQ,
                       num_puzzle_identifiers=30, counts={"train": 30, "test": 0}, groups={}, config={}, seed=0,
                       fingerprint="test")
    parts = list_parts(meta, "train")
    assert [(p.first, p.last) for p in parts] == [(10, 19), (0, 9), (20, 29)]
    assert all(p.path.startswith("s3://") for p in parts)
    data = ShardedTrainData.for_split(meta, shards=6)
    iterators = data.configure({"train": data.whole()}, world_size=2, worker_handles=None, worker_node_ids=None)
    for rank, per_name in enumerate(iterators):
        lo, hi = worker_range(30, 6, 2, rank)
        assert collect_share(per_name["train"], lo, hi)["puzzle_ids"].tolist() == list(range(lo, hi))
