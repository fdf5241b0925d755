"""The train/test split of Sudoku and Maze originals, with no leak under the task's symmetries.

Two steps, both here: ``first_occurrences`` keeps one original per canonical key (its first occurrence), so no two
kept originals are symmetric to each other; ``split_pool`` then sends a random ``test_fraction`` of a pool to the
test side. Whatever the split, no test original is equivalent to a training one. (ARC splits by source instead:
``hrm.tasks.arc_sources.split_tasks``.)
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import numpy as np

from pipeline.data.builder import derive_seed

SPLIT_SALT = 101


def first_occurrences(keys: Iterable[Hashable], seen: set) -> list[int]:
    """Indexes of the keys not in ``seen`` and not seen earlier in ``keys``; adds them to ``seen``."""
    fresh = []
    for i, key in enumerate(keys):
        if key not in seen:
            seen.add(key)
            fresh.append(i)
    return fresh


def split_pool(n: int, test_fraction: float, seed: int) -> np.ndarray:
    """A bool mask over ``n`` originals, True for the ``round(test_fraction * n)`` drawn for the test split.

    The draw depends on ``seed`` and ``n`` only (``derive_seed(seed, SPLIT_SALT)``).
    """
    is_test = np.zeros(n, bool)
    if n:
        n_test = round(test_fraction * n)
        is_test[np.random.default_rng(derive_seed(seed, SPLIT_SALT)).permutation(n)[:n_test]] = True
    return is_test


def split_streams(kept: dict[str, np.ndarray], test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Per split, the rows of the originals it gets: stream ``train`` / ``test`` as they are, plus the pool
    ``all`` divided by ``split_pool``. Each array keeps its order (train: ``train`` then the pool's share)."""
    pool = kept["all"]
    is_test = split_pool(len(pool), test_fraction, seed)
    return {"train": np.concatenate([kept["train"], pool[~is_test]]),
            "test": np.concatenate([kept["test"], pool[is_test]])}
