"""Maze: find the shortest path between S and G on a square grid with random walls.

Characters ``# SGo`` (wall, free, start, goal, path) are tokens 1..5, PAD 0. Inputs show ``# SG``; the label is the
input with the interior cells of the shortest path marked ``o``.

Instances follow Lehnert et al. 2024 ("Beyond A*"), the source of the HRM paper's Maze-Hard set: random walls,
start and goal, kept only when the shortest path is longer than ``min_path``; the label path is the BFS tree path
from S. Generation and solving (numba) live in ``hrm.tasks.maze_solver``; this module holds the instances, the CSV
import and the task.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hrm.tasks.base import IDENTITY, PAD, Symmetry, Task
from hrm.tasks.csv_rows import csv_header, csv_records
from hrm.tasks.grids import (DIHEDRAL_INVERSE, DIHEDRAL_NAMES, N_DIHEDRAL, dihedral, grid_to_text, inverse_dihedral,
                             text_rows)
from hrm.tasks.maze_solver import (FREE, GOAL, PATH, START, WALL, default_min_path, generate_many, is_path,  # noqa: F401
                                   is_valid_optimal, shortest_path_length, solve)

log = logging.getLogger(__name__)

CHARS = "# SGo"
ALPHABET = {PAD: "?", WALL: "#", FREE: " ", START: "S", GOAL: "G", PATH: "o"}
CHAR_TO_TOKEN = {c: i + 1 for i, c in enumerate(CHARS)}


class Maze(NamedTuple):
    """One instance: ``question`` and ``answer`` are ``(size, size)`` uint8 token grids."""

    question: np.ndarray
    answer: np.ndarray


# ------------------------------------------------------------------------------------------------------ import
def _parse_cells(text: str, size: int, allowed: str, where: str) -> np.ndarray:
    if len(text) != size * size:
        raise ValueError(f"{where}: expected {size * size} characters, got {len(text)}")
    bad = set(text) - set(allowed)
    if bad:
        raise ValueError(f"{where}: unknown characters {sorted(bad)!r} (allowed {allowed!r})")
    return np.array([CHAR_TO_TOKEN[c] for c in text], np.uint8).reshape(size, size)


def _check_question(q: np.ndarray, where: str) -> None:
    for token, name in ((START, "S"), (GOAL, "G")):
        k = int((q == token).sum())
        if k != 1:
            raise ValueError(f"{where}: expected exactly one {name}, found {k}")


def read_csv(
    path: str | Path,
    *,
    size: int = 30,
    subsample: int | None = None,
    seed: int = 0,
    skip_invalid: bool = False,
) -> tuple[list[Maze], int]:
    """Read the paper's maze CSV (``source,question,answer,rating``) into validated instances.

    ``subsample`` keeps that many rows chosen at random (by ``seed``) before validation. A bad row (wrong length,
    unknown characters, not exactly one S and one G, answer not a shortest path of the question) raises a ValueError
    naming the file and the line unless ``skip_invalid``; then it is counted and skipped.
    """
    path = Path(path)
    header = csv_header(path)
    missing = {"question", "answer"} - set(header)
    if missing:
        raise ValueError(f"{path}: missing CSV columns {sorted(missing)}")
    columns = {name: header.index(name) for name in ("question", "answer")}
    rows = list(csv_records(path))
    index = np.arange(len(rows))
    if subsample is not None and subsample < len(rows):
        index = np.sort(np.random.default_rng(seed).choice(len(rows), subsample, replace=False))
    mazes, skipped = [], 0
    for i in index:
        line, row = rows[i]
        where = f"{path}, line {line}"
        try:
            if isinstance(row, str):
                raise ValueError(f"{where}: {row}")
            if len(row) != len(header):
                raise ValueError(f"{where}: expected {len(header)} fields, got {len(row)}")
            question = _parse_cells(row[columns["question"]], size, "# SG", f"{where} question")
            answer = _parse_cells(row[columns["answer"]], size, CHARS, f"{where} answer")
            _check_question(question, where)
            if not is_valid_optimal(answer, question):
                raise ValueError(f"{where}: answer is not a shortest S→G path of the question")
        except ValueError:
            if not skip_invalid:
                raise
            skipped += 1
            continue
        mazes.append(Maze(question, answer))
    if skipped:
        log.warning("%s: skipped %d invalid rows", path, skipped)
    return mazes, skipped


def dihedral_symmetry(k: int, size: int) -> Symmetry:
    """Dihedral transform ``k`` (``hrm.tasks.grids``) of square token grids, as a ``Symmetry`` on ``(B, size²)``."""

    def turn(tokens: np.ndarray, j: int) -> np.ndarray:
        g = np.asarray(tokens, np.uint8).reshape(-1, size, size).transpose(1, 2, 0)  # (size, size, B)
        return dihedral(g, j).transpose(2, 0, 1).reshape(-1, size * size)

    return Symmetry(DIHEDRAL_NAMES[k], lambda t: turn(t, k), lambda t: turn(t, DIHEDRAL_INVERSE[k]))


# -------------------------------------------------------------------------------------------------------- task
class MazeTask(Task):
    name = "maze"
    vocab_size = 6

    def __init__(self, size: int = 30, min_path: int | None = None, max_trials: int = 1_000_000):
        self.size = int(size)
        self.seq_len = self.size * self.size
        self.min_path = default_min_path(self.size) if min_path is None else int(min_path)
        self.max_trials = int(max_trials)

    def encode(self, instance: Maze) -> tuple[np.ndarray, np.ndarray]:
        q, a = (np.asarray(g, np.uint8) for g in instance)
        if q.shape != (self.size, self.size) or a.shape != q.shape:
            raise ValueError(f"maze grids must be {self.size}×{self.size}, got {q.shape} and {a.shape}")
        return q.ravel().copy(), a.ravel().copy()

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Character grid (``'# SGo'``, ``'?'`` for PAD) of shape ``(size, size)``."""
        grid = np.asarray(tokens).reshape(self.size, self.size)
        return np.array([[ALPHABET.get(int(v), "?") for v in row] for row in grid])

    def generate(self, rng: np.random.Generator) -> Maze | None:
        """One maze, or None when ``max_trials`` rejection trials found none."""
        q, a = generate_many(int(rng.integers(2**63)), 1, self.size, self.min_path, max_trials=self.max_trials)
        return Maze(q[0], a[0]) if len(q) else None

    def augment(self, instance: Maze, rng: np.random.Generator) -> Maze:
        """A random dihedral transform of the question; the label is re-solved so it stays canonical."""
        return self.transform(instance, int(rng.integers(N_DIHEDRAL)))

    @staticmethod
    def transform(instance: Maze, k: int) -> Maze:
        question = dihedral(np.asarray(instance.question), k)
        return Maze(question, solve(question))

    @staticmethod
    def inverse_transform(instance: Maze, k: int) -> Maze:
        question = inverse_dihedral(np.asarray(instance.question), k)
        return Maze(question, solve(question))

    def score(self, pred: np.ndarray, labels: np.ndarray, inputs: np.ndarray) -> dict[str, bool]:
        pred, labels, inputs = (np.asarray(x).reshape(self.size, self.size) for x in (pred, labels, inputs))
        return {"exact": bool(np.array_equal(pred, labels)), "valid_optimal": is_valid_optimal(pred, inputs)}

    def symmetries(self, count: int, rng: np.random.Generator) -> list[Symmetry]:
        """The identity, then ``count - 1`` of the 7 other dihedral transforms, in a random order."""
        if count > N_DIHEDRAL:
            raise ValueError(f"maze has {N_DIHEDRAL} symmetries (the dihedral group); {count} votes asked for")
        ks = rng.permutation(np.arange(1, N_DIHEDRAL))[: max(count - 1, 0)]
        return [IDENTITY] + [dihedral_symmetry(int(k), self.size) for k in ks]

    def valid_answer(self, pred: np.ndarray, inputs: np.ndarray) -> bool:
        """The walls, S and G of ``inputs`` kept and its ``o`` cells a path from S to G (of any length: checking that it
        is a shortest one would take solving the maze, which the vote must not do)."""
        grids = (np.asarray(x, np.uint8).reshape(self.size, self.size) for x in (pred, inputs))
        return is_path(*grids)

    def follows_rules(self, pred: np.ndarray, inputs: np.ndarray) -> bool:
        """The walls, S and G kept and the ``o`` cells a shortest path from S to G (found here by breadth-first
        search: the maze's own rule, not its stored solution)."""
        grids = (np.asarray(x, np.uint8).reshape(self.size, self.size) for x in (pred, inputs))
        return bool(is_valid_optimal(*grids))

    def render(self, tokens: np.ndarray) -> str:
        return grid_to_text(np.asarray(tokens).reshape(self.size, self.size), ALPHABET)

    def parse(self, text: str) -> np.ndarray:
        """Rows of ``# SG`` characters (``o`` is read as free), one per line; returns input tokens."""
        rows = text_rows(text, self.size)
        if len(rows) != self.size:
            raise ValueError(f"expected {self.size} rows, got {len(rows)}")
        grid = np.empty((self.size, self.size), np.uint8)
        for r, line in enumerate(rows):
            if len(line) > self.size:
                raise ValueError(f"row {r + 1} has {len(line)} characters, expected {self.size}")
            line = line.ljust(self.size)  # editors drop trailing spaces (free cells)
            bad = set(line) - set(CHARS)
            if bad:
                raise ValueError(f"row {r + 1}: unknown characters {sorted(bad)!r} (allowed '# SGo')")
            grid[r] = [CHAR_TO_TOKEN[c] for c in line.replace("o", " ")]
        _check_question(grid, "maze")
        if shortest_path_length(grid) is None:
            raise ValueError("maze: no path from S to G")
        return grid.ravel()
