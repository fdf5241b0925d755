"""``hrm bench reasoning``: does the model learn to reason, and which variant learns fastest on this machine?

One dataset (minimal 6×6 Sudoku by default: no clue can be removed), one wall-clock training budget per variant
(HRM, HRM with the CPU-fast options, TRM, TRM-MLP), held-out exact accuracy every few minutes of training. It reads
top to bottom: :func:`run_benchmark` builds the data (or finds it built), opens a parent MLflow run, then for each
variant :func:`train_variant` (the real ``hrm train`` job on Ray Train, with ``max_minutes``), :func:`curve` (its
evaluations, from MLflow) and :func:`more_compute` (its best checkpoint with deeper reasoning and symmetry votes on
top); :mod:`pipeline.benchmark.report` writes the table, the plot and the JSON, and logs them to the parent run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.benchmark.config import ReasoningBench

log = logging.getLogger(__name__)


@dataclass
class Point:
    """One evaluation of a variant: after ``minutes`` of training (``step`` steps), held-out exact and cell
    accuracy."""

    step: int
    minutes: float
    exact: float
    cell: float


@dataclass
class VariantResult:
    label: str
    run_id: str
    model: dict[str, Any]  # what sets the variant apart: flavour, sizes, M_max, halting, batch, lr
    parameters: int
    points: list[Point] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)  # more_compute's accuracies

    @property
    def final(self) -> Point:
        return self.points[-1]

    @property
    def best(self) -> Point:
        return max(self.points, key=lambda p: (p.exact, -p.minutes))

    @property
    def ms_per_step(self) -> float:
        last = self.final
        return 60_000 * last.minutes / max(last.step, 1)


@dataclass
class Outcome:
    results: list[VariantResult]  # the variants that finished, in the file's order
    failed: dict[str, str]  # label -> why, for the variants that did not
    folder: Path  # the report's


def run_benchmark(bench: ReasoningBench, base: Path, tracking_uri: str | None = None,
                  stamp: str | None = None) -> Outcome:
    """Every variant of ``bench`` (files named relative to ``base``) trained for ``bench.minutes`` on the same
    dataset, then the report. A variant that fails is reported as failed and the others go on (hours of finished
    variants are not thrown away); RuntimeError when none finished. Ctrl-C stops the whole benchmark; the report
    folder then holds the variants finished before it (it is rewritten after each)."""
    from pipeline.benchmark.report import log_report, machine, write_progress
    from pipeline.data.build import build_dataset
    from pipeline.data.config import load_config
    from pipeline.tracking import runs

    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    folder = Path(bench.out) / f"{bench.name}-{stamp}"
    uri = runs.store_uri(tracking_uri)
    configs = {label: load_variant(bench, base, label, stamp) for label in bench.variants}  # all checked first
    data_cfg = load_config(bench.path(bench.data_config, base))
    built = build_dataset(data_cfg)
    log.info("dataset %s: %d train / %d test puzzles", built.path, built.counts["train"], built.counts["test"])
    parent = runs.start_run(uri, bench.experiment, f"{bench.name}-{stamp}",
                                {"minutes": bench.minutes, "eval_minutes": bench.eval_minutes, "votes": bench.votes,
                                 "deeper": bench.deeper, "variants": ",".join(bench.variants)},
                                {"hrm.kind": "bench", "dataset": str(built.path)}, [])
    where = machine()  # measured before training: the speed of this machine as the variants ran
    try:
        results, failed = [], {}
        for label, cfg in configs.items():
            cfg.data = str(built.path)
            cfg.tracking.tracking_uri = uri
            try:
                results.append(train_variant(label, cfg, uri, parent, bench))
            except Exception as err:  # noqa: BLE001 -- reported, and the next variant runs
                log.error("variant %s failed: %s", label, err)
                failed[label] = f"{type(err).__name__}: {err}"
            if results:  # the report so far, kept if the benchmark is stopped or killed later
                log.info("report of %d finished variant(s): %s", len(results),
                         write_progress(results, failed, bench, built, folder, where))
        if not results:
            raise RuntimeError("every variant failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
        log_report(results, folder, uri, parent)  # the loop wrote it after the last variant
    except BaseException as err:
        runs.end_run(uri, parent, status="KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    runs.end_run(uri, parent, status="FAILED" if failed else "FINISHED")
    return Outcome(results, failed, folder)


def load_variant(bench: ReasoningBench, base: Path, label: str, stamp: str):
    """A variant's TrainConfig: its run file, with the benchmark's name, budget and evaluation on top."""
    from pipeline.train.config import load_train_config

    sets = {"name": f"{bench.name}-{label}-{stamp}", "max_minutes": bench.minutes, "eval_minutes": bench.eval_minutes,
            "eval_limit": bench.eval_limit, "seed": bench.seed, "storage_path": bench.storage_path,
            "tracking.experiment": bench.experiment, "tracking.register": False}
    return load_train_config(bench.path(bench.variants[label], base), sets)


def train_variant(label: str, cfg, uri: str, parent: str, bench: ReasoningBench) -> VariantResult:
    """Train one variant (``hrm train``'s job, a child run of ``parent``), then read its curve and score its best
    checkpoint with more compute."""
    from pipeline.train.run import train

    log.info("variant %s: training for %.3g minutes", label, bench.minutes)
    outcome = train(cfg, tags={"mlflow.parentRunId": parent, "hrm.bench": bench.name, "hrm.variant": label})
    model, _ = load_checkpoint_model(outcome.checkpoint)
    result = VariantResult(label=label, run_id=outcome.run_id, model=describe(cfg, model.config),
                           parameters=model.num_parameters(), points=curve(uri, outcome.run_id))
    result.extra = more_compute(model, cfg, bench)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for key, value in result.extra.items():
        client.log_metric(outcome.run_id, f"bench/{key}", value)
    log.info("variant %s: best held-out exact %.1f%% at %.1f min; %s", label, 100 * result.best.exact,
             result.best.minutes, ", ".join(f"{k} {100 * v:.1f}%" for k, v in result.extra.items()))
    return result


def load_checkpoint_model(folder: Path):
    from pipeline.core.export import load_export

    model, info = load_export(Path(folder))
    return model.eval(), info


def describe(cfg, model_cfg) -> dict[str, Any]:
    """The settings that tell the variants apart, for the report's table."""
    m = model_cfg
    return {"variant": m.variant + ("-mlp" if m.mlp_t else ""), "D": m.hidden_size,
            "layers": f"{m.h_layers}+{m.l_layers}" if m.variant == "hrm" else f"{m.l_layers}",
            "N×T": f"{m.h_cycles}×{m.l_cycles}", "M_max": m.halt_max_steps, "halting": m.halt_target,
            "dtype": m.forward_dtype, "batch": cfg.global_batch_size, "lr": cfg.optim.lr}


def curve(uri: str, run_id: str) -> list[Point]:
    """A run's evaluations from MLflow: held-out exact and cell accuracy by step, with the training minutes."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)

    def history(key: str) -> dict[int, float]:
        return {m.step: m.value for m in client.get_metric_history(run_id, key)}

    exact, cell, minutes = history("eval/exact_accuracy"), history("eval/accuracy"), history("train/minutes")
    return [Point(step=s, minutes=minutes.get(s, float("nan")), exact=exact[s], cell=cell.get(s, float("nan")))
            for s in sorted(exact)]


def more_compute(model, cfg, bench: ReasoningBench) -> dict[str, float]:
    """The best checkpoint on the held-out puzzles: exact accuracy at M_max segments (as trained), at
    ``deeper``·M_max, and voted over ``votes`` symmetries at that depth."""
    from hrm.tasks import make_task
    from pipeline.core.progress import Heartbeat, format_duration
    from pipeline.data.loader import load_split, read_metadata
    from pipeline.train.evaluate import evaluate

    meta = read_metadata(cfg.data)
    arrays = load_split(cfg.data, "test", limit=cfg.eval_limit)
    M = model.config.halt_max_steps
    deep = M * bench.deeper
    puzzles = len(arrays["inputs"])
    with Heartbeat(lambda s: f"scoring the best checkpoint with more compute: {puzzles:,} puzzles × {deep} segments"
                             f" × {bench.votes} vote(s), {format_duration(s)} elapsed"):  # minutes on a CPU
        metrics = evaluate(model, arrays, make_task(meta.task, meta.task_args), batch_size=256, device="cpu",
                           max_steps=deep, votes=bench.votes, seed=bench.seed)
    extra = {f"exact_segments_{M}": metrics[f"eval/exact_accuracy_step_{M}"]}
    if deep != M:
        extra[f"exact_segments_{deep}"] = metrics["eval/exact_accuracy"]
    if bench.votes > 1:
        extra[f"exact_segments_{deep}_votes_{bench.votes}"] = metrics[f"eval/exact_accuracy_votes_{bench.votes}"]
    return extra
