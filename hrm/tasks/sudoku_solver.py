"""Numba kernels for Sudoku: solver, rater, minimal-puzzle generator, canonical form.

Grids are flat ``int8`` arrays of ``n*n`` cells (row-major), 0 = blank, digits ``1..n``,
``n = br * bc`` for a box of ``br`` rows by ``bc`` columns. Candidates are bitmasks (bit ``d``
set = digit ``d`` possible).

The solver propagates naked and hidden singles and then guesses on the cell with the fewest
candidates (ties: lowest index), smallest digit first. Its *rating* of a puzzle is the number of
failed guesses (dead ends) while searching the whole tree for up to 2 solutions. It is
comparable in spirit only to tdoku's guess count used for the published Sudoku-Extreme ratings
(mean 22); the numbers are not on the same scale.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numba
import numpy as np

__all__ = ["box_tables", "solve", "rate_many", "generate_many", "is_minimal", "canonical_grid", "seed32"]


@lru_cache(maxsize=None)
def box_tables(box: tuple[int, int]):
    """Return ``(n, units (3n, n), peers (n*n, P), full_mask)`` for a box shape ``(br, bc)``."""
    br, bc = int(box[0]), int(box[1])
    n = br * bc
    if br < 2 or bc < 2 or n > 9:
        raise ValueError(f"unsupported box shape {box!r}: need rows, cols >= 2 and rows*cols <= 9")
    idx = np.arange(n * n).reshape(n, n)
    units = [idx[r] for r in range(n)] + [idx[:, c] for c in range(n)]
    for b in range(n):
        r0, c0 = (b // (n // bc)) * br, (b % (n // bc)) * bc
        units.append(idx[r0:r0 + br, c0:c0 + bc].ravel())
    units_a = np.array(units, dtype=np.int32)
    peers = [sorted({int(x) for u in units_a if c in u for x in u} - {c}) for c in range(n * n)]
    peers_a = np.array(peers, dtype=np.int32)
    return n, units_a, peers_a, ((1 << (n + 1)) - 1) & ~1


@lru_cache(maxsize=None)
def _col_perms(box: tuple[int, int]) -> np.ndarray:
    """All column permutations (stack order x column-in-stack orders) as ``(count, n)`` int32."""
    br, bc = box
    n = br * bc
    stacks = n // bc
    inner = list(itertools.permutations(range(bc)))
    out = []
    for sp in itertools.permutations(range(stacks)):
        for ins in itertools.product(inner, repeat=stacks):
            out.append([sp[s] * bc + ins[s][j] for s in range(stacks) for j in range(bc)])
    return np.array(out, dtype=np.int32)


def seed32(seed: int) -> int:
    """Map any non-negative int to a 32-bit seed for numba's RNG (stable across runs)."""
    return int(np.random.SeedSequence(int(seed)).generate_state(1)[0])


# --------------------------------------------------------------------------- solver kernels


@numba.njit(cache=True, inline="always")
def _popcount(m):
    k = 0
    while m:
        m &= m - 1
        k += 1
    return k


@numba.njit(cache=True, inline="always")
def _bit_index(m):
    d = 0
    while m > 1:
        m >>= 1
        d += 1
    return d


@numba.njit(cache=True)
def _propagate(cand, done, peers, units, full):
    """Naked + hidden singles to a fixpoint, in place. False on contradiction."""
    N = cand.shape[0]
    changed = True
    while changed:
        changed = False
        for c in range(N):
            if done[c] == 0:
                m = cand[c]
                if m == 0:
                    return False
                if m & (m - 1) == 0:
                    done[c] = 1
                    changed = True
                    for k in range(peers.shape[1]):
                        p = peers[c, k]
                        if cand[p] & m:
                            cand[p] &= ~m
                            if cand[p] == 0:
                                return False
        if changed:
            continue
        for u in range(units.shape[0]):
            once = 0
            twice = 0
            for k in range(units.shape[1]):
                m = cand[units[u, k]]
                twice |= once & m
                once |= m
            if once != full:
                return False
            uniq = once & ~twice
            if uniq:
                for k in range(units.shape[1]):
                    c = units[u, k]
                    m = cand[c] & uniq
                    if m and m != cand[c]:
                        if m & (m - 1):
                            return False
                        cand[c] = m
                        changed = True
    return True


