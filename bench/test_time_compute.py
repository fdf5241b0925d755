"""Test-time compute of a trained model: exact accuracy on a dataset's test split for more ACT segments and for
symmetry votes (``hrm.vote.answer``), with the forward passes per puzzle and the wall time each point cost. Trains
nothing.

    python bench/test_time_compute.py --checkpoint <folder with model.pt + model.json> --data data/sudoku-demo
    python bench/test_time_compute.py --checkpoint ckpt --data data/sudoku-demo --limit 300 --votes 1 4 8 \
        --multiples 1 2 4 16 --adaptive

Rows: max_steps ∈ {1, 2, 4, 16} × M_max (the trained ``halt_max_steps``) × votes ∈ {1, 4, 8}. Votes are
whole-answer votes over the task's symmetries (the identity first, seed ``--seed``); the figures depend on the
CPU/GPU, printed first (``lscpu`` model name).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hrm.vote import answer  # noqa: E402
from pipeline.core.export import load_export  # noqa: E402
from pipeline.data.loader import load_split, read_metadata  # noqa: E402

log = logging.getLogger("bench.test_time_compute")


def cpu_name() -> str:
    """``lscpu``'s model name, or what it could not say."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else "unknown"


def point(model, task, data: dict, *, max_steps: int, votes: int, adaptive: bool, seed: int, batch: int) -> dict:
    """One row of the table: exact accuracy, mean agreement, forward passes per puzzle and wall time."""
    start = time.perf_counter()
    got = answer(model, task, data["inputs"], puzzle_ids=data["puzzle_ids"], votes=votes, max_steps=max_steps,
                 adaptive=adaptive, seed=seed, batch_size=batch)
    wall = time.perf_counter() - start
    labels = np.where(data["labels"] < 0, 0, data["labels"])  # the loader's ignore label back to PAD
    hits = [task.score(p, y, x)["exact"] for p, y, x in zip(got.preds, labels, data["inputs"])]
    return {"max_steps": max_steps, "votes": votes, "exact": float(np.mean(hits)) if hits else 0.0,
            "agreement": float(np.mean(got.agreement)) if len(hits) else 0.0,
            "passes": got.forward_passes, "wall_s": wall}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="folder with model.pt and model.json")
    parser.add_argument("--data", required=True, help="dataset folder (metadata.json + parts)")
    parser.add_argument("--limit", type=int, default=None, help="first N test puzzles (default all)")
    parser.add_argument("--multiples", type=int, nargs="+", default=[1, 2, 4, 16], help="max_steps as × M_max")
    parser.add_argument("--votes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--adaptive", action="store_true", help="each answer where the model first wants to halt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=512, help="rows per forward batch (votes × puzzles are chunked)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    model, _ = load_export(Path(args.checkpoint), map_location=args.device)
    meta = read_metadata(args.data)
    task = meta.make_task()
    data = load_split(args.data, "test", args.limit)
    M = model.config.halt_max_steps
    print(f"# CPU: {cpu_name()}; device {args.device}; torch {torch.__version__}; {torch.get_num_threads()} threads")
    print(f"# {task.name} test split: {len(data['inputs'])} puzzles; M_max {M}; adaptive {args.adaptive}; "
          f"seed {args.seed}")
    print("| max_steps | votes | exact | agreement | forward passes / puzzle | wall s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for k in args.multiples:
        for v in args.votes:
            r = point(model, task, data, max_steps=k * M, votes=v, adaptive=args.adaptive, seed=args.seed,
                      batch=args.batch)
            print(f"| {r['max_steps']} ({k}×M) | {v} | {r['exact']:.2%} | {r['agreement']:.2f} | {r['passes']} | "
                  f"{r['wall_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
