"""The sweep's report: one row per trial (its values, best evaluation, steps, reasoning depth and compute per
example), written as CSV and markdown, and a plot of accuracy against reasoning depth; logged to MLflow.

Reasoning depth is M_max·N·T: the recurrent low-level steps an example gets when it runs all M_max segments of
N high-level cycles of T low-level steps. Compute per example counts transformer-layer applications over the whole
sequence in those segments: M_max·N·(T·L_layers + H_layers), with H_layers = L_layers for TRM (one shared network).
Evaluation always runs all M_max segments, so this is also the evaluation cost; training with ACT halts earlier
(the table's "mean halt" is the step at which the trained model would stop on the test set).
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrm.config import ModelConfig

log = logging.getLogger(__name__)
CSV, MARKDOWN, PLOT = "sweep_report.csv", "sweep_report.md", "accuracy_vs_depth.png"
COMPUTE_PLOT, CURVES_PLOT = "accuracy_vs_compute.png", "accuracy_vs_minutes.png"
COLOURS = {"completed": "tab:blue", "early_stopped": "tab:orange", "budget_stopped": "tab:purple", "error": "tab:red",
           "unfinished": "tab:grey"}


def segment_depth(m: ModelConfig) -> int:
    """Low-level steps in one ACT segment, N·T: the paper's effective depth of one forward pass."""
    return m.h_cycles * m.l_cycles


def depth(m: ModelConfig) -> int:
    """Low-level steps an example gets when it runs all M_max segments: M_max·N·T."""
    return m.halt_max_steps * segment_depth(m)


def compute_per_example(m: ModelConfig) -> int:
    """Transformer-layer applications per example over all M_max segments: M_max·N·(T·L_layers + H_layers)."""
    h_layers = m.h_layers if m.variant == "hrm" else m.l_layers
    return m.halt_max_steps * m.h_cycles * (m.l_cycles * m.l_layers + h_layers)


@dataclass
class TrialRow:
    """One trial of a sweep, as the report shows it."""

    trial_id: str
    status: str  # completed | early_stopped | error
    params: dict[str, Any]  # the trial's searched values (dotted keys)
    model: ModelConfig
    best: dict[str, float]  # the metrics of its best evaluation by the sweep's metric ({} when it never reported)
    reports: int  # evaluations reported to Tune
    last_step: int  # training steps done
    run_id: str | None  # its MLflow run (nested under the sweep's run)
    best_exact: float = math.nan  # its best eval exact accuracy over all evaluations
    curve: list[tuple[float, float]] = field(default_factory=list)  # (training minutes, eval exact) per report
    train_minutes: float = math.nan  # minutes of training done (its last report's)
    wall_minutes: float = math.nan  # minutes from its start to its last report (start-up and evaluations too)

    def table_row(self, metric: str) -> dict[str, Any]:
        """The row's columns for the table (CSV and markdown), ``metric`` being the sweep's."""
        m = self.model
        row: dict[str, Any] = {"trial": self.trial_id, "status": self.status}
        row.update({key: _short(value) for key, value in self.params.items()})
        row.update({"variant": m.variant, "M_max": m.halt_max_steps, "N": m.h_cycles, "T": m.l_cycles,
                    "layers": f"{m.h_layers if m.variant == 'hrm' else 0}+{m.l_layers}",
                    "depth": depth(m), "compute_per_example": compute_per_example(m)})
        row["best exact accuracy"] = _round(self.best_exact)
        for key in dict.fromkeys([metric, "eval/exact_accuracy", "eval/accuracy", "eval/steps"]):
            row["mean halt" if key == "eval/steps" else key] = _round(self.best.get(key, math.nan))
        row.update({"best step": int(self.best["step"]) if "step" in self.best else "",
                    "steps": self.last_step, "evals": self.reports, "train min": _round(self.train_minutes, 1),
                    "wall min": _round(self.wall_minutes, 1), "run_id": self.run_id or ""})
        return row


def _short(value: Any) -> Any:
    return f"{value:.3g}" if isinstance(value, float) else value


def _round(value: float, digits: int = 4) -> Any:
    return "" if math.isnan(value) else round(float(value), digits)


