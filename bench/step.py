"""Training-step throughput of HRM, side by side in one run: the paper-equivalent step and each faster option.

    python bench/step.py                       # CPU: the demo's shapes (6×6 Sudoku, batch 128), every option
    python bench/step.py --suite paper         # GPU: the configs of the paper's code's table (bfloat16, compiled)
    python bench/step.py --flavour debug --batch 64 --steps 20

Every row is one deep-supervision step on synthetic batches (one ACT segment, the Q-continue target, backward,
Adam-atan2 + SignSGD), timed after warm-up; the ratio is against the suite's first row, run in the same process.
"same math" rows must give the baseline's losses (the Δloss column: the largest difference over the timed steps);
"faster math" rows change what is computed (the Q-continue target rule, bfloat16) and are reported apart.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hrm.config import FLAVOURS, model_config  # noqa: E402
from hrm.flops import step_flops  # noqa: E402
from hrm.model import HRM  # noqa: E402
from hrm.step import OptimConfig, build_optimizers, train_step  # noqa: E402
from pipeline.core.precision import resolve_dtype  # noqa: E402


@dataclass
class Row:
    flavour: str
    overrides: dict = field(default_factory=dict)  # ModelConfig fields; forward_dtype "auto" = this device's choice
    batch: int = 128
    compile: bool = False
    math: str = "same"  # "same" as the suite's first row, or "faster"


DEMO = dict(vocab_size=8, seq_len=36)  # 6×6 Sudoku: digits 1–6, blank, PAD
SUDOKU = dict(vocab_size=11, seq_len=81)
SUITES = {
    "cpu": {  # the demo's step (D 128, 2+2 layers, M_max 4, batch 128); the first row is the paper's math, eager
        "paper-equivalent (eager, fp32)": Row("demo", dict(DEMO, forward_dtype="float32")),
        "compiled, fp32": Row("demo", dict(DEMO, forward_dtype="float32"), compile=True),
        "eager, auto dtype": Row("demo", dict(DEMO), math="faster"),
        "compiled, auto dtype": Row("demo", dict(DEMO), compile=True, math="faster"),
        "q_target lagged, eager, fp32": Row("demo", dict(DEMO, forward_dtype="float32", q_target="lagged"),
                                            math="faster"),
        "q_target lagged, compiled, fp32": Row("demo", dict(DEMO, forward_dtype="float32", q_target="lagged"),
                                               compile=True, math="faster"),
        "q_target none, eager, fp32": Row("demo", dict(DEMO, forward_dtype="float32", q_target="none"),
                                          math="faster"),
        "q_target none, compiled, fp32": Row("demo", dict(DEMO, forward_dtype="float32", q_target="none"),
                                             compile=True, math="faster"),
    },
    "paper": {  # the rows of the paper code's H200 table (issue #7)
        "HRM Sudoku": Row("paper", SUDOKU, 768, True),
        "HRM Sudoku, eager": Row("paper", SUDOKU, 768, False),
        "HRM Sudoku, lagged": Row("paper", dict(SUDOKU, q_target="lagged"), 768, True, "faster"),
        "HRM Sudoku, no continue": Row("paper", dict(SUDOKU, q_target="none"), 768, True, "faster"),
        "TRM-attention Sudoku": Row("trm", SUDOKU, 768, True, "faster"),
        "TRM-MLP Sudoku": Row("trm-mlp", SUDOKU, 768, True, "faster"),
        "HRM Maze 30x30": Row("paper", dict(vocab_size=6, seq_len=900), 128, True, "faster"),
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


def measure(row: Row, steps: int, warmup: int, device: str) -> dict:
    """Time ``steps`` training steps after ``warmup`` (the first includes compilation); the same seed, weights and
    batch for every row, so rows of the same math can be compared loss for loss."""
    overrides = dict(row.overrides)
    dtype, _ = resolve_dtype(overrides.pop("forward_dtype", "auto"), device)
    torch.manual_seed(0)
    cfg = model_config(row.flavour, forward_dtype=dtype, **overrides)
    model = HRM(cfg).to(device).train()
    opt = build_optimizers(model, OptimConfig())
    fn = torch.compile(model) if row.compile else model
    L, V = cfg.seq_len, cfg.vocab_size
    g = torch.Generator().manual_seed(0)
    b = {"inputs": torch.randint(1, V, (row.batch, L), generator=g).to(device),
         "labels": torch.randint(2, V, (row.batch, L), generator=g).to(device),
         "puzzle_ids": torch.zeros(row.batch, dtype=torch.long, device=device)}
    carry = model.initial_carry(b)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    start = time.perf_counter()
    losses = []
    for i in range(warmup + steps):
        if i == 1:
            sync()
            first = time.perf_counter() - start
        if i == warmup:
            sync()
            start = time.perf_counter()
        carry, loss, _ = train_step(fn, carry, b, opt, loss_scale=1 / row.batch)
        losses.append(loss)
    sync()
    seconds = (time.perf_counter() - start) / steps
    return {"dtype": dtype, "ms_per_step": 1000 * seconds, "examples_per_s": row.batch / seconds,
            "tflops": step_flops(cfg, row.batch) / seconds / 1e12, "first_step_s": first,
            "losses": torch.stack(losses).float().cpu()}


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
    parser.add_argument("--only", nargs="+", metavar="ROW", help="run only these rows of the suite (names)")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    if args.flavour:
        runs = {args.flavour: Row(args.flavour, dict(vocab_size=11, seq_len=args.seq_len), args.batch, args.compile)}
    else:
        runs = SUITES[args.suite or ("paper" if gpu else "cpu")]
        runs = {k: v for k, v in runs.items() if not args.only or k in args.only}
    peak_dtype = torch.bfloat16 if gpu else torch.float32
    peak = matmul_peak(args.device, peak_dtype, 8192 if gpu else 1024)
    capability = torch.cuda.get_device_name() if gpu else f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    print(f"device {args.device} ({capability}, {torch.get_num_threads()} threads): matmul peak measured "
          f"{peak / 1e12:.3f} TFLOP/s ({str(peak_dtype).removeprefix('torch.')})")
    print(f"{'config':34} {'math':7} {'dtype':9} {'batch':>5} {'ms/step':>8} {'ratio':>6} {'ex/s':>6} "
          f"{'% peak':>7} {'1st step s':>10} {'Δloss':>8}")
    baseline = None
    for name, row in runs.items():
        r = measure(row, args.steps, args.warmup, args.device)
        baseline = baseline or r
        ratio = baseline["ms_per_step"] / r["ms_per_step"]
        dloss = (r["losses"] - baseline["losses"]).abs().max().item() if row.math == "same" else float("nan")
        print(f"{name:34} {row.math:7} {r['dtype']:9} {row.batch:>5} {r['ms_per_step']:>8.1f} {ratio:>5.2f}× "
              f"{r['examples_per_s']:>6.0f} {100 * r['tflops'] * 1e12 / peak:>6.1f}% {r['first_step_s']:>10.1f} "
              f"{dloss:>8.1e}", flush=True)


if __name__ == "__main__":
    main()
