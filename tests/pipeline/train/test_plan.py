"""``hrm plan``: each field against its formula on a hand-made dataset, the activation count against the tensors a
real step saves, the memory estimate against the peak of real steps, the GPU rates reproduced, and the refusals."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hrm.config import model_config
from hrm.flops import step_flops
from hrm.loss import act_loss
from hrm.model import HRM
from pipeline.cli import main
from pipeline.data.meta import write_metadata
from pipeline.data.write import write_part
from pipeline.train.config import load_train_config
from pipeline.train.gpu_figures import GPU_FIGURES
from pipeline.train.plan import (
    ACTIVATION_PEAK,
    READ_PEAK,
    WORKER_PROCESS,
    achieved_flops,
    activation_bytes,
    make_plan,
    render,
    size,
    synthetic_batch,
)

L, PARTS = 16, (40, 50, 30)  # 4×4 Sudoku rows (vocab 6), 120 training rows in three parts


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "ds"
    rng = np.random.default_rng(0)
    files, counts = {"train": [], "test": []}, {}
    for split, sizes in (("train", PARTS), ("test", (8,))):
        (path / split).mkdir(parents=True)
        start = 0
        for k, m in enumerate(sizes):
            name = f"{split}/part-{k:05d}.parquet"
            size = write_part(path / name, rng.integers(1, 6, (m, L), dtype=np.uint8),
                              rng.integers(1, 6, (m, L), dtype=np.uint8), np.zeros(m, np.int32), np.arange(m), start)
            files[split].append({"path": name, "rows": m, "first": start, "bytes": size})
            start += m
        counts[split] = start
    write_metadata(path, {"task": "sudoku", "task_args": {"box": [2, 2]}, "vocab_size": 6, "seq_len": L,
                          "num_puzzle_identifiers": 1, "counts": counts, "groups": counts, "config": {}, "seed": 0,
                          "fingerprint": "x", "files": files})
    return path


def config(dataset, **sets):
    return load_train_config(None, {"name": "planned", "data": str(dataset), "flavour": "debug", "epochs": 3,
                                    "max_steps": None, "global_batch_size": 16,
                                    "model.forward_dtype": "float32", **sets})


def saved_on_cpu(model_cfg, batch: int) -> int:
    """Bytes of the tensors autograd saves in a real step on this CPU (what the plan counts on the meta device)."""
    torch.manual_seed(0)
    model = HRM(model_cfg)
    rows = synthetic_batch(model_cfg, batch)
    carry = model.initial_carry(rows)
    saved: dict[int, int] = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        carry, outputs = model(carry, rows)
        act_loss(outputs, carry.batch["labels"], carry.halted, carry.steps, loss=model_cfg.loss)
    return sum(saved.values())


@pytest.mark.parametrize("flavour, dtype", [("debug", "float32"), ("trm", "float32"), ("trm-mlp", "float32"),
                                            ("debug", "bfloat16")])
def test_activations_are_the_tensors_a_real_step_saves(flavour, dtype):
    c = model_config(flavour, vocab_size=6, seq_len=L, num_puzzle_identifiers=1, forward_dtype=dtype,
                     hidden_size=64, num_heads=2)
    assert activation_bytes(c, 3) == saved_on_cpu(c, 3)


def test_each_field_follows_its_formula(dataset):
    cfg = config(dataset, **{"scaling.num_workers": 2, "scaling.cpus_per_worker": 0.5})
    plan = make_plan(cfg, probe=True, have={"CPU": 2, "GPU": 0, "memory": 16e9})
    model = model_config("debug", vocab_size=6, seq_len=L, num_puzzle_identifiers=1, forward_dtype="float32")
    params = HRM(model).num_parameters()
    assert plan.rows == {"train": 120, "test": 8} and plan.parts == 4 and plan.seq_len == L
    assert plan.data_bytes == sum(p.stat().st_size for p in dataset.rglob("*.parquet"))
    assert (plan.steps_per_epoch, plan.steps, plan.epochs) == (120 // 16, 3 * (120 // 16), 3)
    assert (plan.workers, plan.local_batch) == (2, 8)
    table = model.emb_dim  # the puzzle-embedding table's one row: weights only (SignSGD)
    assert plan.params == params and plan.state_bytes == (params - table) * 4 * 4 + table * 4  # weights, grads, m, v
    assert plan.flops_per_step == step_flops(model, 16)
    assert plan.activation_bytes == saved_on_cpu(model, 8)  # the local batch
    assert plan.device_bytes == plan.state_bytes + ACTIVATION_PEAK * plan.activation_bytes
    assert plan.share_bytes == 60 * (2 * L + 12)  # half the rows: tokens, labels, ids
    assert plan.dtype == "float32" and plan.device == "cpu"
    assert plan.probe.batch == 2 and plan.probe.seconds > 0 and plan.cpu_step_seconds == plan.probe.seconds * 8
    h100, h200 = plan.gpus
    assert (h100.gpu, h100.step_seconds, h200.gpu) == ("H100", None, "H200")
    assert h200.step_seconds == pytest.approx(step_flops(model, 8) / achieved_flops(GPU_FIGURES[0]))
    assert "lower bound" in h200.basis and h200.fits
    assert plan.lacks == []
    text = "\n".join(render(plan))
    assert "21 at global batch 16 (7 an epoch: 3 epochs); 2 worker(s) × local batch 8" in text
    assert "lacks       nothing" in text


@pytest.mark.parametrize("figure", GPU_FIGURES, ids=lambda f: f"{f.flavour}-{f.task}")
def test_a_measured_rate_is_reproduced_for_its_own_model_and_batch(figure):
    model = model_config(figure.flavour, seq_len=figure.seq_len, vocab_size=figure.vocab_size)
    examples_per_s = figure.batch / (step_flops(model, figure.batch) / achieved_flops(figure))
    assert examples_per_s == pytest.approx(figure.examples_per_s, rel=1e-12)


def test_what_is_lacking_is_named(dataset):
    cfg = config(dataset, **{"scaling.num_workers": 4, "scaling.use_gpu": True, "scaling.cpus_per_worker": 1,
                             "model.forward_dtype": "auto"})
    plan = make_plan(cfg, probe=False, have={"CPU": 2, "GPU": 1, "memory": 1000})
    assert plan.lacks[0] == "GPUs: 4 workers × 1.0 GPU need 4; here: 1"
    assert plan.lacks[1] == "CPUs: 4 workers × 1 CPU and 1 for Ray Data need 5; here: 2"
    host = WORKER_PROCESS + READ_PEAK * plan.share_bytes  # a GPU run holds its model on the GPU
    assert plan.lacks[2] == (f"memory: 4 worker(s) × {size(host)} (the process, its share read) need "
                             f"{size(4 * host)}; here: 1 KB")
    assert plan.dtype == "bfloat16" and "planned for" in plan.dtype_reason  # auto on a GPU run, without a GPU here


PEAK = """
import json, sys, torch
from pathlib import Path
from hrm.config import model_config
from hrm.model import HRM
from hrm.step import OptimConfig, build_optimizers, train_step
from pipeline.train.plan import synthetic_batch

