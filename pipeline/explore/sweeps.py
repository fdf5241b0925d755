"""A Ray Tune sweep read back from MLflow (notebooks/03_sweeps.ipynb): the parent run, one row per trial (its nested
run, tagged ``mlflow.parentRunId``), and exact accuracy against reasoning depth and the compute actually used.

Depth of one ACT segment = h_cycles × l_cycles low-level steps (N·T, as in the sweep report:
``pipeline.tune.report.segment_depth``); a trial's full depth = halt_max_steps × that. Compute used = layer
applications: the mean halting segment (``eval/steps``) × N·(T·L_layers + H_layers), the sweep report's
``compute_per_example`` with the segments actually run in place of M_max. ``eval/exact_accuracy_step_<s>`` is the
accuracy after segment s, so one trial gives a whole depth curve.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace

import yaml

log = logging.getLogger(__name__)
DEPTH_KEYS = ("halt_max_steps", "h_cycles", "l_cycles")
STEP_METRIC = re.compile(r"^eval/exact_accuracy_step_(\d+)$")


def find_sweep(tracking_uri: str, experiment: str = "hrm", name: str | None = None) -> str:
    """The run id of the newest sweep (a run with nested runs) in ``experiment``, or of the one named ``name``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"no MLflow experiment {experiment!r} at {tracking_uri}")
    children = client.search_runs([found.experiment_id], "tags.mlflow.parentRunId != ''", max_results=5000)
    parents = {r.data.tags["mlflow.parentRunId"] for r in children}
    if not parents:
        raise ValueError(f"experiment {experiment!r} holds no sweep (no run with nested runs)")
    runs = [client.get_run(p) for p in parents]
    if name is not None:
        runs = [r for r in runs if r.info.run_name == name]
        if not runs:
            raise ValueError(f"no sweep named {name!r} in experiment {experiment!r}")
    newest = max(runs, key=lambda r: r.info.start_time)
    log.info("sweep %s (run %s): %d trials", newest.info.run_name, newest.info.run_id,
             sum(r.data.tags["mlflow.parentRunId"] == newest.info.run_id for r in children))
    return newest.info.run_id


def _value(text: str | None):
    return None if text is None else yaml.safe_load(text)


def trials(tracking_uri: str, parent_run_id: str, metric: str = "eval/exact_accuracy"):
    """One row per trial: its depth settings (a trial's own value, else its flavour's), depth, compute used,
    final and best ``metric``, and the accuracy after each segment (columns ``step_<s>``)."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from hrm.config import model_config
    from pipeline.tune.report import depth as full_depth
    from pipeline.tune.report import segment_depth

    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    found = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                               max_results=5000)
    records = []
    for run in found:
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        defaults = model_config(_value(params.get("flavour")) or "paper")
        depth = {k: int(_value(params.get(f"model.{k}")) or getattr(defaults, k)) for k in DEPTH_KEYS}
        m = replace(defaults, **depth)
        per_segment = segment_depth(m)
        history = [m.value for m in client.get_metric_history(run.info.run_id, metric)]
        record = {"run_id": run.info.run_id, "trial": tags.get("trial_id", run.info.run_name),
                  "status": tags.get("tune.status", run.info.status), **depth, "per_segment": per_segment,
                  "max_depth": full_depth(m),
                  "mean_segments": metrics.get("eval/steps"), "accuracy": metrics.get(metric),
                  "best_accuracy": max(history) if history else None}
        # layer applications actually used: the sweep report's compute_per_example (M_max·N·(T·L_layers + H_layers)),
        # with the mean halting segment in place of M_max
        layers = m.h_cycles * (m.l_cycles * m.l_layers + (m.h_layers if m.variant == "hrm" else m.l_layers))
        record["compute"] = None if record["mean_segments"] is None else record["mean_segments"] * layers
        for key, value in metrics.items():
            step = STEP_METRIC.match(key)
            if step:
                record[f"step_{int(step.group(1))}"] = value
        records.append(record)
    table = pd.DataFrame(records)
    if table.empty:
        raise ValueError(f"sweep run {parent_run_id} has no nested trial runs")
    return table.sort_values(["max_depth", "trial"]).reset_index(drop=True)


def depth_curves(table):
    """Long form of the per-segment accuracies: one row per (trial, segment) with its depth so far."""
    import pandas as pd

    rows = []
    for _, trial in table.iterrows():
        for column in [c for c in table.columns if c.startswith("step_")]:
            if pd.notna(trial[column]):
                s = int(column.removeprefix("step_"))
                rows.append({"trial": trial["trial"], "segment": s, "depth": s * trial["per_segment"],
                             "accuracy": trial[column], "h_cycles": trial["h_cycles"], "l_cycles": trial["l_cycles"],
                             "halt_max_steps": trial["halt_max_steps"]})
    return pd.DataFrame(rows)


def summary(table):
    """Mean best accuracy per (halt_max_steps, h_cycles, l_cycles) setting, deepest first."""
    grouped = table.groupby(list(DEPTH_KEYS)).agg(trials=("trial", "count"), best_accuracy=("best_accuracy", "mean"),
                                                  max_depth=("max_depth", "first"), compute=("compute", "mean"))
    return grouped.sort_values("max_depth", ascending=False)


def plot_depth(table, metric_name: str = "exact accuracy"):
    """Three panels: best accuracy vs full depth, accuracy vs compute used, accuracy after each segment vs depth."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    cycles = sorted({(int(n), int(t)) for n, t in zip(table["h_cycles"], table["l_cycles"])})
    colours = {c: plt.cm.viridis(i / max(1, len(cycles) - 1)) for i, c in enumerate(cycles)}
    for (n, t), colour in colours.items():
        part = table[(table["h_cycles"] == n) & (table["l_cycles"] == t)]
        label = f"N={n}, T={t}"
        axes[0].scatter(part["max_depth"], part["best_accuracy"], color=colour, label=label)
        for _, row in part.iterrows():
            axes[0].annotate(f"M={row['halt_max_steps']}", (row["max_depth"], row["best_accuracy"]), fontsize=7,
                             xytext=(3, 3), textcoords="offset points")
        axes[1].scatter(part["compute"], part["accuracy"], color=colour, label=label)
    curves = depth_curves(table)
    for trial, part in curves.groupby("trial"):
        first = part.iloc[0]
        axes[2].plot(part["depth"], part["accuracy"], marker="o", ms=3, alpha=0.8,
                     color=colours[(int(first["h_cycles"]), int(first["l_cycles"]))])
    axes[0].set(xlabel="full depth: M_max × N × T", ylabel=f"best {metric_name}")
    axes[1].set(xlabel="compute used: layer applications, mean halting segment × N × (T·L + H layers)",
                ylabel=f"final {metric_name}")
    axes[2].set(xlabel="depth after segment s: s × N × T", ylabel=f"{metric_name} after segment s")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.03, 1.03)  # accuracies: the whole range, also when every one is 0 (it spanned ±0.04 then)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title="cycles")
    fig.tight_layout()
    return fig
