"""Sudoku task: n x n grids with ``br x bc`` boxes (2x2, 2x3, 3x3), tokens as in the HRM paper.

Tokens: PAD 0, blank 1, digit ``d`` -> ``d + 1`` (9x9: vocab 11, seq_len 81). An instance is
``(puzzle, solution)``: two ``int8`` ``(n, n)`` grids, 0 = blank, digits ``1..n``.

Ratings (``min_rating``) count failed guesses of our own solver (``hrm.tasks.sudoku_solver``);
they are comparable in spirit only to the tdoku ratings of the published Sudoku-Extreme CSVs.
"""

from __future__ import annotations

import logging
import re

import numpy as np

from hrm.tasks.base import IDENTITY, PAD, Symmetry, Task, draw_distinct
from hrm.tasks.csv_rows import csv_header, csv_records
from hrm.tasks.sudoku_solver import box_tables, canonical_grid, generate_many, rate_many

log = logging.getLogger(__name__)

CHARS = "123456789"
CSV_HEADER = ["source", "question", "answer", "rating"]
RATING_MAX = 2**31 - 1  # ratings are stored as int32
_STRIP = re.compile(r"[\s|+\-]")


# --------------------------------------------------------------------------- grid helpers


def _grid(a, n: int) -> np.ndarray:
    g = np.asarray(a)
    if g.size != n * n:
        raise ValueError(f"expected {n * n} cells, got {g.size}")
    return g.reshape(n, n).astype(np.int8)


