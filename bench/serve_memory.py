"""Memory of the served model per row: what ``hrm serve --batch`` (rows through the model at a time) costs.

Each point runs in a fresh process: an untrained model of the flavour, served on CPU as the model server does
(``HRMSolver._solve``: ``hrm.solve.solve`` with ``rows`` at a time, no gradients), one request of puzzles × votes
rows (votes make a puzzle several rows; a row costs the same either way), one segment. It prints the process's peak resident memory (VmHWM) before and after the request; the growth divided
by the rows at a time is the memory per row. The baseline is the same request with 1 row at a time, in the same
run. Figures depend on the model and the sequence length, not much on the CPU (printed first).

    python bench/serve_memory.py                       # paper Sudoku 9×9 (27 M) and the tests' tiny 4×4 model
    python bench/serve_memory.py --rows 64 256 1024 --flavours paper --tasks sudoku9 maze30
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"sudoku4": ("sudoku", {"box": [2, 2]}), "sudoku9": ("sudoku", {"box": [3, 3]}),
         "maze30": ("maze", {"size": 30})}
POINT = """
import json, sys, time, numpy as np, torch
sys.path.insert(0, {root!r})
from hrm.config import model_config
from hrm.model import HRM
from hrm.solve import solve
from hrm.tasks import make_task

def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

task = make_task({task!r}, {args!r})
torch.manual_seed(0)
model = HRM(model_config({flavour!r}, vocab_size=task.vocab_size, seq_len=task.seq_len, num_puzzle_identifiers=1,
                         forward_dtype="float32")).eval()
inputs = [np.ones(task.seq_len, np.uint8)]  # what the tokens say does not change the memory
before = peak()
began = time.perf_counter()
solve(model, task, inputs * {puzzles}, votes={votes}, max_steps=1, adaptive=False, rows={rows})
print(json.dumps({{"before": before, "after": peak(), "seconds": time.perf_counter() - began,
                  "params": sum(p.numel() for p in model.parameters())}}))
"""


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


def point(task: str, flavour: str, rows: int, puzzles: int, votes: int) -> dict:
    name, args = TASKS[task]
    code = POINT.format(root=str(ROOT), task=name, args=args, flavour=flavour, puzzles=puzzles, votes=votes,
                        rows=rows)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["sudoku9", "sudoku4"], choices=sorted(TASKS))
    parser.add_argument("--flavours", nargs="+", default=["paper", "debug"])
    parser.add_argument("--rows", nargs="+", type=int, default=[64, 256, 1024])
    parser.add_argument("--puzzles", type=int, default=1024)
    parser.add_argument("--votes", type=int, default=1, help="rows = puzzles × votes (the memory per row is the same)")
    a = parser.parse_args()
    print(f"CPU: {cpu_name()}; torch {__import__('torch').__version__}; one request of {a.puzzles} puzzles × "
          f"{a.votes} votes × 1 segment")
    print(f"{'task':8} {'flavour':7} {'rows':>6} {'peak MiB':>9} {'growth MiB':>11} {'KiB/row':>8} {'s':>6} "
          f"{'vs 1 row':>8}")
    for task in a.tasks:
        for flavour in a.flavours:
            base = point(task, flavour, 1, a.puzzles, a.votes)
            base_growth = base["after"] - base["before"]
            for rows in [1, *a.rows]:
                p = base if rows == 1 else point(task, flavour, rows, a.puzzles, a.votes)
                growth = p["after"] - p["before"]
                print(f"{task:8} {flavour:7} {rows:6d} {p['after'] / 2**20:9.0f} {growth / 2**20:11.1f} "
                      f"{growth / rows / 1024:8.0f} {p['seconds']:6.2f} {growth / max(base_growth, 1):8.1f}×")


if __name__ == "__main__":
    main()
