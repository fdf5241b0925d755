"""Micro benchmark of Sudoku data generation, single process.

    python bench/data_sudoku.py [--box 3 3] [--minimal 2000] [--rated 100] [--min-rating 10]

Prints minimal puzzles/s (every candidate is a minimal unique puzzle), rated puzzles/s
(rating >= --min-rating) and canonical forms/s. Numba compilation is excluded (warm-up call).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hrm.tasks.sudoku import canonical
from hrm.tasks.sudoku_solver import generate_many


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--box", type=int, nargs=2, default=(3, 3))
    ap.add_argument("--minimal", type=int, default=2000, help="minimal puzzles to time")
    ap.add_argument("--rated", type=int, default=100, help="rated puzzles to time")
    ap.add_argument("--min-rating", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    box = tuple(args.box)
    generate_many(0, 2, box)  # compile / load the numba cache

    t = time.perf_counter()
    p, _, r, tries = generate_many(args.seed, args.minimal, box)
    dt = time.perf_counter() - t
    print(f"box {box}: {tries / dt:,.0f} minimal puzzles/s ({1e3 * dt / tries:.3f} ms each), "
          f"mean clues {(p != 0).sum((1, 2)).mean():.1f}, mean rating {r.mean():.2f}, "
          f"share rated >= {args.min_rating}: {(r >= args.min_rating).mean():.2%}")

    t = time.perf_counter()
    _, _, r, tries = generate_many(args.seed + 1, args.rated, box, args.min_rating)
    dt = time.perf_counter() - t
    print(f"box {box}: {len(r) / dt:,.1f} puzzles/s rated >= {args.min_rating} "
          f"({tries} candidates, mean rating {r.mean():.1f}, {dt:.1f} s)")

    canonical(p[0], box)
    k = min(len(p), 500)
    t = time.perf_counter()
    keys = {canonical(x, box) for x in p[:k]}
    dt = time.perf_counter() - t
    print(f"box {box}: {k / dt:,.0f} canonical forms/s ({len(keys)} distinct of {k})")


if __name__ == "__main__":
    np.set_printoptions(linewidth=120)
    main()
