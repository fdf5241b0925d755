import itertools

import numpy as np
import pytest

from hrm.tasks.sudoku import (
    SudokuTask,
    apply_transform,
    canonical,
    random_transform,
    read_csv,
    read_csv_arrays,
    valid_solutions,
)
from hrm.tasks.sudoku_solver import generate_many, is_minimal, rate_many, solve

BOXES = [(2, 2), (2, 3), (3, 3)]
# Largest rating each box reaches often enough for a fast test (4x4 puzzles never need a guess).
RATING = {(2, 2): 0, (2, 3): 1, (3, 3): 3}

WIKIPEDIA = (
    "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79",
    "534678912672195348198342567859761423426853791713924856961537284287419635345286179",
)
INKALA = (
    "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4..",
    "812753649943682175675491283154237896369845721287169534521974368438526917796318452",
)
# Solved by naked + hidden singles alone (28 failed guesses with naked singles only).
HIDDEN_SINGLES = "3.52.....7...4.58.........2..36........1.....14..7.8..2.97...6......8....64.9..1."
ESCARGOT = "1....7.9..3..2...8..96..5....53..9...1..8...26....4...3......1..4......7..7...3.."


def grid(s, n=9):
    return np.array([0 if c == "." else int(c) for c in s], dtype=np.int8).reshape(n, n)


def consistent(puzzle, solution):
    return bool(((puzzle == 0) | (puzzle == solution)).all())


@pytest.fixture(scope="module")
def generated():
    return {box: generate_many(7, 4, box, RATING[box], max_tries=5000) for box in BOXES}


# --------------------------------------------------------------------------- solver


@pytest.mark.parametrize("puzzle,expected", [WIKIPEDIA, INKALA, (ESCARGOT, None)])
def test_solver_known_puzzles(puzzle, expected):
    p = grid(puzzle)
    sol, count, fails = solve(p)
    assert count == 1
    assert valid_solutions(sol) and consistent(p, sol)
    if expected is not None:
        assert (sol == grid(expected)).all()
    if puzzle != WIKIPEDIA[0]:
        assert fails > 10  # the famous hard ones need real search


def test_solver_uses_hidden_singles():
    sol, count, fails = solve(grid(HIDDEN_SINGLES))
    assert (count, fails) == (1, 0) and valid_solutions(sol)


def test_solver_rating_invariant_under_digit_relabelling():
    p = grid(INKALA[0])
    perm = np.array([0, 3, 1, 2, 9, 8, 7, 4, 5, 6], dtype=np.int8)
    assert solve(perm[p])[2] == solve(p)[2]


@pytest.mark.parametrize("box", BOXES)
def test_solver_counts_two_solutions(box, generated):
    n = box[0] * box[1]
    assert solve(np.zeros((n, n), np.int8), box)[1] == 2
    puzzle = generated[box][0][0].copy()
    puzzle.flat[np.flatnonzero(puzzle)[0]] = 0  # a minimal puzzle minus a clue
    sol, count, _ = solve(puzzle, box)
    assert count == 2 and valid_solutions(sol, box) and consistent(puzzle, sol)


def test_solver_contradictions():
    p = grid(WIKIPEDIA[0])
    p[0, 2] = 5  # second 5 in row 0
    assert solve(p) == (None, 0, 0)
    # No duplicate givens, but cell (0, 8) must be 9 and column 8 already has a 9.
    q = np.zeros((9, 9), np.int8)
    q[0, :8] = [1, 2, 3, 4, 5, 6, 7, 8]
    q[5, 8] = 9
    sol, count, _ = solve(q)
    assert sol is None and count == 0


def test_solver_rejects_bad_grids():
    with pytest.raises(ValueError):
        solve(np.zeros(80, np.int8))
    with pytest.raises(ValueError):
        solve(np.full(16, 5, np.int8), (2, 2))


# --------------------------------------------------------------------------- generator


