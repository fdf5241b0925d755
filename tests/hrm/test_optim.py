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
