"""The Maze kernels (numba): generation by exact rejection sampling, and shortest-path solving.

Characters ``# SGo`` (wall, free, start, goal, path) are tokens 1..5, PAD 0. Inputs show ``# SG``; the label is the
input with the interior cells of the shortest path marked ``o``.

Instances follow Lehnert et al. 2024 ("Beyond A*"), the source of the HRM paper's Maze-Hard set: a wall count drawn
uniformly between 30% and 50% of the cells and placed on uniformly random cells, start and goal on distinct uniformly
random free cells, kept only when the shortest path is longer than ``min_path`` (110 for 30×30). For other sizes the
default threshold is ``round(110 * (size / 30) ** 1.1)`` (10×10: 33, 20×20: 70): measured here, it keeps the filter
in the same far tail (about 1.5e-5 of random (walls, S, G) pass at sizes 10, 15, 20 and 30); the exponent matches
the growth of shortest-path distance near the percolation threshold. Pass ``min_path`` for easier mazes.

Sampling is exact rejection sampling of (walls, start, goal) done cheaply: per wall layout one BFS from a uniform start
gives the ``far`` cells (distance > min_path); the trial is accepted with probability ``far / (free - 1)`` and the goal
is uniform among the far cells. Each accepted (walls, S, G) therefore has the probability plain rejection of a uniform
distinct (S, G) pair would give it.

The label path is the BFS tree path from S with neighbour order up, down, left, right (first discoverer wins), so
it is a deterministic function of the input; ``valid_optimal`` accepts any other shortest path as well.
"""

from __future__ import annotations

import logging

import numba
import numpy as np

log = logging.getLogger(__name__)

WALL, FREE, START, GOAL, PATH = 1, 2, 3, 4, 5  # tokens (PAD is 0)
WALL_DENSITY = (0.3, 0.5)


def default_min_path(size: int) -> int:
    """Maze-Hard threshold: 110 at 30×30, ``round(110 * (size / 30) ** 1.1)`` otherwise (same tail rarity)."""
    return int(round(110 * (size / 30) ** 1.1))



# ---------------------------------------------------------------------------------------------------------- kernels
# Grids are handled padded with a wall border, flat, stride ``size + 2``: no bounds checks in the BFS.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)


@numba.njit(cache=True)
def _next64(state):
    """SplitMix64 step on ``state[0]`` (a uint64 array of one)."""
    state[0] += _GOLDEN
    z = state[0]
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True)
def _below(state, bound):
    """Unbiased uniform integer in ``[0, bound)`` for ``0 < bound < 2**32`` (Lemire's multiply-shift)."""
    r = np.uint64(bound)
    m = (_next64(state) >> np.uint64(32)) * r
    if (m & _LOW32) < r:
        t = (np.uint64(1 << 32) - r) % r
        while (m & _LOW32) < t:
            m = (_next64(state) >> np.uint64(32)) * r
    return np.int64(m >> np.uint64(32))


