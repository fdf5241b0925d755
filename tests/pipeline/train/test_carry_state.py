"""The ACT carry in a checkpoint: a run restored from one goes on exactly as if never stopped — with the carry; with a
fresh one it does not (so the test can fail) — and any number of workers takes its rows of the saved global carry."""

import pytest
import torch

from hrm.config import model_config
from hrm.step import OptimConfig, build_optimizers, train_step
from pipeline.train import carry_state, checkpoint

G = 6


def model_and_opt():
    torch.manual_seed(0)
    config = model_config("debug", vocab_size=8, seq_len=8, forward_dtype="float32", num_puzzle_identifiers=7,
                          halt_max_steps=4, halt_exploration_prob=0.0)
    from hrm.model import HRM

    m = HRM(config).train()
    return m, build_optimizers(m, OptimConfig(lr=1e-2))


def batches(n):
    g = torch.Generator().manual_seed(1)
    return [{"inputs": torch.randint(1, 8, (G, 8), generator=g), "labels": torch.randint(1, 8, (G, 8), generator=g),
             "puzzle_ids": torch.randint(0, 7, (G,), generator=g)} for _ in range(n)]


def run(m, opt, data, carry=None):
    losses = []
    for b in data:
        carry = carry if carry is not None else m.initial_carry(b)
        carry, _, metrics = train_step(m, carry, b, opt, loss_scale=1 / G)
        losses.append(float(metrics["lm_loss"]))
    return carry, losses


@pytest.mark.parametrize("kept", [True, False])
def test_a_restored_run_goes_on_exactly_with_its_carry(tmp_path, kept):
    data = batches(6)
    m, opt = model_and_opt()
    _, straight = run(m, opt, data)

    m, opt = model_and_opt()
    carry, first = run(m, opt, data[:3])
    assert not bool(carry.halted.all())  # some rows are mid-reasoning at the checkpoint: the carry matters
    checkpoint.save(tmp_path, model=m, opt=opt, ema=None, position=checkpoint.Position(step=3),
                    rng_states=[checkpoint.rng_state()], export_info={"task": "sudoku"},
                    carry=carry_state.gather(carry, 1) if kept else None)
    m2, opt2 = model_and_opt()
    position, saved = checkpoint.restore(tmp_path, model=m2, opt=opt2, ema=None, rank=0)
    restored = carry_state.slice_for(saved, global_batch=G, shards=G, world=1, rank=0, device="cpu")
    _, rest = run(m2, opt2, data[3:], restored)
    if kept:
        assert first + rest == straight  # bit for bit
    else:
        assert restored is None and first + rest != straight


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_each_worker_takes_the_rows_of_its_shards(world):
    m, opt = model_and_opt()
    carry, _ = run(m, opt, batches(2))
    whole = carry_state.gather(carry, 1)
    parts = [carry_state.slice_for(whole, global_batch=G, shards=G, world=world, rank=r, device="cpu")
             for r in range(world)]
    assert [len(p.steps) for p in parts] == [(r + 1) * G // world - r * G // world for r in range(world)]
    assert torch.equal(torch.cat([p.z_h for p in parts]), carry.z_h)
    assert torch.equal(torch.cat([p.batch["inputs"] for p in parts]), carry.batch["inputs"])
    assert torch.equal(torch.cat([p.halted for p in parts]), carry.halted)


def test_a_carry_of_another_global_batch_is_dropped_saying_so(caplog):
    """A run resumed with another global_batch_size: its rows start afresh, a warning says why."""
    m, opt = model_and_opt()
    carry, _ = run(m, opt, batches(1))
    whole = carry_state.gather(carry, 1)
    assert carry_state.slice_for(whole, global_batch=12, shards=12, world=1, rank=0, device="cpu") is None
    assert "the checkpoint's ACT carry holds 6 rows, the global batch is now 12" in caplog.text
