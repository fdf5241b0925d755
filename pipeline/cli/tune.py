"""``hrm tune``: Ray Tune sweeps of the training job over halting limits, H/L cycles and other training values."""

from __future__ import annotations

import shlex
from contextlib import ExitStack
from pathlib import Path

import click

from pipeline.cli.sets import parse_sets

ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError)


@click.command()
@click.option("--config", "config", required=True, type=click.Path(path_type=Path),
              help="A sweep file in pipeline/configs/ (sweep-*.yaml).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a sweep key (dotted), e.g. num_samples=8, overrides.max_steps=100, "
                   "'space.optim.lr={loguniform: [1e-4, 1e-2]}'.")
@click.option("--resume", is_flag=True, help="Continue a stopped sweep: finished trials are not run again.")
@click.option("--trust-sweep-state", "trust_state", is_flag=True,
              help="Resume even when Tune's saved state (code: it is unpickled) is not the one hrm tune sealed when "
                   "the sweep last stopped, as after a driver killed by SIGKILL.")
@click.option("--stop-after", "stop_after", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="MINUTES", help="End this part of the sweep after so many wall-clock minutes, as Ctrl-C would "
                                      "(continue with --resume); time_budget_s limits the whole sweep.")
def tune(config: Path, sets: tuple[str, ...], resume: bool, trust_state: bool, stop_after: float | None) -> None:
    """Sweep the training job with Ray Tune; report each trial in MLflow; register the best model."""
    from pipeline.core import locks
    from pipeline.tune.config import load_sweep_config
    from pipeline.tune.run import prepare_sweep, run_sweep, sweep_folder

    with ExitStack() as held:
        try:
            sweep = load_sweep_config(config, parse_sets(sets))
            held.enter_context(locks.hold(sweep_folder(sweep), f"hrm tune {sweep.name}"))  # one sweep per folder
            plan = prepare_sweep(sweep, resume=resume, sweep_file=config)
            sweep = plan.sweep  # every check needing no cluster is done
        except ERRORS as err:
            raise click.ClickException(str(err)) from err
        try:
            outcome = run_sweep(sweep, resume=resume, sweep_file=config, plan=plan, trust_state=trust_state,
                                stop_after_s=None if stop_after is None else stop_after * 60)
        except ERRORS as err:
            raise click.ClickException(str(err)) from err
    if outcome.interrupted:
        again = " ".join(shlex.quote(part) for part in ["hrm", "tune", "--config", str(config),
                                                          *[w for s in sets for w in ("--set", s)], "--resume"])
        click.echo(f"sweep {sweep.name} stopped before its trials finished; continue it with: {again}", err=True)
        raise click.exceptions.Exit(130)
    show(outcome, sweep.metric, sweep.mode)
    if outcome.best is None:
        raise click.ClickException(f"no trial reported {sweep.metric}: every trial failed (see the trials' errors "
                                   f"above and in MLflow)")


def show(outcome, metric: str, mode: str) -> None:
    """Print a finished sweep (pipeline.tune.plan.SweepOutcome): its best 20 trials, the best one, its MLflow run and
    report, and the registered model."""
    from pipeline.tune.report import sort_rows

    for row in sort_rows(outcome.rows, metric, mode)[:20]:
        values = ", ".join(f"{k}={v}" for k, v in row.params.items())
        value = row.best.get(metric)
        click.echo(f"{row.trial_id:14} {row.status:13} {metric} {'-' if value is None else f'{value:.4f}'}  "
                   f"steps {row.last_step:<6} {values}")
    if outcome.best is not None:
        click.echo(f"best trial: {outcome.best.trial_id} (MLflow run {outcome.best.run_id})")
    report = outcome.report[0].parent if outcome.report else "-"
    click.echo(f"sweep MLflow run: {outcome.parent_run_id}; report: {report}")
    if outcome.model_uri:
        state = "now the champion" if outcome.champion else "not better than the champion"
        click.echo(f"model: {outcome.model_uri} ({state})")
