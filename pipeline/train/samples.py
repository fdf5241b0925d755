"""Sample answers at every evaluation: the first test puzzles, the model's answers to them (wrong cells outlined in
red, whether they keep the puzzle's rules) and the solutions, drawn as one picture that the MLflow run keeps by step
(``eval_samples``: MLflow's image panel steps through the evaluations with a slider)."""

from __future__ import annotations

import numpy as np

from hrm.loss import IGNORE

KEY = "eval_samples"  # the image key in the MLflow run


def answer_rows(model, task, arrays: dict[str, np.ndarray], n: int):
    """The model's answers (hrm.vote.Voted, one vote, all M_max segments) to the first ``n`` rows of ``arrays``,
    each with its own puzzle id (an ARC task's embedding)."""
    from hrm.vote import answer

    return answer(model, task, arrays["inputs"][:n], puzzle_ids=arrays["puzzle_ids"][:n], votes=1)


def verdict(wrong: int, valid: bool | None, confidence: float) -> str:
    """The model panel's title: cells wrong, the rules kept or broken (unknown for ARC), the halting head's belief."""
    cells = "all right" if wrong == 0 else f"{wrong} wrong"
    rules = {True: ", valid", False: ", breaks the rules", None: ""}[valid]
    return f"model: {cells}{rules} (q {confidence:.2f})"


def picture(task, inputs: np.ndarray, preds: np.ndarray, labels: np.ndarray, confidence: np.ndarray,
            title: str) -> np.ndarray:
    """One row per puzzle (puzzle, the model's answer, the solution); ``inputs``/``preds``/``labels`` (n, L) tokens,
    labels with IGNORE where unscored. Returns the picture as RGB pixels (H, W, 3) uint8."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.core.draw import draw, figure

    labels = np.where(labels == IGNORE, 0, labels).astype(np.uint8)
    fig, axes = figure(len(inputs), 3, size=2.2, title=title)
    for row, (x, p, y, q) in enumerate(zip(inputs, preds, labels, confidence)):
        wrong = (p != y) & (y != 0)
        draw(axes[row, 0], task, x, title="puzzle")
        draw(axes[row, 1], task, p, givens=x, changed=wrong,
             title=verdict(int(wrong.sum()), task.follows_rules(p, x), float(q)))
        draw(axes[row, 2], task, y, givens=x, title="solution")
    fig.tight_layout(h_pad=1.5)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return pixels


def sample_image(model, task, arrays: dict[str, np.ndarray], n: int, title: str) -> np.ndarray | None:
    """The picture of the model's answers to the first ``n`` puzzles of ``arrays``; None when there are none."""
    n = min(int(n), len(arrays["inputs"]))
    if n < 1:
        return None
    voted = answer_rows(model, task, arrays, n)
    return picture(task, arrays["inputs"][:n], voted.preds, arrays["labels"][:n], voted.confidence, title)


def example_puzzles(task, data_path, n: int) -> list[str]:
    """The first ``n`` (at least 1) test puzzles as text: the logged model's input example."""
    from pipeline.data.loader import load_split

    return [task.render(x) for x in load_split(data_path, "test", limit=max(1, n))["inputs"]]
