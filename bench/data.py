"""Data generation throughput: single process vs the Ray Data job (``hrm data build``).

    python bench/data.py [--quick] [--workers N] [--out /tmp/hrm-bench-data | s3://bucket/prefix]

Targets (this 2-core machine): 1000 unique-solution 9×9 Sudoku rated >= 10 in <= 10 min, 1000 hard 30×30 mazes
(path > 110) in <= 5 min, both through Ray Data. ``--quick`` times 200 puzzles / 40 mazes and extrapolates linearly
to 1000. Single-process maze times are always measured on a subset and extrapolated (1000 take ~10 min alone).
Numba compilation and Ray start-up are excluded (timed and printed separately). The Ray Data figure is the whole
``build_dataset`` (generate → de-duplicate → augment/encode → ``write_parquet`` → metadata.json), to a local folder
or, with ``--out s3://…``, to object storage (AWS_* environment, AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from hrm.tasks import maze
from hrm.tasks.sudoku_solver import generate_many
from pipeline.core import storage
from pipeline.core.ray_start import init_ray
from pipeline.data.build import build_dataset
from pipeline.data.config import load_config

TARGETS_S = {"sudoku": 600.0, "maze": 300.0}  # for 1000 originals


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def ray_build(task: str, section: dict, out: str, workers: int | None) -> float:
    cfg = load_config(None, task=task, seed=1, **{task: section})
    storage.delete(out)
    result, dt = timed(build_dataset, cfg, out, workers=workers, overwrite=True)
    assert result.built
    return dt


def report(name: str, n: int, single_s: float, single_n: int, ray_s: float, target: float) -> None:
    single_1000 = single_s / single_n * 1000
    ray_1000 = ray_s / n * 1000
    ok = "MET" if ray_1000 <= target else "MISSED"
    note = "" if n == 1000 else f" (extrapolated from {n})"
    print(f"{name}: single process {single_n / single_s:,.2f}/s -> {single_1000:,.0f} s per 1000; "
          f"Ray Data {n / ray_s:,.2f}/s -> {ray_1000:,.0f} s per 1000{note}; speed-up x{single_1000 / ray_1000:.2f}; "
          f"target <= {target:.0f} s: {ok}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=None, help="Ray Data tasks (default: all CPUs)")
    ap.add_argument("--out", default=None, help="a folder or an s3:// / gs:// prefix (default: a temp folder)")
    ap.add_argument("--only", choices=["sudoku", "maze"], default=None)
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="hrm-bench-data-")
    n_sudoku, n_maze = (200, 40) if args.quick else (1000, 1000)
    n_maze_single = 20 if args.quick else 60

    _, dt = timed(init_ray)
    print(f"ray start {dt:.1f} s")
    _, dt = timed(generate_many, 0, 2, (3, 3), 10)
    _, dt2 = timed(maze.generate_many, 0, 1, 30, 110)
    print(f"numba warm-up {dt + dt2:.1f} s")

    if args.only in (None, "sudoku"):
        (_, _, r, tries), single = timed(generate_many, 7, n_sudoku, (3, 3), 10)
        print(f"sudoku single process: {n_sudoku} puzzles (rating >= 10, mean {r.mean():.1f}) from {tries} "
              f"candidates in {single:.1f} s")
        ray_s = ray_build("sudoku", {"count": n_sudoku, "min_rating": 10, "augmentations": 1, "test_fraction": 0.0,
                                     "chunk_size": 25}, storage.join(out, "sudoku"), args.workers)
        report("sudoku 9x9 rated >= 10", n_sudoku, single, n_sudoku, ray_s, TARGETS_S["sudoku"])
    if args.only in (None, "maze"):
        _, single = timed(maze.generate_many, 7, n_maze_single, 30, 110)
        print(f"maze single process: {n_maze_single} mazes 30x30 path > 110 in {single:.1f} s")
        ray_s = ray_build("maze", {"size": 30, "min_path": 110, "train_count": n_maze, "test_count": 0,
                                   "chunk_size": 10 if args.quick else 25}, storage.join(out, "maze"), args.workers)
        report("maze 30x30 path > 110", n_maze, single, n_maze_single, ray_s, TARGETS_S["maze"])
    if args.out is None:
        storage.delete(out)


if __name__ == "__main__":
    main()
