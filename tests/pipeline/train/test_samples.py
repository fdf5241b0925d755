"""The picture of sample answers logged at every evaluation: wrong cells outlined, the verdict in each title, one row
per puzzle, for every task; answered by the model with each row's own puzzle id."""

import numpy as np
import pytest
import torch

from hrm.loss import IGNORE
from hrm.tasks import make_task
from hrm.tasks.arc import encode_pair
from hrm.tasks.maze import generate_many as mazes
from hrm.tasks.sudoku_solver import generate_many as sudokus
from pipeline.train.samples import picture, sample_image, verdict

RED = np.array([0xD6, 0x27, 0x28])  # pipeline.core.draw.CHANGED: the outline of a wrong cell


def rows(name: str):
    """(task, inputs (2, L), labels (2, L) with IGNORE where unscored) of two small puzzles."""
    if name == "sudoku":
        task = make_task("sudoku", {"box": [2, 3]})
        p, s, _, _ = sudokus(1, 2, (2, 3))
        pairs = [task.encode((a, b)) for a, b in zip(p, s)]
    elif name == "maze":
        task = make_task("maze", {"size": 10, "min_path": 12})
        q, a = mazes(2, 2, 10, 12)
        pairs = [(x.reshape(-1).astype(np.uint8), y.reshape(-1).astype(np.uint8)) for x, y in zip(q, a)]
    else:
        task = make_task("arc", {})
        grids = [np.arange(12).reshape(3, 4) % 10, np.eye(5, dtype=np.int64) * 3]
        pairs = [encode_pair(g, (g + 1) % 10) for g in grids]
    inputs = np.stack([x for x, _ in pairs]).astype(np.uint8)
    labels = np.stack([y for _, y in pairs]).astype(np.int64)
    return task, inputs, np.where(labels == 0, IGNORE, labels)


def red_pixels(pixels: np.ndarray) -> int:
    return int((np.abs(pixels.astype(int) - RED).sum(-1) < 30).sum())


@pytest.mark.parametrize("name", ["sudoku", "maze", "arc"])
def test_wrong_cells_are_outlined(name):
    task, inputs, labels = rows(name)
    right = np.where(labels == IGNORE, 0, labels).astype(np.uint8)
    wrong = right.copy()
    cells = np.flatnonzero(labels[0] != IGNORE)[:3]
    wrong[0, cells] = np.where(right[0, cells] == 2, 3, 2)  # three scored cells of the first puzzle changed
    good = picture(task, inputs, right, labels, np.array([0.9, 0.8]), "step 1")
    bad = picture(task, inputs, wrong, labels, np.array([0.9, 0.8]), "step 1")
    assert good.dtype == np.uint8 and good.ndim == 3 and good.shape[2] == 3 and good.shape == bad.shape
    assert red_pixels(bad) > red_pixels(good) + 20  # three outlined cells (a maze's goal is red in both)
    one = picture(task, inputs[:1], right[:1], labels[:1], np.array([0.9]), "step 1")
    assert good.shape[0] > 1.6 * one.shape[0] and good.shape[1] == one.shape[1]  # a row per puzzle


@pytest.mark.parametrize("wrong, valid, q, text", [
    (0, True, 0.873, "model: all right, valid (q 0.87)"),
    (3, False, 0.5, "model: 3 wrong, breaks the rules (q 0.50)"),
    (2, None, 0.25, "model: 2 wrong (q 0.25)"),  # ARC: the rules cannot tell
])
def test_verdict(wrong, valid, q, text):
    assert verdict(wrong, valid, q) == text


def test_sample_image_answers_with_each_rows_puzzle_id(monkeypatch):
    from hrm.config import model_config
    from hrm.model import HRM
    from pipeline.train import samples

    task, inputs, labels = rows("sudoku")
    torch.manual_seed(0)
    model = HRM(model_config("debug", vocab_size=task.vocab_size, seq_len=task.seq_len, num_puzzle_identifiers=3,
                             halt_max_steps=2, forward_dtype="float32"))
    model.puzzle_emb.weight.normal_()  # trained embeddings: each puzzle id answers differently (they start at 0)
    arrays = {"inputs": inputs, "labels": labels, "puzzle_ids": np.array([2, 1])}
    seen = {}
    real = samples.answer_rows

    def spy(*args):
        out = real(*args)
        seen["voted"] = out
        return out

    monkeypatch.setattr(samples, "answer_rows", spy)
    pixels = sample_image(model, task, arrays, 5, "step 4")
    voted = seen["voted"]
    assert len(voted.preds) == 2  # more asked for than there are: all there are
    assert np.array_equal(pixels, picture(task, inputs, voted.preds, labels, voted.confidence, "step 4"))
    from hrm.vote import answer

    for ids in ([2, 1], [0, 0]):
        alone = answer(model, task, inputs, puzzle_ids=np.array(ids), votes=1)
        same = np.array_equal(alone.preds, seen["voted"].preds) and np.allclose(alone.confidence,
                                                                                seen["voted"].confidence)
        assert same == (ids == [2, 1])  # the rows' own ids, not 0 (which answers differently)
    assert sample_image(model, task, arrays, 0, "step 4") is None