@numba.njit(cache=True)
def _search(cand, peers, units, full, limit, randomize, sol, sc, sd, scell, srem):
    """DFS from candidate masks ``cand`` (modified). Returns ``(n_solutions<=limit, failed_guesses)``.

    The first solution found goes to ``sol``. ``sc, sd, scell, srem`` are scratch stacks.
    """
    N = cand.shape[0]
    done = np.zeros(N, np.uint8)
    if not _propagate(cand, done, peers, units, full):
        return 0, 0
    nsol = 0
    fails = 0
    depth = 0
    while True:
        best = -1
        bestk = 99
        for c in range(N):
            if done[c] == 0:
                k = _popcount(cand[c])
                if k < bestk:
                    bestk = k
                    best = c
                    if k == 2:
                        break
        if best < 0:
            nsol += 1
            if nsol == 1:
                for c in range(N):
                    sol[c] = _bit_index(cand[c])
            if nsol >= limit:
                return nsol, fails
        else:
            sc[depth, :] = cand
            sd[depth, :] = done
            scell[depth] = best
            srem[depth] = cand[best]
            depth += 1
        while depth > 0:
            rem = srem[depth - 1]
            if rem == 0:
                depth -= 1
                continue
            if randomize:
                r = np.random.randint(0, _popcount(rem))
                bit = rem & -rem
                for _ in range(r):
                    rem &= rem - 1
                    bit = rem & -rem
                rem = srem[depth - 1]
            else:
                bit = rem & -rem
            srem[depth - 1] = rem & ~bit
            cand[:] = sc[depth - 1]
            done[:] = sd[depth - 1]
            cand[scell[depth - 1]] = bit
            if _propagate(cand, done, peers, units, full):
                break
            fails += 1
        if depth == 0:
            return nsol, fails


@numba.njit(cache=True)
def _load(grid, cand, full):
    for c in range(grid.shape[0]):
        cand[c] = full if grid[c] == 0 else (1 << grid[c])


@numba.njit(cache=True)
def _solve_kernel(grid, peers, units, full, limit):
    N = grid.shape[0]
    cand = np.empty(N, np.int32)
    _load(grid, cand, full)
    sol = np.zeros(N, np.int8)
    sc = np.empty((N + 1, N), np.int32)
    sd = np.empty((N + 1, N), np.uint8)
    scell = np.empty(N + 1, np.int32)
    srem = np.empty(N + 1, np.int32)
    ns, fails = _search(cand, peers, units, full, limit, False, sol, sc, sd, scell, srem)
    return sol, ns, fails


@numba.njit(cache=True)
def _gen_one(peers, units, full, puzzle, sol, tmp, cand, sc, sd, scell, srem):
    """Random full grid -> minimal unique puzzle (in ``puzzle``/``sol``); returns its rating."""
    N = puzzle.shape[0]
    for c in range(N):
        cand[c] = full
    _search(cand, peers, units, full, 1, True, sol, sc, sd, scell, srem)
    puzzle[:] = sol
    for c in np.random.permutation(N):
        v = puzzle[c]
        puzzle[c] = 0
        # Unique without clue c  <=>  no solution with cell c != v.
        _load(puzzle, cand, full)
        cand[c] = full & ~(1 << v)
        ns, _ = _search(cand, peers, units, full, 1, False, tmp, sc, sd, scell, srem)
        if ns > 0:
            puzzle[c] = v
    _load(puzzle, cand, full)
    _, fails = _search(cand, peers, units, full, 2, False, tmp, sc, sd, scell, srem)
    return fails