def _units(g: np.ndarray, box) -> np.ndarray:
    """All rows, columns and boxes of grids ``(..., n, n)`` as ``(..., 3n, n)``."""
    br, bc = box
    n = br * bc
    boxes = g.reshape(*g.shape[:-2], n // br, br, n // bc, bc).swapaxes(-3, -2).reshape(*g.shape[:-2], n, n)
    return np.concatenate([g, g.swapaxes(-1, -2), boxes], axis=-2)


def valid_solutions(grids: np.ndarray, box=(3, 3)) -> np.ndarray:
    """Bool per grid ``(..., n, n)``: full and every row/column/box holds ``1..n`` once."""
    n = box[0] * box[1]
    g = np.asarray(grids).astype(np.int64)
    full = ((1 << (n + 1)) - 1) & ~1
    bits = np.left_shift(np.int64(1), np.clip(g, 0, n + 1))
    in_range = ((g >= 1) & (g <= n)).all(axis=(-1, -2))
    return in_range & (np.bitwise_or.reduce(_units(bits, box), axis=-1) == full).all(axis=-1)


def duplicate_givens(puzzle: np.ndarray, box=(3, 3)) -> str | None:
    """Describe the first digit given twice in a row/column/box, or None."""
    n = box[0] * box[1]
    names = ["row"] * n + ["column"] * n + ["box"] * n
    for u, unit in enumerate(_units(np.asarray(puzzle).reshape(n, n), box)):
        d = unit[unit > 0]
        if len(np.unique(d)) != len(d):
            dup = int(next(x for x in d if (d == x).sum() > 1))
            return f"digit {dup} appears twice in {names[u]} {u % n + 1}"
    return None


# --------------------------------------------------------------------------- symmetries


def random_transform(box, rng: np.random.Generator):
    """A random symmetry: ``(rows (n,), cols (n,), transpose, digit_map (n+1,))``."""
    br, bc = box
    n = br * bc

    def perm(group: int, size: int) -> np.ndarray:
        return np.concatenate([g * size + rng.permutation(size) for g in rng.permutation(group)])

    rows, cols = perm(n // br, br), perm(n // bc, bc)
    transpose = bool(br == bc and rng.integers(2))
    digit_map = np.concatenate([[0], rng.permutation(n) + 1]).astype(np.int8)
    return rows, cols, transpose, digit_map


def apply_transform(grid: np.ndarray, transform) -> np.ndarray:
    """``grid`` under a ``random_transform``: transposed (if so), rows and columns permuted, digits mapped."""
    rows, cols, transpose, digit_map = transform
    g = np.asarray(grid).T if transpose else np.asarray(grid)
    return digit_map[g[rows][:, cols]]


def _token_luts(digit_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token maps (256,) of a digit map: digit ``d`` (token ``d + 1``) -> ``digit_map[d] + 1``, and back; PAD,
    blank and tokens past the vocabulary unchanged."""
    n = len(digit_map) - 1
    lut = np.arange(256, dtype=np.uint8)
    lut[2:n + 2] = np.asarray(digit_map[1:], np.int64) + 1
    back = np.arange(256, dtype=np.uint8)
    back[lut[2:n + 2]] = np.arange(2, n + 2)
    return lut, back


def token_symmetry(transform, n: int) -> Symmetry:
    """A ``random_transform`` as a ``Symmetry`` on token arrays ``(B, n*n)`` (as ``apply_transform`` on grids)."""
    rows, cols, transpose, digit_map = transform
    lut, back = _token_luts(digit_map)
    rows_back, cols_back = np.argsort(rows), np.argsort(cols)

    def apply(tokens: np.ndarray) -> np.ndarray:
        g = np.asarray(tokens, np.uint8).reshape(-1, n, n)  # (B, n, n)
        g = g.swapaxes(1, 2) if transpose else g
        return lut[g[:, rows][:, :, cols]].reshape(len(g), n * n)

    def invert(tokens: np.ndarray) -> np.ndarray:
        g = back[np.asarray(tokens, np.uint8).reshape(-1, n, n)][:, rows_back][:, :, cols_back]  # (B, n, n)
        g = g.swapaxes(1, 2) if transpose else g
        return np.ascontiguousarray(g).reshape(len(g), n * n)

    return Symmetry(f"rows{rows.tolist()} cols{cols.tolist()} T{int(transpose)} digits{digit_map[1:].tolist()}",
                    apply, invert)


def _transform_key(transform) -> bytes:
    rows, cols, transpose, digit_map = transform
    return rows.tobytes() + cols.tobytes() + bytes([transpose]) + np.asarray(digit_map).tobytes()


def canonical(puzzle, box=(3, 3)) -> bytes:
    """Exact canonical key of ``puzzle`` under digit, band/row, stack/column and transpose symmetries."""
    return canonical_grid(puzzle, tuple(box)).tobytes()


# --------------------------------------------------------------------------- the task


class SudokuTask(Task):
    """Sudoku with boxes of ``box = (rows, cols)``; ``generate`` keeps puzzles rated >= ``min_rating``."""

    name = "sudoku"

    def __init__(self, box=(3, 3), min_rating: int = 0):
        self.box = (int(box[0]), int(box[1]))
        self.n = box_tables(self.box)[0]
        self.vocab_size = self.n + 2
        self.seq_len = self.n * self.n
        self.min_rating = int(min_rating)

    def encode(self, instance):
        puzzle, solution = (_grid(x, self.n) for x in instance)
        if solution.min() < 1 or solution.max() > self.n or puzzle.min() < 0 or puzzle.max() > self.n:
            raise ValueError(f"solution must hold digits 1..{self.n} and puzzle 0..{self.n}")
        inputs = np.where(puzzle == 0, 1, puzzle + 1).astype(np.uint8).reshape(-1)
        return inputs, (solution + 1).astype(np.uint8).reshape(-1)

    def decode(self, tokens):
        t = np.asarray(tokens).astype(np.int64).reshape(-1)
        if t.size != self.seq_len or t.min() < 0 or t.max() >= self.vocab_size:
            raise ValueError(f"expected {self.seq_len} tokens in 0..{self.vocab_size - 1}")
        return np.where(t >= 2, t - 1, 0).astype(np.int8).reshape(self.n, self.n)

    def generate(self, rng):
        seed = int(rng.integers(2**63))
        p, s, _, _ = generate_many(seed, 1, self.box, self.min_rating, max_tries=1)
        return (p[0], s[0]) if len(p) else None

    def generate_many(self, seed: int, count: int, max_tries: int | None = None):
        """Batched, deterministic generation: ``(puzzles, solutions, ratings, tries)``."""
        return generate_many(seed, count, self.box, self.min_rating, max_tries)

    def augment(self, instance, rng):
        tf = random_transform(self.box, rng)
        return tuple(apply_transform(_grid(x, self.n), tf) for x in instance)

    def score(self, pred, labels, inputs):
        pred, labels, inputs = (np.asarray(x).reshape(-1).astype(np.int64) for x in (pred, labels, inputs))
        mask = labels != PAD
        exact = bool(np.array_equal(pred[mask], labels[mask]))
        in_range = bool(((pred >= 2) & (pred <= self.n + 1)).all())
        givens = inputs >= 2
        valid = (in_range and bool((pred[givens] == inputs[givens]).all())
                 and bool(valid_solutions((pred - 1).reshape(self.n, self.n), self.box)))
        return {"exact": exact, "valid": valid}

    def symmetries(self, count, rng):
        """The identity, then ``count - 1`` distinct random digit / band+row / stack+column permutations, transposed
        at random when the boxes are square (a transpose turns 2×3 boxes into 3×2 ones)."""
        n = self.n
        ident = (np.arange(n), np.arange(n), False, np.arange(n + 1).astype(np.int8))
        drawn = draw_distinct(count, rng, lambda r: random_transform(self.box, r), _transform_key,
                              _transform_key(ident))
        return [IDENTITY] + [token_symmetry(t, n) for t in drawn]

    def valid_answer(self, pred, inputs):
        """A complete grid (a digit in every cell) that keeps the givens of ``inputs``. The Sudoku rules are not
        checked: that would make the vote a verifier; which answer is right is left to the votes."""
        pred, inputs = np.asarray(pred).reshape(-1), np.asarray(inputs).reshape(-1)
        given = inputs >= 2
        return bool((pred >= 2).all() and (pred <= self.n + 1).all() and np.array_equal(pred[given], inputs[given]))

    def follows_rules(self, pred, inputs) -> bool:
        """Every row, column and box holds each digit once, and the givens of ``inputs`` are kept."""
        pred, inputs = np.asarray(pred).reshape(-1), np.asarray(inputs).reshape(-1)
        grid = np.where(pred >= 2, pred.astype(np.int64) - 1, 0).reshape(self.n, self.n)
        given = inputs >= 2
        return bool(valid_solutions(grid, self.box)) and bool(np.array_equal(pred[given], inputs[given]))

    def render(self, tokens):
        g = self.decode(tokens)
        br, bc = self.box
        sep = "+".join(["-" * (2 * bc + (0 if i in (0, self.n // bc - 1) else 1)) for i in range(self.n // bc)])
        lines = []
        for r in range(self.n):
            if r and r % br == 0:
                lines.append(sep)
            cells = ["." if v == 0 else CHARS[v - 1] for v in g[r]]
            lines.append(" | ".join(" ".join(cells[c:c + bc]) for c in range(0, self.n, bc)))
        return "\n".join(lines)

    def parse(self, text):
        s = _STRIP.sub("", text)
        allowed = set(CHARS[:self.n]) | {".", "0"}
        bad = sorted(set(s) - allowed)
        if bad:
            raise ValueError(f"unknown character(s) {''.join(bad)!r}: use digits 1-{self.n}, '.' or '0' for blanks")
        if len(s) != self.seq_len:
            raise ValueError(f"expected {self.seq_len} cells, got {len(s)}")
        g = np.array([0 if ch in ".0" else CHARS.index(ch) + 1 for ch in s], dtype=np.int8)
        dup = duplicate_givens(g, self.box)
        if dup:
            raise ValueError(f"contradictory givens: {dup}")
        return np.where(g == 0, 1, g + 1).astype(np.uint8)


# --------------------------------------------------------------------------- CSV import


def _lut(n: int, blanks: bool) -> np.ndarray:
    lut = np.full(256, -1, np.int16)
    for i, ch in enumerate(CHARS[:n]):
        lut[ord(ch)] = i + 1
    if blanks:
        lut[ord(".")] = lut[ord("0")] = 0
    return lut


def _csv_chunks(path, chunk_rows: int):
    """Yield lists of ``(line_number, record or problem)`` from a CSV with the Sudoku-Extreme header."""
    csv_header(path, CSV_HEADER)
    chunk = []
    for line, rec in csv_records(path):
        chunk.append((line, rec))
        if len(chunk) >= chunk_rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _check_rows(chunk, box, lut_q: np.ndarray, lut_a: np.ndarray):
    """Parse and check CSV rows ``[(line, record or problem), ...]``.

    Returns ``(problems [(line, why)], lines (m,), questions (m, N), answers (m, N), ratings (m,), ok (m,))`` for
    the ``m`` rows with the right shape and a finite rating; ``ok`` is False for those failing a content check.
    """
    n = box[0] * box[1]
    N = n * n
    problems, lines, qs, ans, rs = [], [], [], [], []
    for line, rec in chunk:
        if isinstance(rec, str):
            problems.append((line, rec))
        elif len(rec) != 4:
            problems.append((line, f"expected 4 fields, got {len(rec)}"))
        elif len(rec[1]) != N or len(rec[2]) != N:
            problems.append((line, f"question/answer must have {N} characters, got {len(rec[1])}/{len(rec[2])}"))
        else:
            try:
                rating = int(float(rec[3]))
            except (ValueError, OverflowError):  # not a number; inf, nan
                problems.append((line, f"rating {rec[3][:40]!r} is not a finite number"))
                continue
            if not -RATING_MAX - 1 <= rating <= RATING_MAX:  # ratings are kept as int32
                problems.append((line, f"rating {rec[3][:40]!r} is out of range (at most {RATING_MAX:,})"))
                continue
            lines.append(line), qs.append(rec[1]), ans.append(rec[2]), rs.append(rating)
    if not lines:
        return problems, np.zeros(0, np.int64), None, None, None, None
    q = lut_q[np.frombuffer("".join(qs).encode("ascii", "replace"), np.uint8)].reshape(-1, N)
    a = lut_a[np.frombuffer("".join(ans).encode("ascii", "replace"), np.uint8)].reshape(-1, N)
    checks = [
        ((q < 0).any(1), "question has unknown characters"),
        ((a < 0).any(1), f"answer has characters other than 1-{n}"),
        (((q > 0) & (q != a)).any(1), "answer contradicts the question's givens"),
        (~valid_solutions(a.reshape(-1, n, n), box), "answer is not a valid Sudoku"),
    ]
    bad = np.zeros(len(lines), bool)
    for mask, why in checks:
        problems += [(lines[i], why) for i in np.flatnonzero(mask & ~bad)]
        bad |= mask
    return problems, np.asarray(lines, np.int64), q, a, np.asarray(rs, np.int32), ~bad


def read_csv_arrays(path, *, box=(3, 3), subsample: int | None = None, min_rating: int = 0, seed: int = 0,
                    skip_invalid: bool = False, check_unique: bool = False, chunk_rows: int = 65536):
    """Stream a ``source,question,answer,rating`` CSV ('.' or '0' = blank).

    Every row is checked (field count, lengths, characters, rating, answer a valid Sudoku
    consistent with the question); rows rated below ``min_rating`` are then dropped and
    ``subsample`` rows are kept uniformly at random (reproducible from ``seed``). The slower
    uniqueness check (``check_unique``) runs on the kept rows only. A bad row raises ``ValueError``
    naming file and line, or with ``skip_invalid`` is dropped and counted.
    Returns ``(puzzles (m, n, n) int8, solutions (m, n, n) int8, ratings (m,) int32, lines (m,), n_skipped)``
    in file order.
    """
    n = box_tables(tuple(box))[0]
    N = n * n
    lut_q, lut_a = _lut(n, True), _lut(n, False)
    rng = np.random.default_rng(seed)
    skipped = 0
    parts: list[tuple[np.ndarray, ...]] = []  # (keys, lines, q, a, ratings)

    def reject(problems):
        nonlocal skipped
        if problems and not skip_invalid:
            line, why = min(problems)
            raise ValueError(f"{path}, line {line}: {why}")
        skipped += len(problems)

    for chunk in _csv_chunks(path, chunk_rows):
        problems, lines_a, q, a, r, ok = _check_rows(chunk, box, lut_q, lut_a)
        if len(lines_a):
            keep = ok & (r >= min_rating)
            keys = rng.random(int(keep.sum())) if subsample is not None else np.zeros(int(keep.sum()))
            parts.append((keys, lines_a[keep], q[keep].astype(np.int8), a[keep].astype(np.int8), r[keep]))
            if subsample is not None:
                cat = [np.concatenate(x) for x in zip(*parts)]
                if len(cat[0]) > subsample:
                    sel = np.argpartition(cat[0], subsample)[:subsample]
                    cat = [x[sel] for x in cat]
                parts = [tuple(cat)]
        reject(problems)
    if not parts:
        parts = [(np.zeros(0), np.zeros(0, np.int64), np.zeros((0, N), np.int8), np.zeros((0, N), np.int8),
                  np.zeros(0, np.int32))]
    _, lines_a, q, a, r = (np.concatenate(x) for x in zip(*parts))
    order = np.argsort(lines_a, kind="stable")
    lines_a, q, a, r = lines_a[order], q[order], a[order], r[order]
    if subsample is not None and len(r) < subsample:
        log.warning("%s: only %d eligible rows for subsample=%d", path, len(r), subsample)
    if check_unique and len(q):
        counts, _ = rate_many(q, box)
        nonunique = counts != 1
        reject([(int(lines_a[i]), "puzzle has more than one solution" if counts[i] > 1 else "puzzle is unsolvable")
                for i in np.flatnonzero(nonunique)])
        lines_a, q, a, r = lines_a[~nonunique], q[~nonunique], a[~nonunique], r[~nonunique]
    if skipped:
        log.warning("%s: skipped %d invalid rows", path, skipped)
    return q.reshape(-1, n, n), a.reshape(-1, n, n), r, lines_a, skipped


def read_csv(path, *, box=(3, 3), subsample: int | None = None, min_rating: int = 0, seed: int = 0,
             skip_invalid: bool = False, check_unique: bool = False):
    """Like ``read_csv_arrays`` but returns ``(list of (puzzle, solution) instances, n_skipped)``."""
    q, a, _, _, skipped = read_csv_arrays(path, box=box, subsample=subsample, min_rating=min_rating, seed=seed,
                                          skip_invalid=skip_invalid, check_unique=check_unique)
    return list(zip(q, a)), skipped

