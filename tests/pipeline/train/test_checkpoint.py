"""Checkpoints: a real one round-trips through the safe loader; a crafted pickle is refused and runs nothing."""

import pickle

import pytest
import torch

from hrm.config import model_config
from hrm.ema import EMA
from hrm.model import HRM
from hrm.step import OptimConfig, build_optimizers, train_step
from pipeline.core import export
from pipeline.train import checkpoint


def trained(seed=0):
    torch.manual_seed(seed)
    m = HRM(model_config("debug", vocab_size=8, seq_len=8, forward_dtype="float32", num_puzzle_identifiers=3)).train()
    opt, ema = build_optimizers(m, OptimConfig()), EMA(m, 0.99)
    b = {"inputs": torch.randint(1, 8, (4, 8)), "labels": torch.randint(1, 8, (4, 8)),
         "puzzle_ids": torch.tensor([0, 1, 2, 1])}
    carry = m.initial_carry(b)
    for _ in range(2):
        carry, _, _ = train_step(m, carry, b, opt, loss_scale=0.25)
        ema.update(m)
    return m, opt, ema


def test_a_saved_checkpoint_restores_everything(tmp_path):
    m, opt, ema = trained()
    checkpoint.save(tmp_path, model=m, opt=opt, ema=ema, position=checkpoint.Position(step=2, epoch=1),
                    rng_states=[checkpoint.rng_state()], export_info={"task": "sudoku"})
    m2, opt2, ema2 = trained(seed=1)
    position, carry = checkpoint.restore(tmp_path, model=m2, opt=opt2, ema=ema2, rank=0)
    assert (position.step, position.epoch, carry) == (2, 1, None)
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert str(opt.state_dict()) == str(opt2.state_dict())
    assert torch.equal(ema.shadow.lm_head.weight, ema2.shadow.lm_head.weight)


class Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):  # unpickling this would write a file
        return (_touch, (self.path,))


def _touch(path):
    with open(path, "w") as f:
        f.write("owned")
    return {}


def test_a_crafted_state_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "owned.txt"
    with open(tmp_path / "state.pt", "wb") as f:
        pickle.dump({"model": Payload(str(marker))}, f, protocol=2)
    m, opt, ema = trained()
    with pytest.raises(ValueError, match=r"state\.pt: refused to load: it holds more than tensors"):
        checkpoint.restore(tmp_path, model=m, opt=opt, ema=ema, rank=0)
    assert not marker.exists()
    pickle.loads(pickle.dumps(Payload(str(marker))))  # the payload is real: a plain unpickle writes the file
    assert marker.read_text() == "owned"


def test_the_export_is_weights_and_config_only(tmp_path):
    m, opt, ema = trained()
    checkpoint.save(tmp_path / "ckpt", model=m, opt=opt, ema=ema, position=checkpoint.Position(step=2),
                    rng_states=[checkpoint.rng_state()], export_info={"task": "sudoku"})
    folder = export.copy_export(tmp_path / "ckpt", tmp_path / "export")
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.pt"]
    weights = torch.load(folder / "model.pt", weights_only=True)
    assert all(torch.equal(weights[k], v) for k, v in ema.shadow.state_dict().items())  # the EMA weights
    (tmp_path / "ckpt" / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="no model.pt"):
        export.copy_export(tmp_path / "ckpt", tmp_path / "again")
