import numpy as np
import pytest

from pipeline.train.batches import (
    ShardedBatches,
    batches_per_epoch,
    check_layout,
    shard_bounds,
    worker_range,
)


def share_of(lo, hi, seq_len=3):
    """Compact rows of example ids [lo, hi): puzzle id = example id, tokens = id % 250 + 1 (label byte 0 at the end)."""
    ids = np.arange(lo, hi)
    tokens = (ids % 250 + 1).astype(np.uint8)[:, None] * np.ones((1, seq_len), np.uint8)
    labels = tokens.copy()
    labels[:, -1] = 0
    return {"inputs": tokens, "labels": labels, "puzzle_ids": ids.astype(np.int32)}


def collect(world, n=103, G=8, K=None, epoch=0, skip=0, seed=7):
    """(index, global batch's puzzle ids) per step, the workers' slices concatenated in rank order."""
    K = K or G
    per_rank = []
    for r in range(world):
        share = share_of(*worker_range(n, K, world, r))
        per_rank.append(list(ShardedBatches(share, n=n, global_batch=G, shards=K, rank=r, world=world,
                                            seed=seed).epoch(epoch, skip)))
    for r, rank_batches in enumerate(per_rank):  # a worker's slice: G/K rows of each shard it owns
        owned = (r + 1) * K // world - r * K // world
        assert all(len(rows["puzzle_ids"]) == owned * G // K for _, rows in rank_batches)
    return [(per_rank[0][i][0], np.concatenate([p[i][1]["puzzle_ids"] for p in per_rank]))
            for i in range(len(per_rank[0]))]


@pytest.mark.parametrize("K", [4, 8])
@pytest.mark.parametrize("world", [1, 2, 3, 4])  # 3: slices of 3, 3 and 2 rows (K 8) or 2, 2 and 4 (K 4)
def test_workers_slices_make_the_single_worker_batch(world, K):
    one, many = collect(1, K=K), collect(world, K=K)
    assert len(one) == len(many) == 103 // 8
    for (i, a), (j, b) in zip(one, many, strict=True):
        assert i == j and a.tolist() == b.tolist()


def test_batches_take_the_same_rows_from_every_shard():
    bounds = shard_bounds(103, 4)
    for _, batch in collect(2, K=4):
        shard = np.searchsorted([stop for _, stop in bounds], batch, side="right")
        assert shard.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # G/K = 2 rows of each shard, in shard order


def test_each_epoch_is_a_new_permutation_of_distinct_rows():
    e0, e1 = collect(1, epoch=0), collect(1, epoch=1)
    rows0 = np.concatenate([b for _, b in e0])
    assert len(set(rows0.tolist())) == len(rows0) == 96 and set(rows0.tolist()) <= set(range(103))
    rows1 = np.concatenate([b for _, b in e1])
    assert len(set(rows1.tolist())) == 96 and rows0.tolist() != rows1.tolist()
    assert collect(1, epoch=0, seed=8)[0][1].tolist() != e0[0][1].tolist()  # the seed matters


def test_skip_resumes_at_the_same_position():
    full, resumed = collect(2, skip=5), collect(2)
    assert [i for i, _ in full] == list(range(5, 12))
    assert [b.tolist() for _, b in full] == [b.tolist() for _, b in resumed[5:]]


def test_rows_are_decoded_like_the_loader():
    share = share_of(0, 16)
    _, rows = next(ShardedBatches(share, n=16, global_batch=4, shards=4, rank=0, world=1, seed=0).epoch(0))
    assert rows["inputs"].dtype == np.int32 and rows["labels"].dtype == np.int64
    assert rows["puzzle_ids"].dtype == np.int32
    assert (rows["labels"][:, -1] == -100).all() and (rows["labels"][:, 0] == rows["inputs"][:, 0]).all()


def test_worker_ranges_tile_the_split():
    assert worker_range(10, 4, 2, 0) == (0, 5) and worker_range(10, 4, 2, 1) == (5, 10)
    assert [worker_range(103, 8, 4, r) for r in range(4)] == [(0, 25), (25, 51), (51, 77), (77, 103)]
    assert batches_per_epoch(103, 8) == 12
    assert [worker_range(103, 8, 3, r) for r in range(3)] == [(0, 25), (25, 64), (64, 103)]  # shards 0-1, 2-4, 5-7


@pytest.mark.parametrize("G, K, W, message", [(8, 4, 5, "5 workers but data_shards 4: a worker would own no shard"),
                                              (8, 3, 1, "global batch 8 is not divisible by data_shards 3")])
def test_bad_layouts_are_named(G, K, W, message):
    with pytest.raises(ValueError, match=message):
        check_layout(G, K, W)


def test_a_share_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match=r"worker 1 holds 4 rows, but its shards span example ids \[5, 10\)"):
        ShardedBatches(share_of(0, 4), n=10, global_batch=4, shards=4, rank=1, world=2, seed=0)


@pytest.mark.parametrize("overrides, message", [
    ({"data_shards": 6, "global_batch_size": 12, "scaling": {"num_workers": 7}},
     "scaling.num_workers 7 is more than data_shards 6 .a worker would own no shard"),
    ({"data_shards": 6, "global_batch_size": 12, "scaling": {"num_workers": [2, 8]}},
     "scaling.num_workers 8 is more than data_shards 6"),
    ({"data_shards": 5, "global_batch_size": 12}, "global_batch_size 12 is not divisible by data_shards 5"),
    ({"data_shards": 0}, "data_shards must be >= 1"),
])
def test_config_refuses_bad_data_shards(overrides, message):
    from pipeline.core.config_io import from_dict
    from pipeline.train.config import TrainConfig

    with pytest.raises(ValueError, match=message):
        from_dict(TrainConfig, overrides)


def test_data_shards_default_to_the_global_batch():
    from pipeline.train.config import TrainConfig

    assert TrainConfig(global_batch_size=96).shards == 96 and TrainConfig(data_shards=8).shards == 8


@pytest.mark.parametrize("G, K, workers, local", [(8, None, 2, 4), (8, None, 3, 3), (8, None, (3, 8), 3),
                                                  (12, 4, (1, 4), 12), (12, 4, 3, 6), (12, 4, (3, 4), 6)])
def test_the_local_batch_is_the_largest_slice_at_the_fewest_workers(G, K, workers, local):
    """What a worker's memory is planned for: ⌈K / min workers⌉ shards of G / K rows."""
    from pipeline.train.config import ScalingSettings, TrainConfig

    cfg = TrainConfig(global_batch_size=G, data_shards=K, max_failures=1,
                      scaling=ScalingSettings(num_workers=workers))
    assert cfg.local_batch_size == local
    sizes = [len(range(*worker_range(G, cfg.shards, cfg.scaling.min_workers, r)))
             for r in range(cfg.scaling.min_workers)]  # one epoch of G rows: the slices of one global batch
    assert max(sizes) == local
