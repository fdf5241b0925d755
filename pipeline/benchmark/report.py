"""The reasoning benchmark's report: a Markdown table, a plot of held-out exact accuracy against training minutes
and against steps (one line per variant), and the raw curves as JSON, written to a folder and logged to the
benchmark's parent MLflow run. The machine is named in it: the figures depend on the CPU."""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU (model, torch's capability, whether bfloat16 is native), cores, torch."""
    import os

    import torch

    from pipeline.core.precision import cpu_capability, cpu_name, resolve_dtype

    dtype, _ = resolve_dtype("auto", "cpu")
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"cpu": cpu_name(), "cpu_capability": cpu_capability(), "auto_dtype_here": dtype,
            "cpu_count": os.cpu_count(), "gpu": gpu, "torch": torch.__version__, "matmul_gflops": matmul_gflops()}


def matmul_gflops(size: int = 1024, repeats: int = 5) -> float:
    """This machine's float32 speed now: GFLOP/s of a ``size``² matmul on 2 threads (the variants' setting), best of
    ``repeats``. Two machines with the same CPU name can differ (a shared host, another generation): the minutes of
    two reports compare only when this does."""
    import time

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return round(2 * size**3 / best / 1e9, 1)


def table(results: list) -> str:
    """The Markdown table: one row per variant, its settings, pace, best and final held-out exact accuracy, and
    the best checkpoint with more compute."""
    extra_keys = list(dict.fromkeys(k for r in results for k in r.extra))
    head = ["variant", "model", "params", "ms/step", "steps", "best exact (at min)", "final exact", "final cell"]
    head += [k.replace("exact_", "").replace("_", " ") for k in extra_keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        m = r.model
        model = (f"{m['variant']} D{m['D']} L{m['layers']} N×T {m['N×T']} M{m['M_max']} {m['halting']} "
                 f"{m['dtype']} B{m['batch']} lr {m['lr']:g}")
        row = [r.label, model, f"{r.parameters / 1e6:.2f} M", f"{r.ms_per_step:.0f}", str(r.final.step),
               f"{100 * r.best.exact:.1f}% ({r.best.minutes:.1f})", f"{100 * r.final.exact:.1f}%",
               f"{100 * r.final.cell:.1f}%"]
        row += [f"{100 * r.extra[k]:.1f}%" if k in r.extra else "—" for k in extra_keys]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def curve_table(results: list) -> str:
    """Held-out exact accuracy of every variant at each evaluation (minutes of training, step)."""
    lines = ["| variant | " + " | ".join(["minutes → exact (step)"]) + " |", "|---|---|"]
    for r in results:
        cells = ", ".join(f"{p.minutes:.1f} → {100 * p.exact:.1f}% ({p.step})" for p in r.points)
        lines.append(f"| {r.label} | {cells} |")
    return "\n".join(lines)


def plot(results: list, title: str):
    """Held-out exact accuracy against training minutes (left) and against steps (right), a line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in results:
        for ax, x in ((axes[0], "minutes"), (axes[1], "step")):
            ax.plot([0] + [getattr(p, x) for p in r.points], [0] + [p.exact for p in r.points], marker="o",
                    markersize=3, label=r.label)
    for ax, label in ((axes[0], "minutes of training"), (axes[1], "training steps")):
        ax.set_xlabel(label)
        ax.set_ylabel("held-out exact accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def log_report(results: list, folder: Path, uri: str, parent: str) -> Path:
    """The finished report in ``folder`` (written by :func:`write_progress` after the last variant) logged to the
    ``parent`` run, with each variant's best."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for name in ("report.md", "curves.png", "curves.json"):
        client.log_artifact(parent, str(folder / name))
    for r in results:
        client.log_metric(parent, f"{r.label}/best_exact", r.best.exact)
    log.info("report written to %s", folder)
    return folder


def write_progress(results: list, failed: dict[str, str], bench, built, folder: Path, where: dict[str, Any]) -> Path:
    """The report of the variants finished so far, replacing the previous one in ``folder``: written after every
    variant, so that a benchmark stopped or killed hours in keeps what it measured (``hrm bench merge`` joins it to a
    later run of the other variants)."""
    dataset = {"path": str(built.path), "counts": built.counts}
    return write_files(folder, results, failed, dataclasses.asdict(bench), dataset, where, replace=True)


def write_files(folder: Path, results: list, failed: dict[str, str], bench: dict[str, Any], dataset: dict[str, Any],
                where: dict[str, Any], sources: list[str] | None = None, notes: list[str] | None = None,
                replace: bool = False) -> Path:
    """Write report.md, curves.png and curves.json into ``folder`` (written in a temporary folder beside it and
    renamed into place: a folder there is whole). A folder there already is refused, or with ``replace`` swapped
    out (it must be a report: it holds curves.json). ``bench`` is the benchmark's settings, ``dataset`` its path and
    split counts, ``where`` the machine, ``sources`` the reports a merged one was made of."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    if folder.exists() and not (replace and (folder / "curves.json").is_file()):
        raise FileExistsError(f"{folder} exists already: the report goes to a new folder")
    title = (f"{Path(dataset['path']).name}: {dataset['counts']['test']} held-out puzzles, {bench['minutes']:g} min "
             f"per variant — {where['cpu']} ({where['cpu_count']} CPUs, {where['cpu_capability']})")
    text = (f"# Reasoning benchmark `{bench['name']}`\n\n{title}\n\n{table(results)}\n\n"
            f"Held-out exact accuracy at each evaluation:\n\n{curve_table(results)}\n")
    if failed:
        text += "\nFailed:\n\n" + "".join(f"- `{label}`: {why}\n" for label, why in failed.items())
    if sources:
        text += "\nMerged from the reports:\n\n" + "".join(f"- `{s}`\n" for s in sources)
    if notes:
        text += "\n" + "".join(f"Note: {n}\n\n" for n in notes)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as tmp:
        staged = Path(tmp) / "report"
        staged.mkdir()
        (staged / "report.md").write_text(text)
        payload = {"bench": bench, "dataset": dataset, "machine": where,
                   "variants": [dataclasses.asdict(r) for r in results], "failed": failed}
        if sources:
            payload["merged_from"] = sources
        if notes:
            payload["notes"] = notes
        (staged / "curves.json").write_text(json.dumps(payload, indent=2))
        fig = plot(results, title)
        try:
            fig.savefig(staged / "curves.png", dpi=120)
        finally:
            plt.close(fig)
        if folder.exists():  # the previous report of a running benchmark: out of the way, then gone
            staged.parent.joinpath("previous").mkdir()
            folder.rename(staged.parent / "previous" / "report")
        staged.rename(folder)
    return folder