@numba.njit(cache=True)
def _uniform(state):
    return np.float64(_next64(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True)
def _bfs(free, stride, start, dist, parent, queue, far_from, near_limit):
    """BFS over the padded flat grid ``free`` from ``start``; ``dist`` must be -1 everywhere on entry.

    Neighbour order up, down, left, right; the first discoverer is the parent. Every discovered cell is in
    ``queue[:m]``. Stops early (``stopped``) once at least ``near_limit`` cells lie within ``far_from`` steps.
    Returns ``(m, far, stopped)`` with ``far`` the number of cells farther than ``far_from``.
    """
    head, tail = 0, 1
    queue[0] = start
    dist[start] = 0
    parent[start] = -1
    near, far = 1, 0
    while head < tail:
        if near >= near_limit:
            return tail, far, True
        c = queue[head]
        head += 1
        d = dist[c] + 1
        for k in range(4):
            nb = c - stride if k == 0 else (c + stride if k == 1 else (c - 1 if k == 2 else c + 1))
            if free[nb] and dist[nb] < 0:
                dist[nb] = d
                parent[nb] = c
                queue[tail] = nb
                tail += 1
                if d > far_from:
                    far += 1
                else:
                    near += 1
    return tail, far, False


@numba.njit(cache=True)
def _solve_flat(grid, size, out):
    """Mark the label path of the flat token grid ``grid`` in ``out``; return its length in steps, or -1."""
    stride = size + 2
    npad = stride * stride
    free = np.zeros(npad, np.bool_)
    start, goal = -1, -1
    for i in range(size * size):
        p = (i // size + 1) * stride + i % size + 1
        free[p] = grid[i] != WALL
        if grid[i] == START:
            start = p
        elif grid[i] == GOAL:
            goal = p
    if start < 0 or goal < 0:
        return -1
    dist = np.full(npad, -1, np.int32)
    parent = np.empty(npad, np.int32)
    queue = np.empty(npad, np.int32)
    _bfs(free, stride, start, dist, parent, queue, npad, np.float64(npad + 1))
    if dist[goal] < 0:
        return -1
    c = parent[goal]
    while c != start:
        out[(c // stride - 1) * size + c % stride - 1] = PATH
        c = parent[c]
    return dist[goal]


@numba.njit(cache=True)
def _lazy_bfs(state, cell, k_rem, n_rem, stride, start, dist, parent, queue, touched, far_from, near_limit):
    """``_bfs`` on a wall layout drawn lazily: an undecided cell (``cell == 0``) becomes a wall (1) with probability
    (walls left) / (undecided cells left) when first looked at, else free (2) -- sequential sampling of a uniform
    subset. Returns ``(m, far, stopped, n_touched, k_rem, n_rem)``."""
    head, tail, n_touched = 0, 1, 0
    queue[0] = start
    dist[start] = 0
    parent[start] = -1
    near, far = 1, 0
    steps = (-stride, stride, -1, 1)
    while head < tail:
        if near >= near_limit:
            return tail, far, True, n_touched, k_rem, n_rem
        c = queue[head]
        head += 1
        d = dist[c] + 1
        for k in range(4):
            nb = c + steps[k]
            if cell[nb] == 0:
                if _below(state, n_rem) < k_rem:
                    cell[nb] = 1
                    k_rem -= 1
                else:
                    cell[nb] = 2
                n_rem -= 1
                touched[n_touched] = nb
                n_touched += 1
            if cell[nb] == 2 and dist[nb] < 0:
                dist[nb] = d
                parent[nb] = c
                queue[tail] = nb
                tail += 1
                if d > far_from:
                    far += 1
                else:
                    near += 1
    return tail, far, False, n_touched, k_rem, n_rem


@numba.njit(cache=True)
def _nth_far(dist, queue, m, min_path, pick):
    """The ``pick``-th cell, in BFS order among the ``m`` reached, farther than ``min_path`` from the start."""
    for i in range(m):
        if dist[queue[i]] > min_path:
            if pick == 0:
                return queue[i]
            pick -= 1
    return -1


@numba.njit(cache=True)
def _write_maze(state, cell, size, start, goal, parent, k_rem, n_rem, touched, n_touched, q, a):
    """Decide the cells the BFS left undecided (selection sampling of the ``k_rem`` remaining walls among
    ``n_rem`` cells), then write the question ``q`` and the answer ``a`` (the BFS tree path from start to goal)
    of one accepted trial. Returns the new count of ``touched`` cells."""
    n = size * size
    stride = size + 2
    for i in range(n):
        p = (i // size + 1) * stride + i % size + 1
        if cell[p] == 0:  # undecided
            cell[p] = 1 if _below(state, n_rem) < k_rem else 2
            k_rem -= cell[p] == 1
            n_rem -= 1
            touched[n_touched] = p
            n_touched += 1
        q[i] = FREE if cell[p] == 2 else WALL
    q[(start // stride - 1) * size + start % stride - 1] = START
    q[(goal // stride - 1) * size + goal % stride - 1] = GOAL
    a[:] = q
    c = parent[goal]
    while c != start:
        a[(c // stride - 1) * size + c % stride - 1] = PATH
        c = parent[c]
    return n_touched


@numba.njit(cache=True)
def _generate_kernel(seed, size, min_path, wall_lo, wall_hi, max_trials, questions, answers):
    """Fill ``questions``/``answers`` (count × size²) by exact rejection sampling; return (accepted, trials).

    One trial: ``n_walls`` uniform in [wall_lo, wall_hi] on a uniform subset of the cells and a uniform free start
    (drawn as: start uniform among all cells, walls a uniform subset of the others, decided lazily as the BFS
    reaches them); accept with probability far / (free - 1) -- the uniform draw comes first so the BFS stops as
    soon as it cannot succeed -- then a uniform far goal and the undecided cells filled in.
    """
    state = np.empty(1, np.uint64)
    state[0] = np.uint64(seed)
    n = size * size
    stride = size + 2
    npad = stride * stride
    count = questions.shape[0]
    cell = np.ones(npad, np.int8)  # 0 undecided, 1 wall, 2 free; the border stays wall
    for i in range(n):
        cell[(i // size + 1) * stride + i % size + 1] = 0
    dist = np.full(npad, -1, np.int32)
    parent = np.empty(npad, np.int32)
    queue = np.empty(npad, np.int32)
    touched = np.empty(npad, np.int32)
    accepted, trials = 0, 0
    while accepted < count and trials < max_trials:
        trials += 1
        n_walls = wall_lo + _below(state, wall_hi - wall_lo + 1)
        i = _below(state, n)
        start = (i // size + 1) * stride + i % size + 1
        n_free = n - n_walls
        need = _uniform(state) * (n_free - 1)  # accept iff far > need
        if n_free - min_path - 1 <= need:  # far <= n_free - (min_path + 1) whenever far > 0
            continue
        cell[start] = 2
        # far <= n_free - near, so once near >= n_free - need the trial is lost
        m, far, stopped, n_touched, k_rem, n_rem = _lazy_bfs(
            state, cell, n_walls, n - 1, stride, start, dist, parent, queue, touched, min_path, n_free - need
        )
        if not stopped and far > need:
            goal = _nth_far(dist, queue, m, min_path, _below(state, far))
            n_touched = _write_maze(state, cell, size, start, goal, parent, k_rem, n_rem, touched, n_touched,
                                    questions[accepted], answers[accepted])
            accepted += 1
        for i in range(m):
            dist[queue[i]] = -1
        for i in range(n_touched):
            cell[touched[i]] = 0
        cell[start] = 0
    return accepted, trials


def generate_many(
    seed: int, count: int, size: int = 30, min_path: int | None = None, *, max_trials: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` mazes as (questions, answers) uint8 token arrays of shape ``(k, size, size)``.

    Deterministic: the output depends only on the arguments. ``k < count`` only when ``max_trials`` ran out.
    """
    if size < 2:
        raise ValueError(f"maze size must be at least 2, got {size}")
    min_path = default_min_path(size) if min_path is None else int(min_path)
    n = size * size
    wall_lo, wall_hi = int(np.ceil(WALL_DENSITY[0] * n)), int(np.floor(WALL_DENSITY[1] * n))
    if not 0 <= min_path <= n - wall_lo - 2:  # a path of min_path + 1 steps needs min_path + 2 free cells
        raise ValueError(f"min_path {min_path} impossible for a {size}×{size} maze with at least {wall_lo} walls")
    seed64 = np.random.SeedSequence(int(seed)).generate_state(1, np.uint64)[0]
    questions = np.zeros((count, n), np.uint8)
    answers = np.zeros((count, n), np.uint8)
    limit = np.iinfo(np.int64).max if max_trials is None else int(max_trials)
    accepted, trials = _generate_kernel(seed64, size, min_path, wall_lo, wall_hi, limit, questions, answers)
    log.debug("maze generation: %d accepted in %d trials", accepted, trials)
    return (questions[:accepted].reshape(-1, size, size), answers[:accepted].reshape(-1, size, size))


# ----------------------------------------------------------------------------------------------------- solving
def solve(grid: np.ndarray) -> np.ndarray | None:
    """Label grid (input with the canonical shortest path marked ``o``) for a square token grid, or None."""
    grid = np.asarray(grid, np.uint8)
    out = grid.ravel().copy()
    out[out == PATH] = FREE
    length = _solve_flat(out.copy(), grid.shape[0], out)
    return None if length < 0 else out.reshape(grid.shape)


def shortest_path_length(grid: np.ndarray) -> int | None:
    """Number of steps of a shortest S→G path through non-wall cells, or None when there is none."""
    grid = np.asarray(grid, np.uint8)
    flat = grid.ravel().copy()
    length = _solve_flat(flat, grid.shape[0], flat.copy())
    return None if length < 0 else int(length)


def _keeps_maze(pred: np.ndarray, inputs: np.ndarray) -> bool:
    """``pred`` keeps the walls/S/G of ``inputs`` and marks only its free cells, as free or ``o``."""
    if pred.shape != inputs.shape:
        return False
    fixed = inputs != FREE
    return bool(np.array_equal(pred[fixed], inputs[fixed]) and np.isin(pred[~fixed], (FREE, PATH)).all())


def _path_only(pred: np.ndarray) -> np.ndarray:
    """The maze of ``pred``'s S, G and ``o`` cells, every other cell a wall."""
    return np.where(np.isin(pred, (START, GOAL, PATH)), pred, WALL).astype(np.uint8)


def is_path(pred: np.ndarray, inputs: np.ndarray) -> bool:
    """True when ``pred`` keeps the maze of ``inputs`` and its ``o`` cells connect S to G: a path, of any length
    (whether it is a shortest one takes solving the maze: ``is_valid_optimal``)."""
    pred, inputs = np.asarray(pred), np.asarray(inputs)
    return _keeps_maze(pred, inputs) and shortest_path_length(_path_only(pred)) is not None


def is_valid_optimal(pred: np.ndarray, inputs: np.ndarray) -> bool:
    """True when ``pred`` keeps the walls/S/G of ``inputs`` and its ``o`` cells form a shortest S→G path."""
    pred, inputs = np.asarray(pred), np.asarray(inputs)
    if not _keeps_maze(pred, inputs):
        return False
    best = shortest_path_length(inputs)
    if best is None or int((pred == PATH).sum()) != best - 1:
        return False
    # Every o cell is needed: a path of ``best`` steps inside the o cells visits all ``best - 1`` of them once.
    return shortest_path_length(_path_only(pred)) == best