def rss(field):
    return next(int(l.split()[1]) * 1024 for l in Path("/proc/self/status").read_text().splitlines()
                if l.startswith(field))

flavour, batch = sys.argv[1], int(sys.argv[2])
c = model_config(flavour, vocab_size=11, seq_len=81, num_puzzle_identifiers=1, forward_dtype="float32")
base = rss("VmRSS:")
torch.manual_seed(0)
model = HRM(c)
opt = build_optimizers(model, OptimConfig())
rows = synthetic_batch(c, batch)
carry = model.initial_carry(rows)
for _ in range(3):
    carry, _, _ = train_step(model, carry, rows, opt, loss_scale=1 / batch, loss=c.loss)
print(rss("VmHWM:") - base)
"""


@pytest.mark.slow
@pytest.mark.parametrize("flavour, batch", [("debug", 128), ("trm", 4)])  # the shallowest and a deep one
def test_the_memory_estimate_brackets_the_peak_of_real_steps(flavour, batch):
    """Three real float32 steps in a fresh process: the peak resident memory they add is at least the training
    state and the saved activations, and within 0.5-1.4× of the plan's peak (saved activations counted twice)."""
    from pipeline.train.plan import training_state_size

    c = model_config(flavour, vocab_size=11, seq_len=81, num_puzzle_identifiers=1, forward_dtype="float32")
    state, saved = training_state_size(c, ema=False)[1], activation_bytes(c, batch)
    done = subprocess.run([sys.executable, "-c", PEAK, flavour, str(batch)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    peak = int(done.stdout.split()[-1])
    assert peak >= state + saved, (peak, state, saved)
    assert 0.5 <= peak / (state + ACTIVATION_PEAK * saved) <= 1.4, (peak, state, saved)


def test_cli_prints_the_plan_and_its_json(dataset, tmp_path):
    before = sorted(p.name for p in tmp_path.iterdir())
    args = ["plan", "--no-probe", "--set", f"data={dataset}", "--set", "flavour=debug", "--set",
            "global_batch_size=16", "--set", "epochs=2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "steps       14 at global batch 16" in result.output and "H200" in result.output
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    assert data["steps"] == 14 and data["probe"] is None and math.isclose(data["epochs"], 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@pytest.mark.parametrize("sets, message", [
    (["data=/nonexistent/ds"], "dataset not found: /nonexistent/ds has no metadata.json"),
    (["bogus=1"], "unknown key"),
    (["global_batch_size=4096"], "fewer than one global batch (4096)"),
])
def test_bad_input_is_one_line_and_exit_1(dataset, sets, message):
    args = ["plan", "--no-probe", "--set", f"data={dataset}"] + [a for s in sets for a in ("--set", s)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and message in result.output, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output


def test_a_share_too_large_for_a_workers_memory_is_refused_before_training(dataset, monkeypatch):
    """`hrm train` checks, once Ray is up and before any run is opened, that each worker can read its share of the
    training split in its part of the cluster's memory (the process, and the share at its reading peak)."""
    import ray

    from pipeline.data.loader import read_metadata
    from pipeline.train.plan import share_bytes, share_problem
    from pipeline.train.run import check_resources

    assert share_bytes(120, L, 2) == 60 * (2 * L + 12) and share_bytes(121, L, 2) == 61 * (2 * L + 12)
    need = WORKER_PROCESS + READ_PEAK * share_bytes(3_630_085, 900, 1)  # ARC-AGI-1 on one worker: ≈ 8.2 GB
    assert share_problem(3_630_085, 900, 1, 16e9, "arc") is None and share_problem(3_630_085, 900, 1, 0, "arc") is None
    message = share_problem(3_630_085, 900, 1, 8e9, "data/arc-agi-1")
    assert message == (f"data/arc-agi-1: a worker's share of its 3,630,085 training rows is 6.58 GB at 1 worker(s) "
                       f"({size(need)} with the worker while it reads them), more than the 8 GB of memory each worker "
                       "has here; use more workers (scaling.num_workers) or nodes with more memory")
    assert share_problem(3_630_085, 900, 2, 16e9, "arc") is None  # two workers, half the share each
    cfg = config(dataset)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0, "memory": 4e8, "object_store_memory": 1e8})
    with pytest.raises(ValueError, match=r"a worker's share of its 120 training rows is 5.28 KB at 1 worker\(s\)"):
        check_resources(cfg, read_metadata(dataset), str(dataset))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0, "memory": 4e9, "object_store_memory": 1e9})
    check_resources(cfg, read_metadata(dataset), str(dataset))


def test_an_elastic_run_needs_room_for_its_minimum_now(dataset, monkeypatch):
    """`num_workers: [min, max]`: `hrm train` starts when the cluster holds min workers (Ray Train grows the run as
    the cluster does); the plan sizes a worker at min, its largest share and local batch."""
    import ray

    from pipeline.data.loader import read_metadata
    from pipeline.train.run import check_resources

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 3.0, "memory": 4e9, "object_store_memory": 1e9})
    elastic = config(dataset, **{"scaling.num_workers": [2, 8], "max_failures": 1})
    check_resources(config(dataset, **{"scaling.num_workers": [1, 2], "max_failures": 1}), read_metadata(dataset),
                    str(dataset))  # at most 2 × 1 CPU, and 1 for Ray Data: fits
    with pytest.raises(ValueError, match="3 workers × 1.0 CPU leave Ray Data 0 of 3 CPUs"):
        check_resources(config(dataset, **{"scaling.num_workers": [3, 8], "max_failures": 1}),
                        read_metadata(dataset), str(dataset))
    with pytest.raises(ValueError, match=r"\[2, 8\] may grow to 3 workers × 1 CPU, every CPU of the cluster's 3"):
        check_resources(elastic, read_metadata(dataset), str(dataset))  # Ray Train would take them all
    plan = make_plan(elastic, probe=False, have={"CPU": 3.0, "GPU": 0, "memory": 4e9})
    assert (plan.workers, plan.local_batch) == (2, 8)
