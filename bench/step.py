"""Training-step throughput of HRM: examples/s, tokens/s, model TFLOP/s and % of a matmul peak measured in this run.

    python bench/step.py                       # CPU: the `small` flavour on 6×6-sized batches
    python bench/step.py --suite paper         # GPU: the configs of the paper's code's table (bfloat16, compiled)
    python bench/step.py --flavour debug --batch 64 --steps 20

Synthetic batches; every step is one deep-supervision step (one ACT segment, the extra no-grad segment for the
Q-continue target, backward, Adam-atan2 + SignSGD).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.flops import step_flops  # noqa: E402
from hrm.config import FLAVOURS, model_config
from hrm.model import HRM
from hrm.step import OptimConfig, build_optimizers, train_step

# name: (flavour, overrides, batch, compile) — the rows of the paper code's H200 table (issue #7)
SUITES = {
    "paper": {
        "HRM Sudoku": ("paper", dict(vocab_size=11, seq_len=81), 768, True),
        "TRM-attention Sudoku": ("trm", dict(vocab_size=11, seq_len=81), 768, True),
        "TRM-MLP Sudoku": ("trm-mlp", dict(vocab_size=11, seq_len=81), 768, True),
        "HRM Maze 30x30": ("paper", dict(vocab_size=6, seq_len=900), 128, True),
        "HRM Sudoku, eager": ("paper", dict(vocab_size=11, seq_len=81), 768, False),
    },
    "cpu": {
        "small 6x6": ("small", dict(vocab_size=8, seq_len=36), 64, False),
        "demo 6x6": ("demo", dict(vocab_size=8, seq_len=36), 128, False),
        "demo 6x6 bf16": ("demo", dict(vocab_size=8, seq_len=36, forward_dtype="bfloat16"), 128, False),
    },
}


def matmul_peak(device: str, dtype: torch.dtype, n: int) -> float:
    """FLOP/s of a large square matrix product on this device (the peak the step is compared with)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    reps = 20 if device.startswith("cuda") else 3
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def measure(flavour: str, overrides: dict, batch: int, steps: int, warmup: int, device: str,
            compile_: bool) -> dict:
    dtype = overrides.pop("forward_dtype", "bfloat16" if device.startswith("cuda") else "float32")
    cfg = model_config(flavour, forward_dtype=dtype, **overrides)
    model = HRM(cfg).to(device).train()
    opt = build_optimizers(model, OptimConfig())
    fn = torch.compile(model) if compile_ else model
    L, V = cfg.seq_len, cfg.vocab_size
    b = {"inputs": torch.randint(1, V, (batch, L), device=device),
         "labels": torch.randint(2, V, (batch, L), device=device),
         "puzzle_ids": torch.zeros(batch, dtype=torch.long, device=device)}
    carry = model.initial_carry(b)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        carry, _, _ = train_step(fn, carry, b, opt, loss_scale=1 / batch)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        carry, _, _ = train_step(fn, carry, b, opt, loss_scale=1 / batch)
    sync()
    seconds = (time.perf_counter() - start) / steps
    return {"dtype": dtype, "batch": batch, "ms_per_step": 1000 * seconds, "examples_per_s": batch / seconds,
            "tokens_per_s": batch * (L + cfg.prefix_len) / seconds, "tflops": step_flops(cfg, batch) / seconds / 1e12,
            "parameters": model.num_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted(SUITES), help="a set of configs (default: cpu, or paper on GPU)")
    parser.add_argument("--flavour", choices=sorted(FLAVOURS), help="one flavour instead of a suite")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=81)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (with --flavour)")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    if args.flavour:
        runs = {args.flavour: (args.flavour, dict(vocab_size=11, seq_len=args.seq_len), args.batch, args.compile)}
    else:
        runs = SUITES[args.suite or ("paper" if gpu else "cpu")]
    peak = matmul_peak(args.device, torch.bfloat16 if gpu else torch.float32, 8192 if gpu else 1024)
    print(f"device {args.device}: matmul peak measured {peak / 1e12:.2f} TFLOP/s "
          f"({'bfloat16' if gpu else 'float32'})")
    print(f"{'config':24} {'batch':>5} {'ms/step':>9} {'examples/s':>11} {'tokens/s':>10} {'TFLOP/s':>8} {'% peak':>7}")
    for name, (flavour, overrides, batch, compile_) in runs.items():
        if compile_ and not gpu:
            compile_ = False
        r = measure(flavour, dict(overrides), batch, args.steps, args.warmup, args.device, compile_)
        print(f"{name:24} {r['batch']:>5} {r['ms_per_step']:>9.1f} {r['examples_per_s']:>11.0f} "
              f"{r['tokens_per_s']:>10.0f} {r['tflops']:>8.3f} {100 * r['tflops'] * 1e12 / peak:>6.1f}%")


if __name__ == "__main__":
    main()
