"""A handful of valid 9×9 Sudoku puzzles built by formula, independent of hrm.tasks (for model-level tests)."""

import numpy as np


def sudoku_batch(n: int, blanks: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels) tokens (n, 81): blank 1, digits d -> d + 1."""
    rng = np.random.default_rng(seed)
    base = np.array([[(3 * (r % 3) + r // 3 + c) % 9 for c in range(9)] for r in range(9)])  # a valid grid, 0..8
    inputs, labels = [], []
    for _ in range(n):
        digits = rng.permutation(9)
        rows = np.concatenate([b * 3 + rng.permutation(3) for b in rng.permutation(3)])
        cols = np.concatenate([b * 3 + rng.permutation(3) for b in rng.permutation(3)])
        grid = digits[base[rows][:, cols]] + 1  # 1..9
        label = (grid + 1).reshape(-1)
        given = label.copy()
        given[rng.choice(81, size=blanks, replace=False)] = 1
        inputs.append(given)
        labels.append(label)
    return np.stack(inputs), np.stack(labels)
