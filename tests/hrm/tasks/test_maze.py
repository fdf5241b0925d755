from collections import Counter, deque

import numpy as np
import pytest

from hrm.tasks.grids import DIHEDRAL_INVERSE, N_DIHEDRAL, dihedral, inverse_dihedral
from hrm.tasks.maze import (
    FREE,
    GOAL,
    PATH,
    START,
    WALL,
    Maze,
    MazeTask,
    default_min_path,
    generate_many,
    is_valid_optimal,
    read_csv,
    solve,
)

SIZE, MIN_PATH = 10, 12


def ref_distance(grid: np.ndarray) -> int | None:
    """Independent plain BFS: steps from S to G through non-wall cells."""
    (s,), (g,) = (list(zip(*np.nonzero(grid == t))) for t in (START, GOAL))
    dist = {s: 0}
    todo = deque([s])
    while todo:
        r, c = todo.popleft()
        for nb in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nb[0] < grid.shape[0] and 0 <= nb[1] < grid.shape[1] and grid[nb] != WALL and nb not in dist:
                dist[nb] = dist[(r, c)] + 1
                todo.append(nb)
    return dist.get(g)


def ref_is_simple_path(answer: np.ndarray) -> bool:
    """Walk from S along o cells to G, never revisiting, using every o cell."""
    on = {tuple(p) for p in np.argwhere(np.isin(answer, (PATH, GOAL)))}
    (cur,) = [tuple(p) for p in np.argwhere(answer == START)]
    seen = set()
    while answer[cur] != GOAL:
        nxt = [
            p
            for p in ((cur[0] + 1, cur[1]), (cur[0] - 1, cur[1]), (cur[0], cur[1] + 1), (cur[0], cur[1] - 1))
            if p in on and p not in seen
        ]
        if len(nxt) != 1:
            return False
        seen.add(nxt[0])
        cur = nxt[0]
    return len(seen) == len(on)


@pytest.fixture(scope="module")
def mazes():
    return generate_many(3, 30, SIZE, MIN_PATH)


def test_labels_are_shortest_paths(mazes):
    questions, answers = mazes
    assert len(questions) == 30
    for q, a in zip(questions, answers):
        assert set(np.unique(q)) <= {WALL, FREE, START, GOAL}
        assert np.array_equal(a[a != PATH], q[a != PATH]) and (q[a == PATH] == FREE).all()
        assert ref_is_simple_path(a)
        assert int((a == PATH).sum()) + 1 == ref_distance(q)
        assert np.array_equal(solve(q), a)  # label == canonical solver output


def test_generator_respects_density_and_min_path(mazes):
    questions, _ = mazes
    walls = (questions == WALL).reshape(len(questions), -1).sum(1)
    assert walls.min() >= 30 and walls.max() <= 50 and len(set(walls)) > 3
    assert min(ref_distance(q) for q in questions) > MIN_PATH
    assert default_min_path(30) == 110 and 30 < default_min_path(10) < 37


def test_generation_is_deterministic():
    a = generate_many(11, 5, SIZE, MIN_PATH)
    b = generate_many(11, 5, SIZE, MIN_PATH)
    c = generate_many(12, 5, SIZE, MIN_PATH)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    task = MazeTask(SIZE, MIN_PATH)
    m1, m2 = task.generate(np.random.default_rng(5)), task.generate(np.random.default_rng(5))
    assert np.array_equal(m1.question, m2.question) and np.array_equal(m1.answer, m2.answer)


def test_generate_gives_up_within_budget():
    assert MazeTask(SIZE, min_path=60, max_trials=50).generate(np.random.default_rng(0)) is None
    with pytest.raises(ValueError, match="impossible"):
        generate_many(0, 1, SIZE, min_path=99)