def trial_row(result, cfg, params: dict[str, Any], meta, metric: str, mode: str, run_id: str | None) -> TrialRow:
    """A finished Tune trial (its ray.tune.Result; ``cfg`` its TrainConfig, ``meta`` the dataset's metadata) as a
    row: its best evaluation by ``metric``, and whether it ran to the end, was stopped early (by the scheduler) or
    failed."""
    from pipeline.train.config import run_model_config
    from pipeline.tune.config import planned_reports

    frame = result.metrics_dataframe
    history = [] if frame is None or metric not in frame else frame.to_dict("records")
    scored = [h for h in history if not math.isnan(h[metric])]
    pick = max if mode == "max" else min
    best = pick(scored, key=lambda h: h[metric]) if scored else {}
    best = {k: float(v) for k, v in best.items() if k.startswith("eval/") or k == "step"}
    exact = [h["eval/exact_accuracy"] for h in history if not math.isnan(h.get("eval/exact_accuracy", math.nan))]
    minutes = max((h.get("train_minutes", math.nan) for h in history), default=math.nan)
    ran_out = cfg.max_minutes is not None and minutes >= cfg.max_minutes - 1e-6  # its time budget ended it
    status = "error" if result.error is not None else \
        "early_stopped" if len(history) < planned_reports(cfg, meta) and not ran_out else "completed"
    curve = [(float(h["train_minutes"]), float(h["eval/exact_accuracy"])) for h in history
             if not math.isnan(h.get("train_minutes", math.nan)) and not math.isnan(h.get("eval/exact_accuracy",
                                                                                           math.nan))]
    return TrialRow(trial_id=result.metrics["trial_id"], status=status, params=params,
                    model=run_model_config(cfg, meta), best=best, reports=len(history),
                    last_step=int(max((h.get("step", 0) for h in history), default=0)),
                    run_id=run_id, best_exact=max(exact, default=math.nan), curve=curve, train_minutes=minutes,
                    wall_minutes=max((h.get("time_total_s", math.nan) for h in history), default=math.nan) / 60)


def sort_rows(rows: list[TrialRow], metric: str, mode: str) -> list[TrialRow]:
    """Best first by the sweep's metric; trials without a value last."""
    sign = -1 if mode == "max" else 1

    def key(row: TrialRow):
        value = row.best.get(metric, math.nan)
        return (math.isnan(value), sign * value if not math.isnan(value) else 0.0, row.trial_id)

    return sorted(rows, key=key)


def asha_savings(rows: list[TrialRow], full: float | None) -> dict[str, float] | None:
    """What stopping trials early saved, measured from the sweep's own trials: the training and wall minutes they
    ran, against every trial run to ``full`` training minutes (a stopped trial's missing minutes at its own measured
    wall minutes per training minute: start-up and evaluations included). None without minutes to count."""
    ran = [r for r in rows if r.status not in ("error", "unfinished") and r.train_minutes > 0
           and not math.isnan(r.wall_minutes)]
    if not ran or full is None:
        return None
    train = sum(r.train_minutes for r in ran)
    wall = sum(r.wall_minutes for r in ran)
    full_wall = sum(r.wall_minutes + max(full - r.train_minutes, 0.0) * r.wall_minutes / r.train_minutes
                    for r in ran)
    return {"trials": len(ran), "train_minutes": train, "wall_minutes": wall, "full_train_minutes": full * len(ran),
            "full_wall_minutes": full_wall, "saved_fraction": 1 - wall / full_wall}


def savings_text(saved: dict[str, float] | None, cores: float | None = None) -> str:
    """The savings as a sentence for the report (CPU-minutes = wall minutes × ``cores`` a trial used)."""
    if saved is None:
        return ""
    cpu = f" ({saved['wall_minutes'] * cores:.0f} against {saved['full_wall_minutes'] * cores:.0f} CPU-minutes at " \
          f"{cores:g} cores a trial)" if cores else ""
    return (f"\nASHA: {saved['trials']:.0f} trials ran {saved['train_minutes']:.0f} training minutes in "
            f"{saved['wall_minutes']:.0f} wall minutes; every one of them to the end would have been "
            f"{saved['full_train_minutes']:.0f} training minutes, about {saved['full_wall_minutes']:.0f} wall minutes "
            f"at each trial's own measured pace{cpu}: {100 * saved['saved_fraction']:.0f}% saved.\n")