@pytest.mark.parametrize("box", BOXES)
def test_generated_puzzles_unique_minimal_rated(box, generated):
    puzzles, solutions, ratings, tries = generated[box]
    assert len(puzzles) == 4 and tries >= 4
    for p, s, r in zip(puzzles, solutions, ratings):
        sol, count, fails = solve(p, box)
        assert count == 1 and (sol == s).all() and valid_solutions(s, box) and consistent(p, s)
        assert fails == r >= RATING[box]
        assert is_minimal(p, box)
        for c in np.flatnonzero(p):  # every clue is needed
            q = p.copy()
            q.flat[c] = 0
            assert solve(q, box)[1] == 2


def test_is_minimal_detects_redundant_clue():
    p, s, _, _ = generate_many(3, 1)
    q = p[0].copy()
    q.flat[np.flatnonzero(q == 0)[0]] = s[0].flat[np.flatnonzero(q == 0)[0]]
    assert is_minimal(p[0]) and not is_minimal(q)


@pytest.mark.parametrize("box", BOXES)
def test_generation_deterministic_per_seed(box):
    a, b, c = (generate_many(seed, 3, box, RATING[box], max_tries=5000) for seed in (11, 11, 12))
    assert len(a[0]) == 3
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_task_generate_and_rejection():
    task = SudokuTask((2, 3))
    a, b = task.generate(np.random.default_rng(5)), task.generate(np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert solve(a[0], (2, 3))[1] == 1
    hard = SudokuTask((2, 2), min_rating=5)  # 4x4 puzzles never need a guess
    assert all(hard.generate(np.random.default_rng(i)) is None for i in range(5))
    assert rate_many(a[0][None], (2, 3))[0][0] == 1


# --------------------------------------------------------------------------- symmetries


@pytest.mark.parametrize("box", BOXES)
def test_augment_keeps_validity_and_canonical(box, generated):
    task = SudokuTask(box)
    rng = np.random.default_rng(0)
    p, s = generated[box][0][0], generated[box][1][0]
    key = canonical(p, box)
    changed = 0
    for _ in range(20):
        ap, a_s = task.augment((p, s), rng)
        assert ap.dtype == np.int8 and ap.shape == p.shape
        assert valid_solutions(a_s, box) and consistent(ap, a_s)
        assert (ap != 0).sum() == (p != 0).sum()
        assert solve(ap, box)[1] == 1
        assert canonical(ap, box) == key
        changed += not np.array_equal(ap, p)
    assert changed >= 15


def test_transpose_only_for_square_boxes():
    rng = np.random.default_rng(1)
    assert not any(random_transform((2, 3), rng)[2] for _ in range(50))
    assert any(random_transform((3, 3), rng)[2] for _ in range(50))


@pytest.mark.parametrize("box", [(2, 3), (3, 3)])  # random 4x4 puzzles are often equivalent
def test_canonical_separates_different_puzzles(box):
    puzzles = generate_many(21, 12, box)[0]
    keys = {canonical(p, box) for p in puzzles}
    assert len(keys) == len({p.tobytes() for p in puzzles})
    assert len(keys) >= 10


def _brute_canonical(p, box):
    br, bc = box
    n = br * bc

    def perms(groups, size):
        for gp in itertools.permutations(range(groups)):
            for inner in itertools.product(list(itertools.permutations(range(size))), repeat=groups):
                yield [gp[g] * size + inner[g][i] for g in range(groups) for i in range(size)]

    best = None
    for t in ([False, True] if br == bc else [False]):
        g = p.T if t else p
        for rows in perms(n // br, br):
            for cols in perms(n // bc, bc):
                h = g[rows][:, cols].ravel()
                relabel, out = {}, []
                for d in h:
                    out.append(0 if d == 0 else relabel.setdefault(int(d), len(relabel) + 1))
                best = out if best is None or out < best else best
    return bytes(np.array(best, np.int8).tobytes())


@pytest.mark.parametrize("box", [(2, 2), (2, 3)])
def test_canonical_matches_brute_force(box):
    puzzles, solutions, _, _ = generate_many(4, 6, box)
    for g in list(puzzles) + list(solutions[:2]):
        assert canonical(g, box) == _brute_canonical(g, box)


def test_canonical_9x9_nonequivalent_close_puzzles():
    p = grid(WIKIPEDIA[0])
    q = p.copy()
    q[0, 0], q[0, 1] = 3, 5  # swap two clues: same clue pattern, different puzzle
    tf = random_transform((3, 3), np.random.default_rng(3))
    assert canonical(apply_transform(p, tf)) == canonical(p) != canonical(q)


# --------------------------------------------------------------------------- CSV import


def _rows(n_rows=6, seed=2):
    p, s, r, _ = generate_many(seed, n_rows)
    rows = []
    for i in range(n_rows):
        q = "".join("." if v == 0 else str(v) for v in p[i].ravel())
        rows.append(["gen", q, "".join(map(str, s[i].ravel())), str(i)])
    return rows, p, s


def _write(path, rows):
    path.write_text("source,question,answer,rating\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def test_read_csv_good_file(tmp_path):
    rows, p, s = _rows()
    path = _write(tmp_path / "good.csv", rows)
    instances, skipped = read_csv(path)
    assert skipped == 0 and len(instances) == 6
    assert all(np.array_equal(a, p[i]) and np.array_equal(b, s[i]) for i, (a, b) in enumerate(instances))
    q, a, r, lines, _ = read_csv_arrays(path, min_rating=3, check_unique=True)
    assert r.tolist() == [3, 4, 5] and lines.tolist() == [5, 6, 7] and np.array_equal(q, p[3:])


def test_read_csv_subsample_reproducible(tmp_path):
    rows, _, _ = _rows(12)
    path = _write(tmp_path / "big.csv", rows)
    kw = dict(subsample=5, seed=3, chunk_rows=4)
    a, b = read_csv_arrays(path, **kw), read_csv_arrays(path, **kw)
    assert np.array_equal(a[3], b[3]) and len(a[3]) == 5 and np.all(np.diff(a[3]) > 0)
    picks = {tuple(read_csv_arrays(path, subsample=5, seed=k)[3]) for k in range(6)}
    assert len(picks) > 1
    assert len(read_csv_arrays(path, subsample=50)[3]) == 12


def _corrupt(kind, row):
    q, a = row[1], row[2]
    if kind == "length":
        row[1] = q[:-1]
    elif kind == "char":
        row[1] = "x" + q[1:]
    elif kind == "inconsistent":
        i = next(i for i, c in enumerate(q) if c != ".")
        row[1] = q[:i] + str(int(q[i]) % 9 + 1) + q[i + 1:]
    elif kind == "invalid_answer":
        row[2] = a[1] + a[0] + a[2:]
        row[1] = "." * 81
    elif kind == "fields":
        del row[3]
    elif kind == "rating":
        row[3] = "hard"
    elif kind == "rating_inf":
        row[3] = "inf"
    elif kind == "rating_nan":
        row[3] = "nan"
    elif kind == "huge_field":
        row[0] = "x" * 200_000
    elif kind == "open_quote":  # the csv module would read on into the next row as one field
        row[0] = '"gen'
    elif kind == "nonunique":
        i = next(i for i, c in enumerate(q) if c != ".")
        row[1] = q[:i] + "." + q[i + 1:]


@pytest.mark.parametrize("kind", ["length", "char", "inconsistent", "invalid_answer", "fields", "rating", "rating_inf",
                                  "rating_nan", "huge_field", "open_quote", "nonunique"])
def test_read_csv_bad_rows(tmp_path, kind):
    rows, _, _ = _rows()
    _corrupt(kind, rows[3])  # data row 4 = line 5
    path = _write(tmp_path / "broken_file.csv", rows)
    with pytest.raises(ValueError, match=r"broken_file\.csv, line 5:"):
        read_csv(path, check_unique=True)
    instances, skipped = read_csv(path, skip_invalid=True, check_unique=True)
    assert skipped == 1 and len(instances) == 5  # the next row (line 6) is read whole
    q, _, _, lines, _ = read_csv_arrays(path, skip_invalid=True, check_unique=True)
    assert lines.tolist() == [2, 3, 4, 6, 7]
    if kind == "nonunique":
        assert read_csv(path)[1] == 0  # the uniqueness check is opt-in


def test_read_csv_bad_header(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("a,b,c,d\n")
    with pytest.raises(ValueError, match="h.csv, line 1"):
        read_csv(path)


# --------------------------------------------------------------------------- tokens, text, scoring


@pytest.mark.parametrize("box", BOXES)
def test_encode_decode_render_parse(box, generated):
    task = SudokuTask(box)
    n = box[0] * box[1]
    assert (task.vocab_size, task.seq_len) == (n + 2, n * n)
    p, s = generated[box][0][0], generated[box][1][0]
    inputs, labels = task.encode((p, s))
    assert inputs.dtype == labels.dtype == np.uint8 and inputs.shape == (n * n,)
    assert ((inputs == 1) == (p.ravel() == 0)).all() and labels.min() == 2 and labels.max() == n + 1
    assert np.array_equal(task.decode(inputs), p) and np.array_equal(task.decode(labels), s)
    text = task.render(inputs)
    assert len(text.splitlines()) == n + n // box[0] - 1 and "|" in text and "." in text
    assert np.array_equal(task.parse(text), inputs)
    flat = "".join("0" if v == 0 else str(v) for v in p.ravel())
    assert np.array_equal(task.parse(flat), inputs)


def test_render_9x9_layout():
    task = SudokuTask()
    lines = task.render(task.encode((grid(WIKIPEDIA[0]), grid(WIKIPEDIA[1])))[0]).splitlines()
    assert lines[0] == "5 3 . | . 7 . | . . ."
    assert lines[3] == "------+-------+------"


@pytest.mark.parametrize(
    "text,msg",
    [
        ("1" * 80, "expected 81 cells"),
        ("x" + "." * 80, "unknown character"),
        ("55" + "." * 79, "digit 5 appears twice in row 1"),
        ("5" + "." * 8 + "5" + "." * 71, "twice in column 1"),
        ("5" + "." * 9 + "5" + "." * 70, "twice in box 1"),
    ],
)
def test_parse_errors(text, msg):
    with pytest.raises(ValueError, match=msg):
        SudokuTask().parse(text)


def test_parse_rejects_digit_out_of_range():
    with pytest.raises(ValueError, match="unknown character"):
        SudokuTask((2, 2)).parse("5" + "." * 15)


def test_score(generated):
    task = SudokuTask()
    p, s = generated[(3, 3)][0][0], generated[(3, 3)][1][0]
    inputs, labels = task.encode((p, s))
    assert task.score(labels, labels, inputs) == {"exact": True, "valid": True}
    wrong = labels.copy()
    wrong[np.flatnonzero(inputs == 1)[0]] = labels[np.flatnonzero(inputs == 1)[1]]
    assert task.score(wrong, labels, inputs) == {"exact": False, "valid": False}
    relabelled = task.encode((p, np.roll(np.arange(1, 10), 1)[s - 1]))[1]  # valid grid, breaks givens
    assert task.score(relabelled, labels, inputs) == {"exact": False, "valid": False}
    # A puzzle with two solutions: the other one is valid but not exact.
    q = p.copy()
    q.flat[np.flatnonzero(q)[0]] = 0
    c = np.flatnonzero(p)[0]
    other = next(sol for d in range(1, 10) if d != p.flat[c]
                 for sol in [solve(np.where(np.arange(81).reshape(9, 9) == c, d, q))[0]] if sol is not None)
    qi, ql = task.encode((q, s))
    assert task.score(task.encode((q, other))[1], ql, qi) == {"exact": False, "valid": True}
    assert task.score(np.zeros(81, np.uint8), ql, qi) == {"exact": False, "valid": False}
