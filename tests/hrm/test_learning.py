"""The debug flavour learns a handful of Sudoku puzzles to 100% exact accuracy on CPU."""

import pytest
import torch
from sudoku_fixture import sudoku_batch

from hrm.config import model_config
from hrm.model import HRM
from hrm.step import OptimConfig, build_optimizers, set_lr, train_step


def exact_accuracy(m: HRM, b) -> float:
    m.eval()
    with torch.no_grad():
        carry = m.initial_carry(b)
        for _ in range(m.config.halt_max_steps):
            carry, out = m(carry, b)
    m.train()
    return (out["logits"].argmax(-1) == b["labels"]).all(-1).float().mean().item()


@pytest.mark.slow
def test_debug_flavour_learns_sudoku_handful():
    inputs, labels = sudoku_batch(4, blanks=8)
    b = {"inputs": torch.tensor(inputs), "labels": torch.tensor(labels), "puzzle_ids": torch.zeros(4, dtype=torch.long)}
    m = HRM(model_config("debug", halt_max_steps=2)).train()
    cfg = OptimConfig(lr=1e-3, lr_warmup_steps=20, weight_decay=0.0, lr_min_ratio=0.0)
    opt = build_optimizers(m, cfg)
    carry = m.initial_carry(b)
    assert exact_accuracy(m, b) == 0.0
    total, best = 300, 0.0
    for step in range(total):
        set_lr(opt, cfg, step, total)
        carry, loss, _ = train_step(m, carry, b, opt, loss_scale=1 / 4)
        if step % 25 == 24:
            best = exact_accuracy(m, b)
            if best == 1.0:
                break
    assert best == 1.0
