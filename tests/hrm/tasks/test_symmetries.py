"""Task.symmetries / Symmetry / valid_answer: round trips, validity kept, identity first, determinism, errors."""

import numpy as np
import pytest

from hrm.tasks.arc import (
    CANVAS,
    COLOUR0,
    ArcTask,
    Transform,
    apply_transform,
    canvas_symmetry,
    crop,
    encode_pair,
)
from hrm.tasks.base import IDENTITY, Task
from hrm.tasks.maze import FREE, PATH, MazeTask, generate_many, is_valid_optimal
from hrm.tasks.sudoku import SudokuTask

SEEDS = [0, 1, 7]


def sudoku_data(box, count=6, seed=0):
    task = SudokuTask(box=box)
    p, s, _, _ = task.generate_many(seed, count)
    inputs, labels = zip(*(task.encode(x) for x in zip(p, s)))
    return task, np.stack(inputs), np.stack(labels)


def maze_data(size=10, count=6, seed=3):
    q, a = generate_many(seed, count, size, 12)
    return MazeTask(size, 12), q.reshape(count, -1), a.reshape(count, -1)


def arc_data(count=6, seed=0):
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        h, w = rng.integers(1, 12, 2)
        grid = rng.integers(0, 10, (h, w)).astype(np.uint8)
        pairs.append(encode_pair(grid, np.rot90(grid).copy()))  # a made-up rule; any pair will do
    inputs, labels = zip(*pairs)
    return ArcTask(), np.stack(inputs), np.stack(labels)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("make", [lambda: sudoku_data((2, 2)), lambda: sudoku_data((2, 3)),
                                  lambda: sudoku_data((3, 3)), maze_data, arc_data], ids=["4x4", "6x6", "9x9",
                                                                                          "maze", "arc"])
def test_round_trip_identity_first_and_determinism(make, seed):
    task, inputs, labels = make()
    count = 8
    syms = task.symmetries(count, np.random.default_rng(seed))
    assert len(syms) == count and syms[0] is IDENTITY
    assert len({s.name for s in syms}) == count  # distinct transforms
    assert [s.name for s in task.symmetries(count, np.random.default_rng(seed))] == [s.name for s in syms]
    for s in syms:
        for x in (inputs, labels):
            y = s.apply(x)
            assert y.dtype == np.uint8 and y.shape == x.shape
            assert np.array_equal(s.invert(y), x)
    assert any(not np.array_equal(s.apply(inputs), inputs) for s in syms[1:])


def test_draws_differ_between_seeds():
    task = SudokuTask(box=(3, 3))
    names = {tuple(s.name for s in task.symmetries(4, np.random.default_rng(seed))) for seed in SEEDS}
    assert len(names) == len(SEEDS)


@pytest.mark.parametrize("box", [(2, 2), (2, 3), (3, 3)])
@pytest.mark.parametrize("seed", SEEDS)
def test_sudoku_symmetries_keep_puzzles_valid(box, seed):
    task, inputs, labels = sudoku_data(box, seed=seed)
    for s in task.symmetries(12, np.random.default_rng(seed)):
        x, y = s.apply(inputs), s.apply(labels)
        assert ((x == 1).sum(1) == (inputs == 1).sum(1)).all()  # blanks stay blanks
        for xi, yi in zip(x, y):
            assert task.score(yi, yi, xi)["valid"]  # a valid solution that keeps the (moved) givens
            assert task.valid_answer(yi, xi)


def test_sudoku_transposes_only_square_boxes():
    def transposes(box):
        task = SudokuTask(box=box)
        return {" T1 " in s.name for s in task.symmetries(40, np.random.default_rng(0))}

    assert transposes((3, 3)) == {True, False} and transposes((2, 2)) == {True, False}
    assert transposes((2, 3)) == {False}


@pytest.mark.parametrize("seed", SEEDS)
def test_maze_symmetries_are_the_dihedral_group_and_keep_paths_valid(seed):
    task, inputs, labels = maze_data(seed=seed + 3)
    syms = task.symmetries(8, np.random.default_rng(seed))
    assert sorted(s.name for s in syms)[:3] == ["anti_transpose", "flip_lr", "flip_ud"]
    images = {s.apply(inputs[:1]).tobytes() for s in syms}
    assert len(images) == 8
    for s in syms:
        for q, a in zip(s.apply(inputs), s.apply(labels)):
            assert is_valid_optimal(a.reshape(10, 10), q.reshape(10, 10))


