"""The settings search behind ``hrm bench reasoning``'s variants (docs/reasoning-bench.md): one configuration trained
in-process (no Ray, no MLflow) for a wall-clock budget on a dataset, held-out exact accuracy every few minutes.

    python bench/reasoning_search.py --data data/sudoku-6x6-minimal --minutes 8 --threads 1 \
        --flavour trm-mlp --model '{"hidden_size": 128, "num_heads": 4, "expansion": 2.0, "puzzle_prefix_len": 1,
                                   "h_cycles": 2, "l_cycles": 2, "halt_max_steps": 8}'

The math is the training job's: the same model, optimizers and train step; the LR's cosine is laid over the budget
as ``max_minutes`` does (pipeline.train.worker.Clock). Batches are a seeded shuffle of the training split per epoch
instead of the sharded stream. Two searches at once with ``--threads 1`` each fill a 2-core machine: compare them by
steps, not minutes. One JSON line per evaluation on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.q_target import batches  # noqa: E402  (the seeded per-epoch shuffle)
from hrm.config import model_config  # noqa: E402
from hrm.model import HRM  # noqa: E402
from hrm.step import OptimConfig, build_optimizers, set_lr, train_step  # noqa: E402
from hrm.tasks import make_task  # noqa: E402
from pipeline.data.loader import load_split, read_metadata  # noqa: E402
from pipeline.train.batches import to_torch  # noqa: E402
from pipeline.train.checkpoint import Position  # noqa: E402
from pipeline.train.evaluate import evaluate  # noqa: E402
from pipeline.train.worker import Clock  # noqa: E402

DEMO_OPTIM = {"lr": 0.002, "lr_warmup_steps": 50, "lr_min_ratio": 0.1, "weight_decay": 0.1, "puzzle_emb_lr": 0.01}


def search(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    meta = read_metadata(args.data)
    task = make_task(meta.task, meta.task_args)
    train, test = load_split(args.data, "train"), load_split(args.data, "test")
    sizes = {"vocab_size": meta.vocab_size, "seq_len": meta.seq_len,
             "num_puzzle_identifiers": meta.num_puzzle_identifiers}
    torch.manual_seed(args.seed)
    model = HRM(model_config(args.flavour, **{**json.loads(args.model), **sizes, "forward_dtype": args.dtype}))
    model.train()
    optim = OptimConfig(**{**DEMO_OPTIM, **json.loads(args.optim)})
    opt = build_optimizers(model, optim)
    clock, position, carry = Clock(args.minutes * 60, args.every * 60), Position(), None
    print(json.dumps({"tag": args.tag, "parameters": model.num_parameters()}), flush=True)
    for rows in batches(train, args.batch, args.seed):
        batch = to_torch(rows, "cpu")
        carry = carry or model.initial_carry(batch)
        set_lr(opt, optim, position.step, clock.schedule_total(position, 10**9))
        carry, _, metrics = train_step(model, carry, batch, opt, loss_scale=1 / args.batch, loss=model.config.loss,
                                       grad_clip=optim.grad_clip)
        position.step += 1
        clock.count(position)
        done = clock.out_of_time(position)
        if clock.eval_due(position) or done:
            model.eval()
            scored = evaluate(model, test, task, batch_size=250, device="cpu")
            model.train()
            M = model.config.halt_max_steps
            print(json.dumps({"tag": args.tag, "minutes": round(position.trained_seconds / 60, 2),
                              "step": position.step, "exact": scored["eval/exact_accuracy"],
                              "cell": round(scored["eval/accuracy"], 4),
                              "by_segment": [round(scored[f"eval/exact_accuracy_step_{s}"], 3) for s in range(1, M + 1)],
                              "ms_per_step": round(1000 * position.trained_seconds / position.step)}), flush=True)
            clock.evaluated(position)
        if done:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/sudoku-6x6-minimal", help="a dataset (hrm data build)")
    parser.add_argument("--flavour", default="demo")
    parser.add_argument("--model", default="{}", help="JSON: overrides of the flavour")
    parser.add_argument("--optim", default="{}", help="JSON: overrides of the demo's optimizer settings")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget")
    parser.add_argument("--every", type=float, default=2.0, help="minutes of training between evaluations")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="search")
    search(parser.parse_args())


if __name__ == "__main__":
    main()
