"""Puzzles drawn as grids with matplotlib: Sudoku digits, maze cells, ARC colours, for any ``hrm.tasks`` task."""

from __future__ import annotations

import numpy as np

from hrm.tasks.base import PAD

ARC_COLOURS = ["#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF",
               "#870C25"]  # the ARC palette, colours 0-9
MAZE_COLOURS = ["#bbbbbb", "#2b2b2b", "#ffffff", "#2ca02c", "#d62728", "#f2b701"]  # PAD wall free start goal path
SUDOKU_GIVEN, SUDOKU_FILLED, CHANGED = "#000000", "#1f5fbf", "#d62728"


def figure(rows: int, cols: int, size: float = 2.2, title: str | None = None):
    """A figure of ``rows`` × ``cols`` square panels, axes as a 2-D array."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + (0.4 if title else 0)), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig, axes


def draw(ax, task, tokens: np.ndarray, *, title: str | None = None, givens: np.ndarray | None = None,
         changed: np.ndarray | None = None) -> None:
    """Draw one encoded grid of ``task`` (input, label or prediction tokens, shape (seq_len,)) on ``ax``.

    ``givens``: the puzzle's input tokens (Sudoku: given digits in black, filled ones in blue); ``changed``: a
    (seq_len,) mask of cells to outline in red (what one reasoning segment changed).
    """
    tokens = np.asarray(tokens).reshape(-1)
    if task.name == "sudoku":
        _sudoku(ax, task, tokens, givens)
        side = task.n
    elif task.name == "maze":
        side = task.size
        ax.imshow(np.clip(tokens, 0, len(MAZE_COLOURS) - 1).reshape(side, side), cmap=_cmap(MAZE_COLOURS),
                  vmin=0, vmax=len(MAZE_COLOURS) - 1, interpolation="nearest")
    elif task.name == "arc":
        side = _arc(ax, tokens)
    else:
        raise ValueError(f"no drawing for task {task.name!r}")
    if changed is not None:
        _outline(ax, np.asarray(changed).reshape(-1), side)
    if title:
        ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _cmap(colours: list[str]):
    from matplotlib.colors import ListedColormap

    return ListedColormap(colours)


def _sudoku(ax, task, tokens: np.ndarray, givens: np.ndarray | None) -> None:
    n, (br, bc) = task.n, task.box
    digits = np.where(tokens >= 2, tokens - 1, 0).reshape(n, n)
    if givens is None:
        given = digits > 0
    else:  # a given is drawn as one only where the grid keeps it (a prediction may overwrite it)
        given = (np.asarray(givens).reshape(n, n) >= 2) & (np.asarray(givens).reshape(n, n) == tokens.reshape(n, n))
    ax.imshow(np.ones((n, n)), cmap="gray", vmin=0, vmax=1)
    for r in range(n):
        for c in range(n):
            if digits[r, c]:
                ax.text(c, r, str(digits[r, c]), ha="center", va="center", fontsize=max(5, 70 // n),
                        color=SUDOKU_GIVEN if given[r, c] else SUDOKU_FILLED,
                        fontweight="bold" if given[r, c] else "normal")
    for i in range(n + 1):
        ax.axhline(i - 0.5, color="black", lw=1.6 if i % br == 0 else 0.4)
        ax.axvline(i - 0.5, color="black", lw=1.6 if i % bc == 0 else 0.4)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(n - 0.5, -0.5)


def _arc(ax, tokens: np.ndarray) -> int:
    """A well-formed grid alone; otherwise the used box of the 30×30 canvas (EOS white, PAD grey). Colours in the
    ARC palette. Returns the canvas side (cell indexes of ``changed`` are canvas cells)."""
    from hrm.tasks.arc import CANVAS, decode_grid

    colours = ["#dddddd", "#ffffff", *ARC_COLOURS]  # tokens: PAD 0, EOS 1, colours 0-9 as 2..11 (hrm.tasks.arc)
    canvas = tokens.reshape(CANVAS, CANVAS)
    rows, cols = np.nonzero(canvas != PAD)
    top, left = (int(rows.min()), int(cols.min())) if len(rows) else (0, 0)
    grid = decode_grid(tokens)
    if grid is not None:
        bottom, right = top + grid.shape[0], left + grid.shape[1]
    else:
        bottom, right = (int(rows.max()) + 1, int(cols.max()) + 1) if len(rows) else (1, 1)
    ax.imshow(np.clip(canvas, 0, 11), cmap=_cmap(colours), vmin=0, vmax=11, interpolation="nearest")
    ax.set_xlim(left - 0.5, right - 0.5)
    ax.set_ylim(bottom - 0.5, top - 0.5)
    return CANVAS


def _outline(ax, changed: np.ndarray, side: int) -> None:
    from matplotlib.patches import Rectangle

    for index in np.flatnonzero(changed):
        r, c = divmod(int(index), side)
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor=(0.84, 0.15, 0.16, 0.2), edgecolor=CHANGED,
                               lw=1.2, zorder=3))