@numba.njit(cache=True)
def _generate_kernel(seed, count, max_tries, peers, units, full, min_rating):
    np.random.seed(seed)
    N = peers.shape[0]
    puzzles = np.zeros((count, N), np.int8)
    sols = np.zeros((count, N), np.int8)
    ratings = np.zeros(count, np.int32)
    puzzle = np.zeros(N, np.int8)
    sol = np.zeros(N, np.int8)
    tmp = np.zeros(N, np.int8)
    cand = np.empty(N, np.int32)
    sc = np.empty((N + 1, N), np.int32)
    sd = np.empty((N + 1, N), np.uint8)
    scell = np.empty(N + 1, np.int32)
    srem = np.empty(N + 1, np.int32)
    got = 0
    tries = 0
    while got < count and tries < max_tries:
        tries += 1
        r = _gen_one(peers, units, full, puzzle, sol, tmp, cand, sc, sd, scell, srem)
        if r >= min_rating:
            puzzles[got] = puzzle
            sols[got] = sol
            ratings[got] = r
            got += 1
    return puzzles[:got], sols[:got], ratings[:got], tries


# --------------------------------------------------------------------------- canonical form


@numba.njit(cache=True)
def _next_row(k, first, n, br, used, band_used, choice):
    """The first input row from ``first`` on that may become output row ``k`` (at a band's first row: any row of
    an unused band; otherwise an unused row of the band chosen for the band's first row), or ``n`` when none."""
    for r in range(first, n):
        if k % br == 0:
            if band_used[r // br] == 0:
                return r
        elif used[r] == 0 and r // br == choice[k - k % br] // br:
            return r
    return n


@numba.njit(cache=True)
def _relabel_row(src_row, cp, maps, k, nx, best, n, row):
    """Output row ``k`` into ``row``: ``src_row`` under column permutation ``cp``, digits relabelled in order of
    first appearance (``maps[k + 1]`` extends ``maps[k]``; ``nx`` is the next free label).

    Returns ``(cmp, nx)``: cmp -1 / 0 / 1 as the row is below, equal to or above row ``k`` of ``best`` (1 stops
    at the first larger cell, leaving ``row`` partial).
    """
    maps[k + 1, :] = maps[k, :]
    cmp = 0
    for j in range(n):
        d = src_row[cp[j]]
        if d != 0:
            if maps[k + 1, d] == 0:
                maps[k + 1, d] = nx
                nx += 1
            d = maps[k + 1, d]
        row[j] = d
        if cmp == 0:
            b = best[k * n + j]
            if d > b:
                return 1, nx
            if d < b:
                cmp = -1
    return cmp, nx


@numba.njit(cache=True)
def _canon_kernel(grid, n, br, colperms, transpose, best):
    """Lexicographic min over geometric transforms of the first-appearance-relabelled grid.

    ``best`` (n*n int8, pre-filled with 127) receives the result. For each (transpose, column
    permutation) a DFS picks input rows for output rows 0..n-1 (bands and rows within bands),
    pruning as soon as an output row exceeds the best one found so far.
    """
    nb = n // br
    src = np.empty((n, n), np.int8)
    choice = np.empty(n + 1, np.int32)
    maps = np.zeros((n + 1, n + 1), np.int8)
    nxt = np.zeros(n + 1, np.int32)
    used = np.zeros(n, np.uint8)
    band_used = np.zeros(nb, np.uint8)
    row = np.empty(n, np.int8)
    for t in range(2 if transpose else 1):
        for r in range(n):
            for c in range(n):
                src[r, c] = grid[r * n + c] if t == 0 else grid[c * n + r]
        for p in range(colperms.shape[0]):
            cp = colperms[p]
            used[:] = 0
            band_used[:] = 0
            maps[0, :] = 0
            nxt[0] = 1
            k = 0
            choice[0] = -1
            while k >= 0:
                # undo the previous choice at level k
                if choice[k] >= 0:
                    r = choice[k]
                    used[r] = 0
                    if k % br == 0:
                        band_used[r // br] = 0
                r = _next_row(k, choice[k] + 1, n, br, used, band_used, choice)
                choice[k] = r
                if r == n:
                    choice[k] = -1
                    k -= 1
                    continue
                cmp, nx = _relabel_row(src[r], cp, maps, k, nxt[k], best, n, row)
                if cmp > 0:
                    continue
                if cmp < 0:
                    best[k * n:(k + 1) * n] = row
                    best[(k + 1) * n:] = 127
                nxt[k + 1] = nx
                used[r] = 1
                if k % br == 0:
                    band_used[r // br] = 1
                if k + 1 == n:
                    used[r] = 0
                    if k % br == 0:
                        band_used[r // br] = 0
                    continue
                k += 1
                choice[k] = -1


# --------------------------------------------------------------------------- Python wrappers


def _flat(grid, n: int) -> np.ndarray:
    g = np.ascontiguousarray(np.asarray(grid).reshape(-1), dtype=np.int8)
    if g.size != n * n:
        raise ValueError(f"grid has {g.size} cells, expected {n * n}")
    if g.min() < 0 or g.max() > n:
        raise ValueError(f"grid values must be in 0..{n}")
    return g


def solve(grid, box=(3, 3)) -> tuple[np.ndarray | None, int, int]:
    """Solve ``grid`` (0 = blank). Returns ``(solution (n, n) int8 | None, n_solutions<=2, failed_guesses)``.

    The solution is the first one found (check ``n_solutions == 1`` for uniqueness).
    ``failed_guesses`` is the rating: dead ends of a full search for up to 2 solutions.
    """
    n, units, peers, full = box_tables(tuple(box))
    g = _flat(grid, n)
    sol, ns, fails = _solve_kernel(g, peers, units, full, 2)
    return (sol.reshape(n, n) if ns else None), int(ns), int(fails)


def is_minimal(puzzle, box=(3, 3)) -> bool:
    """True when ``puzzle`` has a unique solution and removing any clue breaks uniqueness."""
    n, units, peers, full = box_tables(tuple(box))
    g = _flat(puzzle, n)
    if _solve_kernel(g, peers, units, full, 2)[1] != 1:
        return False
    for c in np.flatnonzero(g):
        h = g.copy()
        h[c] = 0
        if _solve_kernel(h, peers, units, full, 2)[1] < 2:
            return False
    return True


def generate_many(seed: int, count: int, box=(3, 3), min_rating: int = 0, max_tries: int | None = None):
    """Generate minimal unique puzzles until ``count`` have rating >= ``min_rating``.

    Deterministic in ``(seed, count, box, min_rating, max_tries)``. Returns
    ``(puzzles (m, n, n) int8, solutions (m, n, n) int8, ratings (m,) int32, tries)`` with
    ``m == count`` unless ``max_tries`` (default unlimited) candidates were exhausted first.
    """
    n, units, peers, full = box_tables(tuple(box))
    max_tries = np.iinfo(np.int64).max if max_tries is None else int(max_tries)
    p, s, r, tries = _generate_kernel(seed32(seed), int(count), max_tries, peers, units, full, int(min_rating))
    return p.reshape(-1, n, n), s.reshape(-1, n, n), r, int(tries)


def canonical_grid(puzzle, box=(3, 3)) -> np.ndarray:
    """Canonical representative (flat int8) of ``puzzle`` under digit relabelling, band/row,
    stack/column permutations and (square boxes only) transposition. Exact: equal iff equivalent."""
    br, bc = int(box[0]), int(box[1])
    n = box_tables((br, bc))[0]
    g = _flat(puzzle, n)
    best = np.full(n * n, 127, np.int8)
    _canon_kernel(g, n, br, _col_perms((br, bc)), br == bc, best)
    return best


@numba.njit(cache=True)
def _rate_many_kernel(puzzles, peers, units, full):
    m = puzzles.shape[0]
    counts = np.zeros(m, np.int32)
    fails = np.zeros(m, np.int32)
    for i in range(m):
        _, counts[i], fails[i] = _solve_kernel(puzzles[i], peers, units, full, 2)
    return counts, fails


def rate_many(puzzles, box=(3, 3)) -> tuple[np.ndarray, np.ndarray]:
    """For puzzles ``(m, n, n)`` or ``(m, n*n)``: ``(n_solutions<=2, failed_guesses)`` int32 arrays."""
    n, units, peers, full = box_tables(tuple(box))
    p = np.ascontiguousarray(np.asarray(puzzles, dtype=np.int8).reshape(-1, n * n))
    if p.size and (p.min() < 0 or p.max() > n):
        raise ValueError(f"grid values must be in 0..{n}")
    return _rate_many_kernel(p, peers, units, full)