def write_report(rows: list[TrialRow], folder: Path, metric: str, mode: str, *, full: float | None = None,
                 not_run: int = 0, cores: float | None = None, partial: bool = False) -> list[Path]:
    """The table (CSV and markdown, with what ASHA saved against running every trial to ``full`` training minutes)
    and the plots in ``folder``; ``not_run``: planned trials the sweep's time budget left unstarted (``partial``: a
    sweep stopped to be resumed, its trials not run yet, the ones it stopped ``unfinished``). Returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    table = [row.table_row(metric) for row in sort_rows(rows, metric, mode)]
    columns = list(dict.fromkeys(key for row in table for key in row))
    with (folder / CSV).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(table)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in table]
    note = (f"\nBest first by `{metric}` ({mode}). depth = M_max·N·T; compute_per_example = "
            f"M_max·N·(T·L_layers + H_layers) layer applications (TRM: H_layers = L_layers).\n")
    note += savings_text(asha_savings(rows, full), cores)
    if partial:
        note = (f"\nA sweep stopped to be resumed (--resume): {len(rows)} trial(s) so far, "
                f"{sum(r.status == 'unfinished' for r in rows)} of them unfinished (they go on from their last "
                f"checkpoint), {not_run} not started yet.\n") + note
    elif not_run:
        note += f"\n{not_run} planned trial(s) not run: the sweep's time budget ended first.\n"
    (folder / MARKDOWN).write_text("\n".join(lines) + "\n" + note)
    plot(rows, folder / PLOT)
    plot(rows, folder / COMPUTE_PLOT, x=compute_per_example, label="compute per example: transformer-layer "
         "applications over all M_max segments", title="Accuracy against compute")
    plot_curves(rows, folder / CURVES_PLOT)
    return [folder / CSV, folder / MARKDOWN, folder / PLOT, folder / COMPUTE_PLOT, folder / CURVES_PLOT]


def plot(rows: list[TrialRow], path: Path, x=depth,
         label: str = "reasoning depth M_max·N·T (low-level steps per example)",
         title: str = "Accuracy against reasoning depth") -> None:
    """Each trial's best eval exact accuracy against ``x`` of its model (its reasoning depth by default)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = COLOURS
    markers = {"hrm": "o", "trm": "s"}
    seen = set()
    for row in rows:
        value = row.best_exact
        if math.isnan(value):
            continue
        label = f"{row.model.variant}, {row.status.replace('_', ' ')}"
        ax.scatter(x(row.model), value, c=colours.get(row.status, "grey"),
                   marker=markers.get(row.model.variant, "o"), s=50, label=None if label in seen else label)
        seen.add(label)
        m = row.model
        ax.annotate(f"{m.halt_max_steps}×{m.h_cycles}×{m.l_cycles}", (x(m), value), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    values = [x(r.model) for r in rows] or [1]
    if max(values) >= 4 * min(values):
        ax.set_xscale("log", base=2)
    ax.margins(x=0.15)  # room for the rightmost point's "M×N×T" label inside the axes (it was cut at the edge)
    ax.set_xlabel(label)
    ax.set_ylabel("best eval exact accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if seen:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(rows: list[TrialRow], path: Path, top: int = 8) -> None:
    """Every trial's eval exact accuracy against its minutes of training: the ``top`` best by their best exact
    accuracy drawn and named, the others thin and grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    # best exact first; among equals (0 early on) the one that trained longest (ASHA kept it)
    ranked = sorted((r for r in rows if r.curve), key=lambda r: (-r.best_exact, -r.train_minutes))
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
               "tab:cyan"]  # not grey: the unnamed trials' colour
    for place, row in reversed(list(enumerate(ranked))):  # the best drawn last, on top
        minutes, exact = zip(*sorted(row.curve))
        named = place < top
        m = row.model
        label = f"{m.variant} {m.halt_max_steps}×{m.h_cycles}×{m.l_cycles}" + "".join(
            f" {k.rsplit('.', 1)[-1]}={v}" for k, v in row.params.items()
            if k.rsplit(".", 1)[-1] not in ("halt_max_steps", "h_cycles", "l_cycles"))
        ax.plot(minutes, exact, marker="o" if named else None, ms=3, lw=1.5 if named else 0.7,
                color=colours[place % len(colours)] if named else "0.75", label=label if named else None,
                zorder=2 if named else 1)
    ax.set_xlabel("minutes of training")
    ax.set_ylabel("eval exact accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"Learning curves ({min(top, len(ranked))} best of {len(ranked)} named; M_max×N×T)")
    ax.grid(alpha=0.3)
    if ranked:
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def log_report(tracking_uri: str, run_id: str, paths: list[Path], artifact_path: str = "report") -> None:
    """Log the report's files to the MLflow run ``run_id`` under ``artifact_path``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path)
    log.info("report logged to MLflow run %s under %s/", run_id, artifact_path)
