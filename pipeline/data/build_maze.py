"""Maze originals: Maze-Hard generated as the paper (train and test drawn separately), or imported from CSV.

Mazes are de-duplicated under the dihedral group, and a test maze equivalent to a training one is dropped (and
replaced by a top-up chunk). Training variants 1.. are distinct dihedral transforms, labels re-solved so they stay
the canonical BFS path (``MazeTask.transform``).
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

from hrm.tasks.grids import N_DIHEDRAL, dihedral
from hrm.tasks.maze import PATH, Maze, MazeTask, generate_many, read_csv
from pipeline.data.builder import derive_seed
from pipeline.data.grid_builder import STREAM_CODE, GridBuilder

log = logging.getLogger(__name__)


class MazeBuilder(GridBuilder):
    """Maze originals of ``cfg.maze``: streams ``train`` and ``test``, generated or read from CSVs."""

    rating_name = "path_length"

    def __init__(self, cfg, skip_invalid: bool = False):
        super().__init__(cfg, skip_invalid)
        self.size = self.sec.size
        self.task = MazeTask(self.size, self.sec.min_path)
        if self.sec.source == "csv":
            self.sources = {"train": self.sec.csv_train, "test": self.sec.csv_test}

    def task_args(self) -> dict:
        return {"size": self.size, "min_path": self.task.min_path}

    def targets(self):
        if self.sec.source != "generate":
            return None
        return {"train": self.sec.train_count, "test": self.sec.test_count}

    def chunk_size(self) -> int:
        return self.sec.chunk_size

    def augmentations(self, split: str) -> int:
        return self.sec.augmentations if split == "train" else 1

    def import_streams(self) -> list[str]:
        if not self.sec.csv_test:
            log.warning("maze import without csv_test: the test split is empty")
            return ["train"]
        return ["train", "test"]

    def generate_chunk(self, stream, chunk, size):
        seed = derive_seed(self.seed, STREAM_CODE[stream], chunk)
        q, a = generate_many(seed, size, self.size, self.task.min_path, max_trials=None)
        if len(q) != size:
            raise RuntimeError(f"maze chunk {chunk}: generated {len(q)} of {size} mazes")
        q, a = q.reshape(size, -1), a.reshape(size, -1)
        return q, a, (a == PATH).sum(1).astype(np.int32) + 1

    def key(self, question):
        grid = question.reshape(self.size, self.size)
        return hashlib.blake2b(min(dihedral(grid, k).tobytes() for k in range(N_DIHEDRAL)), digest_size=16).digest()

    def read_stream(self, stream):
        test = stream == "test"
        mazes, skipped = read_csv(self.sources[stream], size=self.size, subsample=None if test else self.sec.subsample,
                                  seed=derive_seed(self.seed, STREAM_CODE[stream]), skip_invalid=self.skip_invalid)
        self.stats["skipped"] += skipped
        length = self.size * self.size
        q = np.array([m.question.ravel() for m in mazes], np.uint8).reshape(-1, length)
        a = np.array([m.answer.ravel() for m in mazes], np.uint8).reshape(-1, length)
        return q, a, (a == PATH).sum(1).astype(np.int32) + 1, np.full(len(q), -1, np.int64)

    def encode(self, q, a, split, groups, augs):
        m, length = q.shape
        inputs = np.empty((m, augs, length), np.uint8)
        labels = np.empty((m, augs, length), np.uint8)
        inputs[:, 0], labels[:, 0] = q, a
        for i, group in enumerate(groups):
            if augs == 1:
                break
            ks = self.aug_rng(split, group).choice(np.arange(1, N_DIHEDRAL), augs - 1, replace=False)
            original = Maze(q[i].reshape(self.size, self.size), a[i].reshape(self.size, self.size))
            for j, k in enumerate(ks, start=1):
                variant = MazeTask.transform(original, int(k))
                inputs[i, j], labels[i, j] = variant.question.ravel(), variant.answer.ravel()
        return inputs.reshape(m * augs, length), labels.reshape(m * augs, length)
