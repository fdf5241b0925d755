"""ARC-AGI: encoding on a 30×30 canvas, invertible augmentation, the ARC task.

Encoding: PAD 0, EOS 1, colours 0-9 as tokens 2..11 (vocab 12, seq_len 900). A grid of h×w placed at (r, c) gets EOS
on the row just below it and the column just right of it, cells ``(r+h, c..c+w)`` and ``(r..r+h, c+w)``, the corner
included, wherever they fall inside the canvas. One example per (input, output) pair; the label is the encoded
output, so PAD label cells (outside the output grid and its EOS border) are ignored by the loss.

Augmentation (the HRM paper's recipe): variants of a whole task, each a dihedral transform × a permutation of colours
1-9 (0 kept) applied to every grid, de-duplicated by content, variant 0 the identity; training examples are also
translated at random (the same offset for input and output). Every variant records its ``Transform`` so predictions
can be mapped back with ``invert``. Sources and the split live in ``arc_sources``, voting and pass@K in
``arc_scoring``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from hrm.tasks.arc_sources import ArcTaskData, grid_digest, to_grid
from hrm.tasks.base import IDENTITY as SAME, PAD, Symmetry, Task, draw_distinct
from hrm.tasks.grids import N_DIHEDRAL, dihedral, inverse_dihedral, text_rows

CANVAS = 30
EOS = 1
COLOUR0 = 2  # token of colour 0
N_COLOURS = 10


# ----------------------------------------------------------------------------------------------------- transforms
class Transform(NamedTuple):
    """Colour permutation (``perm[c]`` replaces colour ``c``; ``perm[0] == 0``), then dihedral transform."""

    dihedral: int
    perm: tuple[int, ...]


IDENTITY = Transform(0, tuple(range(N_COLOURS)))


def random_transform(rng: np.random.Generator) -> Transform:
    """A uniform dihedral transform and permutation of colours 1..9 (colour 0 stays 0)."""
    return Transform(int(rng.integers(N_DIHEDRAL)), (0, *(int(c) + 1 for c in rng.permutation(N_COLOURS - 1))))


def apply_transform(grid: np.ndarray, t: Transform) -> np.ndarray:
    """``grid`` recoloured by ``t.perm``, then turned/flipped by ``t.dihedral``."""
    return dihedral(np.asarray(t.perm, np.uint8)[grid], t.dihedral)


def invert(grid: np.ndarray, t: Transform) -> np.ndarray:
    """Undo ``apply_transform(·, t)``: inverse dihedral, inverse colour permutation."""
    inverse_perm = np.argsort(np.asarray(t.perm)).astype(np.uint8)
    return inverse_perm[inverse_dihedral(np.asarray(grid), t.dihedral)]


def transform_task(task: ArcTaskData, t: Transform) -> ArcTaskData:
    """Every grid of ``task`` (missing outputs stay None) under ``apply_transform``."""
    return {
        split: [tuple(None if g is None else apply_transform(g, t) for g in pair) for pair in pairs]
        for split, pairs in task.items()
    }


def canvas_symmetry(t: Transform) -> Symmetry:
    """``t`` as a ``Symmetry`` on canvases ``(B, 900)`` holding a grid at the origin: each grid is cropped,
    transformed and re-encoded at the origin (EOS border included). ``apply`` raises ValueError on a canvas without
    a grid; ``invert`` turns a malformed answer into an all-PAD canvas (not a valid answer)."""

    def apply(tokens: np.ndarray) -> np.ndarray:
        rows = np.asarray(tokens, np.uint8).reshape(-1, CANVAS * CANVAS)
        grids = [crop(r) for r in rows]
        bad = [i for i, g in enumerate(grids) if g is None]
        if bad:
            raise ValueError(f"ARC input row {bad[0]} holds no grid at the canvas origin")
        return _stack([encode_grid(apply_transform(g, t)) for g in grids])

    def invert_rows(tokens: np.ndarray) -> np.ndarray:
        rows = np.asarray(tokens, np.uint8).reshape(-1, CANVAS * CANVAS)
        grids = [crop(r) for r in rows]
        return _stack([np.zeros(CANVAS * CANVAS, np.uint8) if g is None else encode_grid(invert(g, t))
                       for g in grids])

    return Symmetry(f"dihedral {t.dihedral} colours {list(t.perm[1:])}", apply, invert_rows)


# ------------------------------------------------------------------------------------------------------- encoding
def encode_grid(grid: np.ndarray, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The 900 tokens of ``grid`` placed with its top-left cell at ``offset``."""
    grid = np.asarray(grid)
    if grid.ndim != 2:
        raise ValueError(f"expected a 2-D grid, got shape {grid.shape}")
    (h, w), (r, c) = grid.shape, offset
    if not (0 < h and 0 < w and 0 <= r and 0 <= c and r + h <= CANVAS and c + w <= CANVAS):
        raise ValueError(f"a {grid.shape} grid at offset {offset} does not fit the {CANVAS}×{CANVAS} canvas")
    canvas = np.full((CANVAS, CANVAS), PAD, np.uint8)
    canvas[r : r + h, c : c + w] = grid.astype(np.uint8) + COLOUR0
    canvas[r + h : r + h + 1, c : c + w + 1] = EOS
    canvas[r : r + h + 1, c + w : c + w + 1] = EOS
    return canvas.ravel()


