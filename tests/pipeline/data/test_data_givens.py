import pytest

from hrm.tasks.sudoku_solver import generate_many, solve
from pipeline.data.build_sudoku import top_up_givens
from pipeline.data.config import load_config


@pytest.mark.parametrize("box, givens", [((2, 3), 20), ((3, 3), 40)])
def test_top_up_reveals_solution_cells_until_the_count(box, givens):
    n = box[0] * box[1]
    p, s, _, _ = generate_many(5, 6, box, 0)
    p, s = p.reshape(6, -1), s.reshape(6, -1)
    easy = top_up_givens(p, s, givens, seed=1)
    assert ((easy != 0).sum(1) == givens).all()
    assert ((easy == 0) | (easy == s)).all()  # only solution digits are revealed
    assert ((p == 0) | (easy == p)).all()  # every original clue is kept
    for q, sol in zip(easy, s):
        found, count, _ = solve(q.reshape(n, n), box)
        assert count == 1 and (found.reshape(-1) == sol).all()
    assert (top_up_givens(p, s, givens, seed=1) == easy).all()
    assert top_up_givens(p, s, None, seed=1) is p


def test_givens_out_of_range_is_named():
    with pytest.raises(ValueError, match="sudoku.givens must be in 1..35"):
        load_config(None, task="sudoku", sudoku={"box": [2, 3], "givens": 36})


def test_demo_draws_a_fresh_puzzle_outside_the_dataset():
    from pipeline.core.config_io import CONFIGS
    from pipeline.demo.run import fresh_puzzle

    cfg = load_config(CONFIGS / "data-sudoku-demo.yaml")
    task, x, y = fresh_puzzle(cfg, set(), seed=5)
    assert (x >= 2).sum() == cfg.sudoku.givens and task.score(y, y, x)["valid"]
    _, x2, _ = fresh_puzzle(cfg, {x.tobytes()}, seed=5)  # the same seed, but that puzzle is "in the dataset"
    assert x2.tobytes() != x.tobytes()
