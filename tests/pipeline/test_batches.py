import numpy as np
import pytest

from pipeline.train.batches import GlobalBatches


def stream_of(n, part_sizes):
    def stream(epoch):
        start = 0
        i = 0
        while start < n:
            size = part_sizes[i % len(part_sizes)]
            ids = np.arange(start, min(n, start + size))
            yield {"inputs": ids[:, None] * np.ones((1, 3), int), "puzzle_ids": ids}
            start += size
            i += 1
    return stream


def collect(world, parts, n=100, G=8, epoch=0, skip=0, buffer=3):
    per_rank = [list(GlobalBatches(stream_of(n, parts), global_batch=G, rank=r, world=world, seed=7,
                                   buffer_batches=buffer).epoch(epoch, skip)) for r in range(world)]
    return [(per_rank[0][i][0], np.concatenate([p[i][1]["puzzle_ids"] for p in per_rank]))
            for i in range(len(per_rank[0]))]


@pytest.mark.parametrize("world", [2, 4])
def test_workers_slices_make_the_single_worker_batch(world):
    one = collect(1, [5, 7])
    many = collect(world, [13])  # different upstream batching too
    assert len(one) == len(many) == 100 // 8
    for (i, a), (j, b) in zip(one, many, strict=True):
        assert i == j and a.tolist() == b.tolist()


def test_each_epoch_is_a_new_permutation_of_distinct_rows():
    e0, e1 = collect(1, [10], epoch=0), collect(1, [10], epoch=1)
    rows0 = np.concatenate([b for _, b in e0])
    assert len(set(rows0.tolist())) == len(rows0) == 96  # the last partial batch is dropped
    assert rows0.tolist() != np.concatenate([b for _, b in e1]).tolist()


def test_skip_resumes_at_the_same_position():
    full, resumed = collect(2, [9]), collect(2, [9], skip=5)
    assert [i for i, _ in resumed] == list(range(5, 12))
    assert [b.tolist() for _, b in resumed] == [b.tolist() for _, b in full[5:]]


def test_batch_not_divisible_by_workers():
    with pytest.raises(ValueError, match="not divisible by 3 workers"):
        GlobalBatches(stream_of(10, [5]), global_batch=8, rank=0, world=3, seed=0)