def _crop_canvas(canvas: np.ndarray) -> np.ndarray | None:
    """The grid whose top-left cell is ``canvas[0, 0]``, or None when the colours / EOS border are malformed."""
    n_rows, n_cols = canvas.shape
    colour = (canvas >= COLOUR0) & (canvas < COLOUR0 + N_COLOURS)
    if not colour[0, 0]:
        return None
    w = n_cols if colour[0].all() else int(np.argmin(colour[0]))
    h = n_rows if colour[:, 0].all() else int(np.argmin(colour[:, 0]))
    if not colour[:h, :w].all():
        return None
    if w < n_cols and not (canvas[: h + 1, w] == EOS).all():
        return None
    if h < n_rows and not (canvas[h, : w + 1] == EOS).all():
        return None
    return (canvas[:h, :w] - COLOUR0).astype(np.uint8)


def crop(tokens: np.ndarray) -> np.ndarray | None:
    """Grid of a prediction anchored at the canvas origin (test examples are never translated); None if invalid.

    Only the grid and its EOS border are read; cells beyond them (ignored by the loss) may hold anything.
    """
    return _crop_canvas(np.asarray(tokens).reshape(CANVAS, CANVAS))


def decode_grid(tokens: np.ndarray) -> np.ndarray | None:
    """Grid of an encoded (possibly translated) example: anchored at its first non-PAD row and column."""
    canvas = np.asarray(tokens).reshape(CANVAS, CANVAS)
    used = canvas != PAD
    if not used.any():
        return None
    return _crop_canvas(canvas[int(np.argmax(used.any(1))) :, int(np.argmax(used.any(0))) :])


def random_offset(grids: Sequence[np.ndarray | None], rng: np.random.Generator) -> tuple[int, int]:
    """A uniform offset at which every grid and its EOS border fit the canvas."""
    h = max(g.shape[0] for g in grids if g is not None)
    w = max(g.shape[1] for g in grids if g is not None)
    return int(rng.integers(max(0, CANVAS - 1 - h) + 1)), int(rng.integers(max(0, CANVAS - 1 - w) + 1))


def encode_pair(inp: np.ndarray, out: np.ndarray | None, offset: tuple[int, int] = (0, 0)):
    """(inputs, labels) token arrays of one pair; labels are all PAD when the output is unknown."""
    labels = np.zeros(CANVAS * CANVAS, np.uint8) if out is None else encode_grid(out, offset)
    return encode_grid(inp, offset), labels


# ---------------------------------------------------------------------------------------------------- variants
class Variant(NamedTuple):
    index: int
    transform: Transform
    task: ArcTaskData


class TestRef(NamedTuple):
    """Where a test example came from: enough to map its prediction back (``invert``) and vote."""

    task_id: str
    test_index: int
    variant: int
    transform: Transform


def variant_key(task_id: str, index: int) -> str:
    """Puzzle identifier key of one task variant (the dataset builder maps keys to integers)."""
    return f"{task_id}|{index}"


def _demo_digest(task: ArcTaskData) -> bytes:
    return grid_digest(*(g for pair in task["train"] for g in pair))


def augment_task(task: ArcTaskData, n_variants: int = 1000, seed: int = 0) -> list[Variant]:
    """Up to ``n_variants`` distinct variants of ``task``, variant 0 the identity; deterministic in its arguments.

    Distinctness is judged on the demonstration pairs only, so a task's training view (demonstrations) and test view
    (demonstrations + test pairs) get the same variant list. Fewer variants come back when the task has fewer
    distinct images (few colours, symmetric grids). A smaller ``n_variants`` gives a prefix of a larger one.
    """
    if n_variants < 1:
        raise ValueError(f"n_variants must be positive, got {n_variants}")
    rng = np.random.default_rng(seed)
    used = sorted({int(c) for pair in task["train"] for g in pair for c in np.unique(g) if c})
    n_keys = N_DIHEDRAL * math.perm(N_COLOURS - 1, len(used))  # transforms that differ on the demonstrations
    variants = [Variant(0, IDENTITY, task)]
    seen_keys, seen = {(0, tuple(used))}, {_demo_digest(task)}
    attempts = 0
    while len(variants) < n_variants and len(seen_keys) < n_keys and attempts < 20 * n_variants + 100:
        attempts += 1
        t = random_transform(rng)
        key = (t.dihedral, tuple(t.perm[c] for c in used))
        if key in seen_keys:
            continue
        seen_keys.add(key)
        transformed = transform_task(task, t)
        digest = _demo_digest(transformed)
        if digest not in seen:
            seen.add(digest)
            variants.append(Variant(len(variants), t, transformed))
    return variants