@pytest.mark.slow
def test_sampler_matches_plain_rejection():
    """Exact rejection of uniform (walls, S, G) vs the fast sampler: path length / wall count / start histograms."""
    size, t, count = 6, 7, 3000
    n = size * size
    rng = np.random.default_rng(0)
    ref = {"len": Counter(), "walls": Counter(), "start": Counter()}
    while sum(ref["len"].values()) < count:
        k = int(rng.integers(11, 19))
        g = np.full(n, FREE, np.uint8)
        g[rng.choice(n, k, replace=False)] = WALL
        s, e = rng.choice(np.flatnonzero(g == FREE), 2, replace=False)
        g[s], g[e] = START, GOAL
        d = ref_distance(g.reshape(size, size))
        if d is not None and d > t:
            ref["len"][d] += 1
            ref["walls"][k] += 1
            ref["start"][int(s)] += 1
    q, a = generate_many(1, count, size, t)
    fast = {
        "len": Counter(int((x == PATH).sum()) + 1 for x in a),
        "walls": Counter(int((x == WALL).sum()) for x in q),
        "start": Counter(int(np.flatnonzero(x.ravel() == START)[0]) for x in q),
    }
    for key in ref:
        keys = sorted(set(ref[key]) | set(fast[key]))
        x = np.array([ref[key][k] for k in keys], float)
        y = np.array([fast[key][k] for k in keys], float)
        keep = x + y >= 20
        chi2, dof = float(((x - y)[keep] ** 2 / (x + y)[keep]).sum()), int(keep.sum()) - 1
        assert chi2 < dof + 6 * np.sqrt(2 * dof), (key, chi2, dof)


# ------------------------------------------------------------------------------------------- valid-optimal scoring
OPEN = "\n".join(["S    ", " ### ", "   # ", " #  G", "     "])
LABEL = ["S    ", "o### ", "ooo# ", " #ooG", "     "]  # BFS order up, down, left, right prefers going down


def grid(rows: list[str]) -> np.ndarray:
    return np.array([["?# SGo".index(ch) for ch in row] for row in rows], np.uint8)


@pytest.mark.parametrize(
    ("rows", "exact", "valid"),
    [
        (LABEL, True, True),
        (["Soooo", " ###o", "   #o", " #  G", "     "], False, True),  # another shortest path
        (["S    ", "o### ", "o  # ", "o#  G", "ooooo"], False, False),  # a longer path
        (["S    ", "o### ", "o o# ", " #ooG", "     "], False, False),  # a gap
        (["S    ", "o### ", "o o# ", " #ooG", "    o"], False, False),  # a gap, the o moved off the path
        (["S    ", "o### ", "oo # ", " oooG", "     "], False, False),  # as short, but through a wall
        (["S    ", "o### ", "ooo# ", " #ooS", "     "], False, False),  # G overwritten
        (["S    ", "o### ", "ooo# ", " #ooG", "  ?  "], False, False),  # PAD token
    ],
)
def test_score_exact_and_valid_optimal(rows, exact, valid):
    task = MazeTask(size=5)
    inputs = task.parse(OPEN)
    _, labels = task.encode(Maze(inputs.reshape(5, 5), solve(inputs.reshape(5, 5))))
    assert np.array_equal(labels, grid(LABEL).ravel())
    assert task.score(grid(rows).ravel(), labels, inputs) == {"exact": exact, "valid_optimal": valid}


def test_valid_optimal_rejects_path_through_wall():
    q = grid(["S#  ", " #  ", " # G", "    "])
    detour = grid(["S#  ", "o#  ", "o#oG", "ooo "])
    through = grid(["So  ", " #  ", " #oG", "    "])  # short, but changes a wall
    assert is_valid_optimal(detour, q) and not is_valid_optimal(through, q)


# ------------------------------------------------------------------------------------------------- augmentation
@pytest.mark.parametrize("k", range(N_DIHEDRAL))
def test_dihedral_inverse_is_identity(k):
    g = np.arange(12).reshape(3, 4)
    assert np.array_equal(inverse_dihedral(dihedral(g, k), k), g)
    assert np.array_equal(dihedral(dihedral(g, k), DIHEDRAL_INVERSE[k]), g)
    if k:
        assert not np.array_equal(dihedral(np.arange(16).reshape(4, 4), k), np.arange(16).reshape(4, 4))


