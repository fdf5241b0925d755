"""Sudoku CSVs in the published Sudoku-Extreme layout and at its size, generated here (#25: the CSV import measured).

    python bench/sudoku_csv.py /tmp/sx            # /tmp/sx/train.csv (3.83 M rows), /tmp/sx/test.csv (423 k rows)

The published files (sapientinc/sudoku-extreme on Hugging Face) are ``source,question,answer,rating`` rows, '.' for a
blank, a header first: about 3.83 M training and 423 k test puzzles (3,831,994 and 422,786 here, our record of the
published counts: not checked against the files, which this machine cannot download), rated by tdoku's backtracks
(mean 22). Ours: a few hundred originals from our generator rated >= 10 failed guesses (mean ≈ 15 in a sample of
ours, against the published mean of 22: the import's uniqueness check, its slow part, may cost more on the published
files), each row one of them under a random symmetry (band, row, stack, column permutations, transpose, digit
relabelling): the same bytes a row, the same rows a file. Training and test rows come from disjoint originals.
Written in blocks, to a temporary name renamed at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hrm.tasks.sudoku_solver import generate_many  # noqa: E402
from pipeline.data.build_sudoku import transform_indices  # noqa: E402

log = logging.getLogger(__name__)

TRAIN_ROWS, TEST_ROWS = 3_831_994, 422_786  # the published train.csv and test.csv
BOX = (3, 3)
HEADER = b"source,question,answer,rating\n"
BLOCK = 100_000  # rows formatted at once
SYMMETRIES = 4096  # drawn once; a row is (original, symmetry)


def rows_bytes(puzzles: np.ndarray, solutions: np.ndarray, ratings: np.ndarray) -> bytes:
    """``puzzles``, ``solutions`` (m, 81) digits (0 = blank), ``ratings`` (m,) 0-99 as CSV lines."""
    m = len(puzzles)
    line = np.empty((m, 4 + 81 + 1 + 81 + 1 + 2 + 1), np.uint8)
    line[:, :4] = np.frombuffer(b"gen,", np.uint8)
    line[:, 4:85] = np.where(puzzles == 0, ord("."), puzzles + ord("0"))
    line[:, 85] = ord(",")
    line[:, 86:167] = solutions + ord("0")
    line[:, 167] = ord(",")
    line[:, 168] = ratings // 10 + ord("0")
    line[:, 169] = ratings % 10 + ord("0")
    line[:, 170] = ord("\n")
    return line.tobytes()


def write_csv(path: Path, rows: int, originals: int, seed: int) -> Path:
    """``rows`` rows from ``originals`` generated puzzles (rated >= 10) under random symmetries."""
    p, s, r, _ = generate_many(seed, originals, BOX, min_rating=10)
    p, s = p.reshape(originals, -1).astype(np.int8), s.reshape(originals, -1).astype(np.int8)
    ratings = np.minimum(r, 99).astype(np.int64)
    rng = np.random.default_rng(seed)
    index, digits = transform_indices(BOX, SYMMETRIES, rng)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(HEADER)
        for start in range(0, rows, BLOCK):
            m = min(BLOCK, rows - start)
            which, sym = rng.integers(originals, size=m), rng.integers(SYMMETRIES, size=m)
            cells = index[sym]  # (m, 81) source cell of each cell
            puzzles = digits[sym[:, None], np.take_along_axis(p[which], cells, 1)]
            solutions = digits[sym[:, None], np.take_along_axis(s[which], cells, 1)]
            f.write(rows_bytes(puzzles, solutions, ratings[which]))
    tmp.rename(path)
    return path


def official_csvs(folder: Path, scale: float = 1.0, seed: int = 0) -> tuple[Path, Path]:
    """train.csv and test.csv under ``folder`` at the published sizes × ``scale`` (kept when already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, rows, originals, part in (("train", TRAIN_ROWS, 600, 1), ("test", TEST_ROWS, 200, 2)):
        path = folder / f"{name}.csv"
        if not path.exists():
            log.info("writing %s (%d rows)", path, max(1, round(rows * scale)))
            write_csv(path, max(1, round(rows * scale)), originals, seed * 10 + part)
        out.append(path)
    return out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--scale", type=float, default=1.0, help="rows × this")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for path in official_csvs(args.folder, args.scale):
        print(f"{path}: {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
