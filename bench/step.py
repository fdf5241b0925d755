"""Training-step throughput of HRM on the current device: examples/s and tokens/s for a flavour.

    python bench/step.py --flavour debug --batch 64 --steps 20
    python bench/step.py --flavour paper --batch 768 --compile      # on a GPU (bfloat16)

Synthetic Sudoku-shaped batches (V = 11, L = 81); every step is one deep-supervision step (one ACT segment, the
extra no-grad segment for the Q-continue target, backward, Adam-atan2 + SignSGD).
"""

from __future__ import annotations

import argparse
import time

import torch

from hrm.config import FLAVOURS, model_config
from hrm.model import HRM
from hrm.step import OptimConfig, build_optimizers, train_step


def measure(flavour: str, batch: int, steps: int, warmup: int, device: str, compile_: bool) -> dict:
    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    cfg = model_config(flavour, vocab_size=11, seq_len=81, forward_dtype=dtype)
    model = HRM(cfg).to(device).train()
    opt = build_optimizers(model, OptimConfig())
    fn = torch.compile(model) if compile_ else model
    b = {"inputs": torch.randint(1, 11, (batch, 81), device=device),
         "labels": torch.randint(2, 11, (batch, 81), device=device),
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
    return {"flavour": flavour, "device": device, "dtype": dtype, "batch": batch, "ms_per_step": 1000 * seconds,
            "examples_per_s": batch / seconds, "tokens_per_s": batch * (81 + cfg.prefix_len) / seconds,
            "parameters": model.num_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flavour", default="debug", choices=sorted(FLAVOURS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = parser.parse_args()
    r = measure(args.flavour, args.batch, args.steps, args.warmup, args.device, args.compile)
    print(f"{r['flavour']} ({r['parameters'] / 1e6:.2f} M params) on {r['device']} {r['dtype']}, batch {r['batch']}: "
          f"{r['ms_per_step']:.1f} ms/step, {r['examples_per_s']:.0f} examples/s, {r['tokens_per_s']:.0f} tokens/s")


if __name__ == "__main__":
    main()