def test_maze_valid_answer_rejects_broken_paths():
    task, inputs, labels = maze_data()
    assert all(task.valid_answer(a, q) for q, a in zip(inputs, labels))
    broken = labels[0].copy()
    broken[np.flatnonzero(broken == PATH)[0]] = 3  # one path cell cleared: a gap
    assert not task.valid_answer(broken, inputs[0])
    assert not task.valid_answer(inputs[0], inputs[0])  # no path at all


def test_maze_valid_answer_takes_any_path_without_solving_the_maze():
    """A path with a detour still votes (valid_answer checks the answer, not that it is shortest); canonical form:
    the answer itself."""
    task, inputs, labels = maze_data()
    for q, a in zip(inputs, labels):
        free = np.flatnonzero(q == FREE)
        detour = next((a2 for a2 in (_with_path_cell(a, c) for c in free) if not is_valid_optimal(
            a2.reshape(10, 10), q.reshape(10, 10))), None)
        if detour is not None:
            assert task.valid_answer(detour, q) and not task.score(detour, a, q)["valid_optimal"]
            assert np.array_equal(task.canonical_answer(detour, q), detour)
            return
    pytest.fail("no maze with a free cell next to its path")


def _with_path_cell(answer, cell):
    out = answer.copy()
    out[cell] = PATH
    return out


def test_maze_has_eight_symmetries_at_most():
    with pytest.raises(ValueError, match="maze has 8 symmetries.*9 votes"):
        MazeTask(10, 12).symmetries(9, np.random.default_rng(0))


@pytest.mark.parametrize("seed", SEEDS)
def test_arc_symmetry_is_the_dataset_transform_on_the_canvas(seed):
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 10, (4, 7)).astype(np.uint8)
    x, y = encode_pair(grid, grid[::-1].copy())
    for k in range(8):
        t = Transform(k, (0, *(int(c) + 1 for c in rng.permutation(9))))
        s = canvas_symmetry(t)
        assert np.array_equal(crop(s.apply(x[None])[0]), apply_transform(grid, t))
        assert np.array_equal(crop(s.apply(y[None])[0]), apply_transform(grid[::-1], t))
        assert (s.apply(x[None])[0] == 0).sum() == (x == 0).sum()  # PAD outside the grid and its EOS border


def test_arc_symmetries_keep_colour_zero_and_shapes():
    task, inputs, labels = arc_data()
    for s in task.symmetries(10, np.random.default_rng(2)):
        for x in (inputs, labels):
            for before, after in zip(x, s.apply(x)):
                g, h = crop(before), crop(after)
                assert task.valid_answer(after, before)
                assert sorted(g.shape) == sorted(h.shape) and (g == 0).sum() == (h == 0).sum()
                assert sorted(np.bincount(g.ravel(), minlength=10)) == sorted(np.bincount(h.ravel(), minlength=10))


def test_arc_invert_of_a_malformed_answer_is_invalid():
    task, inputs, _ = arc_data()
    s = task.symmetries(2, np.random.default_rng(0))[1]
    junk = np.full((1, CANVAS * CANVAS), COLOUR0 + 3, np.uint8)
    junk[0, 0] = 0  # no colour at the origin
    back = s.invert(junk)
    assert not back.any() and not task.valid_answer(back[0], inputs[0])
    with pytest.raises(ValueError, match="row 0 holds no grid"):
        s.apply(junk)


def test_sudoku_valid_answer_checks_the_givens_not_the_rules():
    task, inputs, labels = sudoku_data((2, 3))
    assert task.valid_answer(labels[0], inputs[0])
    g = int(np.flatnonzero(inputs[0] >= 2)[0])
    wrong = labels[0].copy()
    wrong[g] = 2 + (wrong[g] - 1) % 6  # a given changed
    assert not task.valid_answer(wrong, inputs[0])
    blank = int(np.flatnonzero(inputs[0] == 1)[0])
    broken = labels[0].copy()
    broken[blank] = 2 + (broken[blank] - 1) % 6  # a blank filled with a digit its row already has: still votes
    assert not task.score(broken, labels[0], inputs[0])["valid"] and task.valid_answer(broken, inputs[0])
    holes = labels[0].copy()
    holes[blank] = 1  # a cell left blank
    assert not task.valid_answer(holes, inputs[0])


def test_tasks_without_symmetries_say_so():
    class Plain(SudokuTask):
        name = "plain"
        symmetries = Task.symmetries  # the default: none

    with pytest.raises(ValueError, match="plain has no symmetries to vote over"):
        Plain().symmetries(2, np.random.default_rng(0))