@pytest.mark.parametrize("k", range(N_DIHEDRAL))
def test_maze_transform_keeps_optimal_labels(k, mazes):
    maze = Maze(mazes[0][0], mazes[1][0])
    t = MazeTask.transform(maze, k)
    assert is_valid_optimal(t.answer, t.question) and np.array_equal(solve(t.question), t.answer)
    assert np.array_equal(MazeTask.inverse_transform(t, k).question, maze.question)


def test_augment_is_a_dihedral_image(mazes):
    maze = Maze(mazes[0][1], mazes[1][1])
    task, rng, seen = MazeTask(SIZE), np.random.default_rng(0), set()
    for _ in range(40):
        out = task.augment(maze, rng)
        ks = [k for k in range(N_DIHEDRAL) if np.array_equal(out.question, dihedral(maze.question, k))]
        assert ks, "not a dihedral image of the maze"
        # the label is the solver's own shortest path of the new maze (ties broken as for any other maze)
        assert is_valid_optimal(out.answer, out.question) and np.array_equal(out.answer, solve(out.question))
        seen.add(out.question.tobytes())
    assert len(seen) >= 5  # not the identity every time


# ------------------------------------------------------------------------------------------------- CSV, text I/O
def write_csv(path, rows):
    path.write_text("source,question,answer,rating\n" + "".join(f'x,"{q}","{a}",0\n' for q, a in rows))


def as_text(g: np.ndarray) -> str:
    return "".join("?# SGo"[v] for v in g.ravel())


def test_read_csv_valid_rows_and_subsample(tmp_path, mazes):
    rows = [(as_text(q), as_text(a)) for q, a in zip(*mazes)]
    write_csv(tmp_path / "m.csv", rows)
    got, skipped = read_csv(tmp_path / "m.csv", size=SIZE)
    assert skipped == 0 and len(got) == 30 and np.array_equal(got[4].answer, mazes[1][4])
    sub, _ = read_csv(tmp_path / "m.csv", size=SIZE, subsample=7, seed=1)
    assert len(sub) == 7 and len({as_text(m.question) for m in sub}) == 7


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda q, a: (q[:-1], a), "expected 100 characters"),
        (lambda q, a: ("x" + q[1:], a), "unknown characters"),
        (lambda q, a: (q.replace("S", " "), a.replace("S", " ")), "exactly one S"),
        (lambda q, a: (q, a.replace("o", " ", 1)), "not a shortest"),
    ],
)
def test_read_csv_errors_name_file_and_line(tmp_path, mazes, mutate, message):
    rows = [(as_text(q), as_text(a)) for q, a in zip(*mazes)][:5]
    rows[3] = mutate(*rows[3])
    write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(ValueError, match=rf"bad\.csv, line 5.*{message}"):  # the header is line 1
        read_csv(tmp_path / "bad.csv", size=SIZE)
    got, skipped = read_csv(tmp_path / "bad.csv", size=SIZE, skip_invalid=True)
    assert (len(got), skipped) == (4, 1)


def test_render_parse_round_trip(mazes):
    task = MazeTask(SIZE)
    inputs, labels = task.encode(Maze(mazes[0][2], mazes[1][2]))
    assert np.array_equal(task.parse(task.render(inputs)), inputs)
    assert np.array_equal(task.parse(task.render(labels)), inputs)  # o read as free
    assert task.render(labels).count("o") == int((labels == PATH).sum())
    assert "".join(task.decode(labels).ravel()) == as_text(labels)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("S  \n  G", "expected 3 rows"),
        ("S  \n x \n  G", "row 2: unknown"),
        ("S   \n   \n  G", "row 1 has 4"),
        ("S S\n   \n  G", "exactly one S"),
        ("S #\n ##\n# G", "no path"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(ValueError, match=message):
        MazeTask(size=3).parse(text)
