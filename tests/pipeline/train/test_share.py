"""A worker's share drained from its batches (``collect_share``), without Ray: rows put in example_id order whatever
order the batches come in, the share held once while read (not a list of batches, concatenated, then reordered:
3x the share at the peak), and shares with a row missing, repeated or out of range refused."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from pipeline.train.share import collect_share

L = 900  # Maze and ARC rows


class Batches:
    """A stand-in for Ray's DataIterator: the rows of ``ids`` in batches of ``size``, made as they are asked for."""

    def __init__(self, ids, size: int):
        self.ids, self.size = np.asarray(ids), size

    def iter_batches(self, batch_size=None, batch_format="numpy"):
        for start in range(0, len(self.ids), self.size):
            ids = self.ids[start:start + self.size]
            yield {"inputs": np.repeat((ids % 251).astype(np.uint8)[:, None], L, axis=1),
                   "labels": np.repeat((ids % 13).astype(np.uint8)[:, None], L, axis=1),
                   "puzzle_ids": (ids % 7).astype(np.int32), "example_ids": ids.astype(np.int64)}


def test_rows_come_out_in_example_id_order():
    ids = np.random.default_rng(0).permutation(np.arange(100, 400))
    share = collect_share(Batches(ids, 37), 100, 400)
    assert set(share) == {"inputs", "labels", "puzzle_ids"}
    expected = np.arange(100, 400)
    assert (share["inputs"][:, 0] == expected % 251).all() and (share["labels"][:, -1] == expected % 13).all()
    assert share["puzzle_ids"].tolist() == (expected % 7).tolist() and share["inputs"].shape == (300, L)


def test_the_share_is_held_once_while_read():
    n, size = 20_000, 1_000  # 36 MB of tokens in batches of 1.8 MB
    tracemalloc.start()
    try:
        share = collect_share(Batches(np.arange(n), size), 0, n)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    held = sum(a.nbytes for a in share.values())
    assert peak < 1.2 * held, (peak, held)  # the share, a batch in flight and the seen-mask; was 3x


@pytest.mark.parametrize("ids, lo, hi, message", [
    (range(0, 15), 0, 16, r"\[0, 16\) once each; it holds 15 rows .*0 outside the range or repeated, 1 missing"),
    ([*range(0, 16), 3], 0, 16, r"it holds 17 rows .*1 outside the range or repeated, 0 missing"),
    ([3, 3, *range(4, 16)], 3, 16, r"1 outside the range or repeated, 0 missing"),
    (range(0, 17), 0, 16, r"1 outside the range or repeated"),
    ([], 0, 16, r"the share of example ids \[0, 16\) is empty"),
])
def test_a_share_missing_repeating_or_straying_rows_is_refused(ids, lo, hi, message):
    with pytest.raises(ValueError, match=message):
        collect_share(Batches(list(ids), 5), lo, hi)
