"""The paper's training configs at their full model size on CPU (#25): a training step at batch 2 of each kind of
model they train (HRM with a puzzle-embedding table as for ARC, TRM with attention, TRM-MLP), built exactly as
``hrm train`` builds it from the run file, with the run's optimizers; the full-size runs through ``hrm train``, at
1 and 2 workers: ``python bench/scale.py steps`` (bench/NOTES.md)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hrm.model import HRM
from hrm.step import build_optimizers, train_step
from pipeline.train.config import load_train_config, run_model_config
from pipeline.train.plan import synthetic_batch, training_state_size

pytestmark = pytest.mark.slow
CONFIGS = Path(__file__).resolve().parents[3] / "pipeline" / "configs"


@pytest.mark.parametrize("run_file, vocab, ids", [
    ("train-arc-agi-1.yaml", 12, 400),  # HRM, 27 M network parameters, a table of 400 puzzle embeddings
    ("train-maze-hard-1k-trm.yaml", 6, 1),  # TRM with attention
    ("train-sudoku-extreme-1k-trm.yaml", 11, 1),  # TRM-MLP
])
def test_a_paper_model_trains_a_step_at_batch_2(run_file, vocab, ids):
    cfg = load_train_config(CONFIGS / run_file, {"global_batch_size": 2, "scaling.num_workers": 1,
                                                 "scaling.use_gpu": False, "model.forward_dtype": "float32"})
    meta = SimpleNamespace(vocab_size=vocab, seq_len=81, num_puzzle_identifiers=ids)  # rows of 81 tokens
    model_cfg = run_model_config(cfg, meta)
    torch.manual_seed(0)
    model = HRM(model_cfg)
    assert model.num_parameters() == training_state_size(model_cfg, ema=cfg.ema is not None)[0]
    assert model.num_parameters() > 5_000_000  # the papers' sizes, not a test flavour
    opt = build_optimizers(model, cfg.optim)
    rows = synthetic_batch(model_cfg, 2)
    rows["puzzle_ids"] = torch.tensor([0, ids - 1], dtype=torch.int32)
    before = [p.detach().clone() for p in model.parameters()]
    carry = model.initial_carry(rows)
    carry, loss, metrics = train_step(model, carry, rows, opt, loss_scale=1 / 2, loss=model_cfg.loss,
                                      grad_clip=cfg.optim.grad_clip)
    assert math.isfinite(float(loss)) and math.isfinite(float(metrics["grad_norm"]))
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # every tensor trained
    if model.puzzle_emb is not None:  # the rows the batch used moved (SignSGD), the others did not
        moved = model.puzzle_emb.weight.abs().sum(dim=1) > 0
        assert moved[0] and moved[ids - 1] and not moved[1:ids - 1].any()
