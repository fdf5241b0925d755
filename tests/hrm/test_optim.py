import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hrm.optim import AdamAtan2, SignSGD, lr_at
from hrm.sparse_embedding import PuzzleEmbedding


def test_adam_atan2_against_hand_computation():
    p0 = np.array([0.5, -1.0, 2.0])
    grads = [np.array([0.1, -0.2, 0.0]), np.array([-0.3, 0.4, 1e-8])]
    lr, wd, b1, b2, a, b = 0.01, 0.1, 0.9, 0.95, 1.27, 1.0
    p = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = AdamAtan2([p], lr=lr, betas=(b1, b2), weight_decay=wd)
    m = v = np.zeros(3)
    expected = p0.copy()
    for t, g in enumerate(grads, start=1):
        p.grad = torch.tensor(g)
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        expected = expected * (1 - lr * wd) - lr * a * np.arctan2(m_hat, b * np.sqrt(v_hat))
        np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-12)
    # atan2 bounds every update: |Δ| ≤ lr·a·π/2 even for a huge gradient
    p.grad = torch.tensor([1e30, -1e30, 0.0], dtype=torch.float64)
    before = p.detach().clone()
    opt.step()
    assert ((p.detach() - before * (1 - lr * wd)).abs() <= lr * a * math.pi / 2 + 1e-12).all()


class TorchFormat(torch.optim.Optimizer):
    """A torch.optim.Optimizer with AdamAtan2's settings and state keys: what checkpoints written while AdamAtan2
    subclassed it hold (torch's own state_dict and load_state_dict)."""

    def __init__(self, params):
        super().__init__(params, dict(lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, a=1.27, b=1.0))


def _two_params():
    return [torch.nn.Parameter(torch.tensor([0.5, -1.0])), torch.nn.Parameter(torch.tensor([[2.0], [3.0]]))]


def _grads(params, seed):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)


def test_adam_atan2_state_dict_is_torchs_format_both_ways(tmp_path):
    params = _two_params()
    opt = AdamAtan2(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    for seed in (1, 2):
        _grads(params, seed)
        opt.step()
    torch.save(opt.state_dict(), tmp_path / "optim.pt")
    saved = torch.load(tmp_path / "optim.pt", weights_only=True)

    # torch's loader takes it (it checks the groups' sizes), and its state_dict comes back equal
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    reference = TorchFormat(copies)
    reference.load_state_dict(saved)
    again = reference.state_dict()
    assert again["param_groups"] == saved["param_groups"] == [
        {"lr": 1e-3, "betas": (0.9, 0.95), "weight_decay": 0.1, "a": 1.27, "b": 1.0, "params": [0, 1]}]
    for i in (0, 1):
        assert again["state"][i]["step"] == saved["state"][i]["step"] == 2
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(again["state"][i][key], saved["state"][i][key], rtol=0, atol=0)

    # and a torch-written state resumes exactly: the next step matches the optimizer that never stopped
    resumed = AdamAtan2(copies, lr=5.0)  # the saved settings replace these
    resumed.load_state_dict(again)
    assert resumed.param_groups[0]["lr"] == 1e-3
    _grads(params, 3)
    _grads(copies, 3)
    opt.step()
    resumed.step()
    for p, q in zip(params, copies):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    with pytest.raises(ValueError, match="holds 2 parameters, this optimizer 1"):
        AdamAtan2(params[:1]).load_state_dict(saved)


def test_adam_atan2_zero_grad_and_bad_arguments():
    params = _two_params()
    opt = AdamAtan2(params)
    _grads(params, 1)
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in params)
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    with pytest.raises(ValueError, match="non-empty iterable of tensors"):
        AdamAtan2([])
    with pytest.raises(ValueError, match="invalid AdamAtan2 settings"):
        AdamAtan2(params, betas=(0.9, 1.0))


@pytest.mark.slow
def test_a_training_step_imports_no_dynamo():
    """Eager training never needs torch._dynamo (importing it costs ~1 s of CPU in every training process)."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from hrm.config import model_config\n"
            "from hrm.model import HRM\n"
            "from hrm.step import OptimConfig, build_optimizers, train_step\n"
            "m = HRM(model_config('debug', vocab_size=8, seq_len=8, forward_dtype='float32',"
            " num_puzzle_identifiers=3)).train()\n"
            "opt = build_optimizers(m, OptimConfig())\n"
            "batch = {'inputs': torch.randint(0, 8, (4, 8)), 'labels': torch.randint(0, 8, (4, 8)),"
            " 'puzzle_ids': torch.ones(4, dtype=torch.long)}\n"
            "train_step(m, m.initial_carry(batch), batch, opt, loss_scale=0.25, grad_clip=1.0)\n"
            "opt.load_state_dict(opt.state_dict())\n"
            "print('torch._dynamo' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "False"


def test_signsgd_updates_only_touched_rows_with_summed_duplicates():
    table = PuzzleEmbedding(5, 2).train()
    with torch.no_grad():
        table.weight.copy_(torch.arange(10, dtype=torch.float32).view(5, 2))
    before = table.weight.clone()
    rows = table(torch.tensor([1, 3, 1]), torch.float32)
    (rows * torch.tensor([[1.0, -1.0], [-2.0, 0.0], [-3.0, 2.0]])).sum().backward()
    SignSGD(table, lr=0.5, weight_decay=0.2).step()
    expected = before.clone()
    # row 1: grads (1,-1)+(-3,2) = (-2,1) -> sign (-1,1); row 3: (-2,0) -> sign (-1,0)
    expected[1] = before[1] * (1 - 0.1) - 0.5 * torch.tensor([-1.0, 1.0])
    expected[3] = before[3] * (1 - 0.1) - 0.5 * torch.tensor([-1.0, 0.0])
    torch.testing.assert_close(table.weight, expected)
    assert table.pending() == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    table = PuzzleEmbedding(6, 3).train()
    with torch.no_grad():
        table.weight.fill_(1.0)
    ids = [torch.tensor([0, 2]), torch.tensor([2, 4, 4])][rank]  # rank 1 has more rows than rank 0
    grads = [torch.tensor([[1.0, -1.0, 0.0], [-5.0, 1.0, 1.0]]),
             torch.tensor([[2.0, -2.0, 1.0], [1.0, 1.0, -1.0], [1.0, -2.0, 0.0]])][rank]
    (table(ids, torch.float32) * grads).sum().backward()
    SignSGD(table, lr=0.1, weight_decay=0.0).step()
    torch.save(table.weight, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_signsgd_all_gathers_rows_across_two_gloo_processes(tmp_path):
    mp.spawn(_rank_main, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    torch.testing.assert_close(w0, w1)  # replicas agree
    expected = torch.ones(6, 3)
    expected[0] -= 0.1 * torch.tensor([1.0, -1.0, 0.0])
    expected[2] -= 0.1 * torch.tensor([-1.0, -1.0, 1.0])  # (-5,1,1)+(2,-2,1) -> (-3,-1,2)
    expected[4] -= 0.1 * torch.tensor([1.0, -1.0, -1.0])  # (1,1,-1)+(1,-2,0) -> (2,-1,-1)
    torch.testing.assert_close(w0, expected)


@pytest.mark.parametrize("step, expected", [(0, 0.0), (50, 0.5), (100, 1.0), (550, 0.55), (1000, 0.1), (2000, 0.1)])
def test_warmup_cosine_schedule(step, expected):
    assert lr_at(step, 1.0, 100, 1000, min_ratio=0.1) == pytest.approx(expected)
