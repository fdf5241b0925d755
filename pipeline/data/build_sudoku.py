"""Sudoku originals: generated (numba generator, rating >= min_rating) or imported from Sudoku-Extreme CSVs.

Generated originals form one stream ``all``, de-duplicated by canonical form (digits, bands/rows, stacks/columns,
transpose) and then split at random: no test puzzle is symmetry-equivalent to a training one. Variant 0 of every
original is the original; the others are random symmetries (``hrm.tasks.sudoku.random_transform``).
"""

from __future__ import annotations

import hashlib

import numpy as np

from hrm.tasks.sudoku import SudokuTask, canonical, random_transform, read_csv_arrays
from hrm.tasks.sudoku_solver import generate_many, rate_many
from pipeline.data.builder import derive_seed
from pipeline.data.grid_builder import STREAM_CODE, GridBuilder


def transform_indices(box, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random symmetries as (flat source index (count, n*n), digit map (count, n+1)).

    ``digit_map[k][grid.ravel()[index[k]]]`` equals ``apply_transform(grid, random_transform(box, rng))`` for the
    k-th draw: the same draws, applied to many grids at once.
    """
    n = box[0] * box[1]
    index = np.empty((count, n * n), np.int64)
    digits = np.empty((count, n + 1), np.int8)
    for k in range(count):
        rows, cols, transpose, digit_map = random_transform(box, rng)
        pos = cols[None, :] * n + rows[:, None] if transpose else rows[:, None] * n + cols[None, :]
        index[k] = pos.ravel()
        digits[k] = digit_map
    return index, digits


def top_up_givens(puzzles: np.ndarray, solutions: np.ndarray, givens: int | None, seed: int) -> np.ndarray:
    """Easier puzzles: reveal random solution cells until each puzzle shows ``givens`` clues (still unique).

    puzzles, solutions: (count, n*n), 0 = blank. A minimal puzzle stays unique when clues are added.
    """
    if givens is None:
        return puzzles
    out = puzzles.copy()
    rng = np.random.default_rng([seed, 0x61])
    for row, solution in zip(out, solutions):
        blanks = np.flatnonzero(row == 0)
        need = givens - (len(row) - len(blanks))
        if need > 0:
            reveal = rng.choice(blanks, size=min(need, len(blanks)), replace=False)
            row[reveal] = solution[reveal]
    return out


class SudokuBuilder(GridBuilder):
    """Sudoku originals of ``cfg.sudoku``: stream ``all`` (generated, or one CSV), or ``train`` and ``test`` CSVs."""

    rating_name = "rating"

    def __init__(self, cfg, skip_invalid: bool = False):
        super().__init__(cfg, skip_invalid)
        self.box = (int(self.sec.box[0]), int(self.sec.box[1]))
        self.task = SudokuTask(self.box, self.sec.min_rating)
        self.n = self.task.n
        if self.sec.source == "csv":
            self.sources = {"train": self.sec.csv_train, "all": self.sec.csv_train, "test": self.sec.csv_test}

    def task_args(self) -> dict:
        return {"box": list(self.box)}

    def targets(self):
        return {"all": self.sec.count} if self.sec.source == "generate" else None

    def chunk_size(self) -> int:
        return self.sec.chunk_size

    def test_fraction(self) -> float:
        return self.sec.test_fraction

    def augmentations(self, split: str) -> int:
        return self.sec.augmentations if split == "train" else self.sec.test_augmentations

    def needs_keys(self, stream: str) -> bool:
        return stream == "all"  # published train/test CSVs are already split without leaks

    def import_streams(self) -> list[str]:
        return ["train", "test"] if self.sec.csv_test else ["all"]

    def generate_chunk(self, stream, chunk, size):
        seed = derive_seed(self.seed, STREAM_CODE[stream], chunk)
        p, s, r, _ = generate_many(seed, size, self.box, self.sec.min_rating)
        if len(p) != size:
            raise RuntimeError(f"sudoku chunk {chunk}: generated {len(p)} of {size} puzzles")
        p, s = p.reshape(size, -1), s.reshape(size, -1)
        return top_up_givens(p, s, self.sec.givens, seed), s, r

    def key(self, question):
        return hashlib.blake2b(canonical(question.reshape(self.n, self.n), self.box), digest_size=16).digest()

    def read_stream(self, stream):
        test = stream == "test"
        path = self.sec.csv_test if test else self.sec.csv_train
        q, a, r, lines, skipped = read_csv_arrays(
            path, box=self.box, subsample=self.sec.test_subsample if test else self.sec.subsample,
            min_rating=self.sec.min_rating, seed=derive_seed(self.seed, STREAM_CODE[stream]),
            skip_invalid=self.skip_invalid, check_unique=False)
        self.stats["skipped"] += skipped
        m = len(q)
        return q.reshape(m, -1), a.reshape(m, -1), r, lines

    def check(self, q, a):
        if not self.sec.check_unique or not len(q):
            return []
        counts, _ = rate_many(q.reshape(len(q), self.n, self.n), self.box)
        return [(int(i), "puzzle has more than one solution" if counts[i] > 1 else "puzzle is unsolvable")
                for i in np.flatnonzero(counts != 1)]

    def encode(self, q, a, split, groups, augs):
        m, length = q.shape
        qs = np.empty((m, augs, length), np.int8)
        ans = np.empty((m, augs, length), np.int8)
        qs[:, 0], ans[:, 0] = q, a
        if augs > 1:
            variants = np.arange(augs - 1)[:, None]
            for i, group in enumerate(groups):
                index, digits = transform_indices(self.box, augs - 1, self.aug_rng(split, group))
                qs[i, 1:] = digits[variants, q[i][index]]
                ans[i, 1:] = digits[variants, a[i][index]]
        qs, ans = qs.reshape(m * augs, length), ans.reshape(m * augs, length)
        inputs = np.where(qs == 0, 1, qs + 1).astype(np.uint8)
        return inputs, (ans + 1).astype(np.uint8)
