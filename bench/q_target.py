"""The demo's training, in-process (no Ray, no MLflow), per Q-continue target rule and seed: held-out exact accuracy
and wall time — the table of bench/NOTES.md that chose the demo's ``model.q_target``.

    python bench/q_target.py --data data/sudoku-demo                       # 3 rules × 3 seeds, float32 eager
    python bench/q_target.py --data data/sudoku-demo --rules lagged --seeds 0 --compile

The math is the training job's (same model config, optimizers, schedule, batch and step count, read from the run
file); the batches are a seeded shuffle of the training split per epoch instead of Ray Data's stream, so the
accuracies are the same kind of figure as the demo's, not the same numbers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hrm.config import model_config  # noqa: E402
from hrm.model import HRM  # noqa: E402
from hrm.step import build_optimizers, set_lr, train_step  # noqa: E402
from hrm.tasks import make_task  # noqa: E402
from pipeline.data.loader import load_split, read_metadata  # noqa: E402
from pipeline.train.batches import to_torch  # noqa: E402
from pipeline.train.config import load_train_config  # noqa: E402
from pipeline.train.evaluate import evaluate  # noqa: E402

RUN_FILE = Path(__file__).resolve().parents[1] / "pipeline" / "configs" / "train-demo.yaml"


def batches(train: dict[str, np.ndarray], batch: int, seed: int):
    """Global batches of a seeded shuffle of the split, a new order every epoch, forever."""
    rng = np.random.default_rng(seed)
    n = len(train["inputs"])
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch + 1, batch):
            yield {k: v[order[start:start + batch]] for k, v in train.items()}


def run(data: Path, rule: str, seed: int, dtype: str, compile_: bool, run_file: Path) -> dict:
    cfg = load_train_config(run_file, {"seed": seed})
    meta = read_metadata(data)
    task = make_task(meta.task, meta.task_args)
    train, test = load_split(data, "train"), load_split(data, "test", limit=cfg.eval_limit)
    overrides = {**cfg.model, "vocab_size": meta.vocab_size, "seq_len": meta.seq_len,
                 "num_puzzle_identifiers": meta.num_puzzle_identifiers, "q_target": rule, "forward_dtype": dtype}
    torch.manual_seed(seed)
    model = HRM(model_config(cfg.flavour, **overrides)).train()
    opt = build_optimizers(model, cfg.optim)
    forward = torch.compile(model) if compile_ else model
    steps = cfg.max_steps
    started = time.perf_counter()
    carry = None
    for step, rows in zip(range(steps), batches(train, cfg.global_batch_size, seed)):
        batch = to_torch(rows, "cpu")
        carry = carry or model.initial_carry(batch)
        set_lr(opt, cfg.optim, step, steps)
        carry, _, _ = train_step(forward, carry, batch, opt, loss_scale=1 / cfg.global_batch_size,
                                 loss=model.config.loss, grad_clip=cfg.optim.grad_clip)
    train_s = time.perf_counter() - started
    metrics = evaluate(model, test, task, batch_size=cfg.global_batch_size, device="cpu")
    return {"rule": rule, "seed": seed, "exact": metrics["eval/exact_accuracy"], "train_s": train_s,
            "steps": steps, "halt_step": metrics["eval/steps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the demo dataset (hrm data build ... demo)")
    parser.add_argument("--rules", nargs="+", default=["extra_segment", "lagged", "none"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--run-file", type=Path, default=RUN_FILE)
    args = parser.parse_args()
    results = []
    for rule in args.rules:
        for seed in args.seeds:
            r = run(args.data, rule, seed, args.dtype, args.compile, args.run_file)
            results.append(r)
            print(f"{rule:14} seed {seed}: exact {r['exact']:.3f}, {r['steps']} steps in {r['train_s']:.0f} s "
                  f"({1000 * r['train_s'] / r['steps']:.0f} ms/step), halts after {r['halt_step']:.2f}", flush=True)
    print(f"\n| q_target | exact (seeds {', '.join(map(str, args.seeds))}) | mean ± sd | train s (mean) |\n|---|---|---|---|")
    for rule in args.rules:
        rows = [r for r in results if r["rule"] == rule]
        exact = [r["exact"] for r in rows]
        sd = statistics.stdev(exact) if len(exact) > 1 else 0.0
        print(f"| {rule} | {' / '.join(f'{e:.1%}' for e in exact)} | {statistics.mean(exact):.1%} ± {sd:.1%} | "
              f"{statistics.mean(r['train_s'] for r in rows):.0f} |")


if __name__ == "__main__":
    main()
