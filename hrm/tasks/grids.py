"""Grid helpers shared by the Maze and ARC tasks: the dihedral group D4 and text rendering.

Dihedral transform ``k`` (0..7) of a 2-D array: transpose first when ``k >= 4``, then rotate by
``90° × (k % 4)`` counter-clockwise (``np.rot90``). ``k = 0`` is the identity; 1..3 are rotations;
4..7 are the four reflections (each its own inverse).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

N_DIHEDRAL = 8
DIHEDRAL_NAMES = (
    "identity",
    "rot90",
    "rot180",
    "rot270",
    "transpose",
    "flip_ud",  # rot90(transpose): upside-down mirror
    "anti_transpose",
    "flip_lr",
)
# DIHEDRAL_INVERSE[k] undoes transform k: rotations invert to the opposite rotation, reflections to themselves.
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)


def _check_k(k: int) -> int:
    k = int(k)
    if not 0 <= k < N_DIHEDRAL:
        raise ValueError(f"dihedral transform id must be in 0..7, got {k}")
    return k


def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """Apply dihedral transform ``k`` to the first two axes of ``grid`` (returns a contiguous copy)."""
    k = _check_k(k)
    out = np.swapaxes(grid, 0, 1) if k >= 4 else grid
    return np.ascontiguousarray(np.rot90(out, k % 4))


def inverse_dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """Undo ``dihedral(·, k)``: ``inverse_dihedral(dihedral(g, k), k) == g``."""
    return dihedral(grid, DIHEDRAL_INVERSE[_check_k(k)])


def grid_to_text(grid: np.ndarray, alphabet: Mapping[int, str] | Sequence[str]) -> str:
    """Render a 2-D integer grid, one row per line, mapping each value through ``alphabet``."""
    grid = np.asarray(grid)
    if grid.ndim != 2:
        raise ValueError(f"expected a 2-D grid, got shape {grid.shape}")
    return "\n".join("".join(alphabet[int(v)] for v in row) for row in grid)


def text_rows(text: str, n_rows: int | None = None) -> list[str]:
    """Split ``text`` into grid rows: one per line, without line endings.

    Empty lines at either end are dropped, but only while more than ``n_rows`` lines remain (when given),
    so a grid whose first or last row is legitimately blank (e.g. all free maze cells) survives.
    """
    lines = text.splitlines()
    while lines and not lines[-1].strip() and (n_rows is None or len(lines) > n_rows):
        lines.pop()
    while lines and not lines[0].strip() and (n_rows is None or len(lines) > n_rows):
        lines.pop(0)
    return lines
