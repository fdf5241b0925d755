"""A sample of evaluation puzzles drawn as grids with the model's answers (a PNG for the MLflow run)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from hrm.loss import IGNORE


def draw_samples(export_folder: Path, data_path: Path, n: int) -> tuple[Path, list[str]]:
    """Solve the first ``n`` test puzzles with the exported model; return the PNG and the puzzles as text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hrm.solve import solve
    from hrm.tasks import make_task
    from pipeline.core.export import load_export
    from pipeline.data.loader import load_split

    model, info = load_export(export_folder)
    task = make_task(info["task"], info.get("task_args"))
    arrays = load_split(data_path, "test", limit=max(1, n))
    inputs = arrays["inputs"].astype(np.uint8)
    labels = np.where(arrays["labels"] == IGNORE, 0, arrays["labels"]).astype(np.uint8)
    solutions = solve(model, task, list(inputs), adaptive=False)
    fig, axes = plt.subplots(len(inputs), 3, figsize=(9, 3 * len(inputs)), squeeze=False)
    for row, (x, y, s) in enumerate(zip(inputs, labels, solutions)):
        wrong = (s.tokens != y) & (y != 0)
        verdict = {True: ", valid", False: ", breaks the rules", None: ""}[s.valid]
        for col, (title, tokens) in enumerate((("puzzle", x), (f"model ({int(wrong.sum())} wrong{verdict})", s.tokens),
                                               ("solution", y))):
            ax = axes[row, col]
            ax.set_title(title, fontsize=9)
            ax.axis("off")
            ax.text(0.5, 0.5, task.render(tokens), family="monospace", fontsize=7, ha="center", va="center",
                    color="crimson" if col == 1 and wrong.any() else "black", transform=ax.transAxes)
    fig.tight_layout()
    out = Path(tempfile.mkdtemp()) / "eval_samples.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out, [task.render(x) for x in inputs]
