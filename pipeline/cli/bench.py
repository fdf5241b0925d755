"""``hrm bench``: benchmarks of the training job itself (pipeline.benchmark)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.core.config_io import CONFIGS

ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError)


@click.group()
def bench() -> None:
    """Benchmarks of the training job on this machine."""


@bench.command()
@click.option("--config", "config", type=click.Path(path_type=Path), default=CONFIGS / "bench-reasoning.yaml",
              show_default=True, help="A benchmark file: the dataset, the variants (training run files), the budget.")
@click.option("--minutes", type=float, help="Training minutes per variant (evaluations not counted).  [default: "
                                            "the file's, 60]")
@click.option("--eval-minutes", type=float, help="Evaluate every this many minutes of training.  [default: the "
                                                 "file's]")
@click.option("--variants", help="Comma-separated labels of the file's variants to run (default: all, in order).")
@click.option("--out", help="Where report folders go.  [default: the file's, runs/bench]")
@click.option("--tracking-uri", help="MLflow store.  [default: $MLFLOW_TRACKING_URI, else ./mlflow.db]")
def reasoning(config: Path, minutes: float | None, eval_minutes: float | None, variants: str | None,
              out: str | None, tracking_uri: str | None) -> None:
    """Accuracy against wall time on minimal 6×6 Sudoku: HRM and TRM variants, the same data and budget each;
    a report (table, plot, JSON) in --out and in MLflow."""
    from pipeline.benchmark.config import load_bench
    from pipeline.benchmark.reasoning import run_benchmark
    from pipeline.benchmark.report import table

    try:
        cfg = load_bench(config, minutes=minutes, eval_minutes=eval_minutes, out=out)
        if variants:
            cfg = pick_variants(cfg, variants)
    except ERRORS as err:
        raise click.ClickException(str(err)) from err
    total = cfg.minutes * len(cfg.variants)
    click.echo(f"{len(cfg.variants)} variant(s) × {cfg.minutes:g} min of training: ≈ {total:g} min plus "
               "evaluations and start-up")
    try:
        outcome = run_benchmark(cfg, config.parent, tracking_uri)
    except (*ERRORS, RuntimeError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(table(outcome.results))
    click.echo(f"\nreport: {outcome.folder}/report.md, curves.png, curves.json (and in MLflow, experiment "
               f"{cfg.experiment})")
    if outcome.failed:
        raise click.ClickException("; ".join(f"variant {k} failed: {v}" for k, v in outcome.failed.items()))


def pick_variants(cfg, labels: str):
    """``cfg`` with only the variants named in ``labels`` (comma-separated), in that order; an unknown one is
    refused, naming the known ones."""
    import dataclasses

    wanted = [x.strip() for x in labels.split(",") if x.strip()]
    unknown = [x for x in wanted if x not in cfg.variants]
    if unknown or not wanted:
        raise ValueError(f"--variants: unknown {unknown or labels!r}; the file has {list(cfg.variants)}")
    return dataclasses.replace(cfg, variants={x: cfg.variants[x] for x in wanted})


@bench.command()
@click.argument("reports", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="The merged report's folder (a new one).")
def merge(reports: tuple[Path, ...], out: Path) -> None:
    """One report from the report folders of several runs of the same benchmark (e.g. `--variants trm,trm-mlp`
    one day, `--variants hrm,hrm-fast` the next): refused unless budget, dataset and machine are the same."""
    from pipeline.benchmark.merge import merge_reports

    try:
        folder = merge_reports(list(reports), out)
    except ERRORS as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"report: {folder}/report.md, curves.png, curves.json")