def encode_train(variants: Sequence[Variant], rng: np.random.Generator | None = None):
    """(inputs, labels, variant index) arrays for every demonstration pair of every variant.

    With ``rng`` each example is translated to a random offset (``random_offset``); without, it sits at the origin.
    """
    inputs, labels, index = [], [], []
    for v in variants:
        for inp, out in v.task["train"]:
            offset = (0, 0) if rng is None else random_offset((inp, out), rng)
            x, y = encode_pair(inp, out, offset)
            inputs.append(x)
            labels.append(y)
            index.append(v.index)
    return _stack(inputs), _stack(labels), np.asarray(index, np.int64)


def encode_test(task_id: str, variants: Sequence[Variant]):
    """(refs, inputs, labels) for every test pair of every variant, at the origin (labels PAD when unknown)."""
    refs, inputs, labels = [], [], []
    for v in variants:
        for i, (inp, out) in enumerate(v.task["test"]):
            x, y = encode_pair(inp, out)
            refs.append(TestRef(task_id, i, v.index, v.transform))
            inputs.append(x)
            labels.append(y)
    return refs, _stack(inputs), _stack(labels)


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    return np.stack(rows) if rows else np.zeros((0, CANVAS * CANVAS), np.uint8)


# ------------------------------------------------------------------------------------------------------- task
class ArcExample(NamedTuple):
    input: np.ndarray
    output: np.ndarray | None
    offset: tuple[int, int] = (0, 0)


class ArcTask(Task):
    """One example is one (input, output) pair; whole-task variants come from ``augment_task``."""

    name = "arc"
    vocab_size = 12
    seq_len = CANVAS * CANVAS

    def encode(self, instance: ArcExample | tuple) -> tuple[np.ndarray, np.ndarray]:
        ex = ArcExample(*instance)
        return encode_pair(ex.input, ex.output, ex.offset)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        grid = decode_grid(tokens)
        if grid is None:
            raise ValueError("tokens hold no well-formed ARC grid (colours followed by an EOS border)")
        return grid

    def generate(self, rng: np.random.Generator) -> None:
        """ARC has no instance generator: examples come from task sources."""
        return None

    def augment(self, instance: ArcExample | tuple, rng: np.random.Generator) -> ArcExample:
        """A random dihedral × colour permutation of the pair, at a random offset."""
        ex = ArcExample(*instance)
        t = random_transform(rng)
        inp, out = (None if g is None else apply_transform(g, t) for g in (ex.input, ex.output))
        return ArcExample(inp, out, random_offset((inp, out), rng))

    def score(self, pred: np.ndarray, labels: np.ndarray, inputs: np.ndarray) -> dict[str, bool]:
        """``exact``: every non-PAD label cell (the output grid and its EOS border) predicted."""
        pred, labels = np.asarray(pred).ravel(), np.asarray(labels).ravel()
        mask = labels != PAD
        return {"exact": bool(mask.any() and np.array_equal(pred[mask], labels[mask]))}

    def symmetries(self, count: int, rng: np.random.Generator) -> list[Symmetry]:
        """The identity, then ``count - 1`` distinct dihedral × colour-permutation transforms (``random_transform``,
        as the dataset's variants), each on the grid at the canvas origin."""
        drawn = draw_distinct(count, rng, random_transform, tuple, tuple(IDENTITY))
        return [SAME] + [canvas_symmetry(t) for t in drawn]

    def valid_answer(self, pred: np.ndarray, inputs: np.ndarray) -> bool:
        """A well-formed grid (colours and EOS border) at the canvas origin."""
        return crop(pred) is not None

    def canonical_answer(self, pred: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """The grid re-encoded at the origin: cells beyond its EOS border (never scored) cleared."""
        grid = crop(pred)
        return np.asarray(pred) if grid is None else encode_grid(grid)

    def render(self, tokens: np.ndarray) -> str:
        """Colour digits, one row per line; a malformed canvas shows its used box ('.' PAD, '|' EOS)."""
        grid = decode_grid(tokens)
        if grid is not None:
            return "\n".join("".join(str(v) for v in row) for row in grid)
        canvas = np.asarray(tokens).reshape(CANVAS, CANVAS)
        rows, cols = np.nonzero(canvas != PAD)
        if not len(rows):
            return ""
        box = canvas[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        chars = {PAD: ".", EOS: "|"} | {COLOUR0 + c: str(c) for c in range(N_COLOURS)}
        return "\n".join("".join(chars.get(int(v), "?") for v in row) for row in box)

    def parse(self, text: str) -> np.ndarray:
        """A JSON grid ``[[...], ...]`` or rows of digits (spaces/commas allowed); returns input tokens."""
        text = text.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"grid: invalid JSON ({e})") from e
        else:
            value = []
            for r, line in enumerate(text_rows(text)):
                cells = line.replace(",", "").replace(" ", "").replace("\t", "")
                if not cells.isdigit() or not cells.isascii():
                    raise ValueError(f"grid row {r + 1}: expected digits 0-9, got {line!r}")
                value.append([int(ch) for ch in cells])
        return encode_grid(to_grid(value, "grid"))
