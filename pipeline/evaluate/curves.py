"""``hrm eval``'s curves: exact accuracy against the number of symmetry votes (each point run and timed on its own),
and the plot of that curve beside the one against ACT segments (``eval_curves.png`` in the eval run)."""

from __future__ import annotations

import time

import numpy as np

from hrm.model import HRM
from hrm.tasks.base import Task
from pipeline.train import evaluate


def votes_curve(model: HRM, arrays: dict[str, np.ndarray], task: Task, *, counts: list[int],
                max_steps: int | None = None, seed: int = 0, batch_size: int = 256) -> list[dict[str, float]]:
    """Exact accuracy of answers voted over N symmetries, for each N of ``counts`` (full depth, ``max_steps``
    segments), with what each point cost: one dict per N with ``votes``, ``exact_accuracy``, ``forward_passes``
    (segments run per puzzle, all its votes together) and ``seconds`` (wall time of that N's whole run)."""
    points = []
    for n in counts:
        began, exact, passes = time.perf_counter(), 0, 0
        for start in range(0, len(arrays["inputs"]), batch_size):
            rows = {k: v[start:start + batch_size] for k, v in arrays.items()}
            voted = evaluate.vote_batch(model, task, rows, votes=n, max_steps=max_steps, seed=seed, batch_size=batch_size)
            exact += int(evaluate.exact_rows(voted.preds, rows["labels"]).sum())
            passes = max(passes, int(voted.forward_passes))
        count = max(len(arrays["inputs"]), 1)
        points.append({"votes": n, "exact_accuracy": exact / count, "forward_passes": passes,
                       "seconds": time.perf_counter() - began})
    return points


def vote_counts(votes: int) -> list[int]:
    """The vote counts of a curve up to ``votes``: 1, 2, 4, … (powers of two below it), then ``votes`` itself."""
    counts = [1]
    while counts[-1] * 2 < votes:
        counts.append(counts[-1] * 2)
    return counts + ([votes] if votes > 1 else [])


def plot_curves(by_segment: list[dict[str, float]], by_votes: list[dict[str, float]]):
    """A figure of exact accuracy against ACT segments (left) and against votes (right), each point's forward
    passes per puzzle written beside it: what ``hrm eval`` logs as ``eval_curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, points, x, label in ((axes[0], by_segment, "segment", "ACT segments run"),
                                 (axes[1], by_votes, "votes", "votes (symmetries per puzzle)")):
        xs = [p[x] for p in points]
        ys = [p["exact_accuracy"] for p in points]
        ax.plot(xs, ys, marker="o")
        for p in points:
            ax.annotate(f"{p['forward_passes']:g}", (p[x], p["exact_accuracy"]), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=7)
        if x == "votes" and len(xs) > 1:
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(n) for n in xs])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(label)
        ax.set_ylabel("exact accuracy")
        ax.set_ylim(-0.02, 1.05)
        ax.grid(alpha=0.3)
    axes[0].set_title("depth (labels: forward passes per puzzle)", fontsize=9)
    axes[1].set_title("symmetry votes (labels: forward passes per puzzle)", fontsize=9)
    fig.tight_layout()
    return fig
