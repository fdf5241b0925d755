"""``hrm train``: the training job on Ray Train, tracked in MLflow, its best checkpoint registered."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.sets import parse_sets


def load_config(config: Path | None, sets: tuple[str, ...]):
    """The run config from ``--config`` and ``--set`` (a TrainConfig); a bad one is a click error."""
    from pipeline.train.config import load_train_config

    try:
        return load_train_config(config, parse_sets(sets))
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err


@click.command()
@click.option("--config", "config", type=click.Path(path_type=Path), help="A run file in pipeline/configs/.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config key (dotted).")
@click.option("--resume", is_flag=True, help="Continue the run of the same name from its latest checkpoint.")
def train(config: Path | None, sets: tuple[str, ...], resume: bool) -> None:
    """Train HRM on Ray Train; track it in MLflow; register the model."""
    from pipeline.train.run import train as run_training

    cfg = load_config(config, sets)
    try:  # run_training checks all that needs no cluster (pipeline.train.run.prepare) before Ray starts
        outcome = run_training(cfg, resume=resume, config_file=config)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, ConnectionError) as err:
        raise click.ClickException(str(err)) from err  # FileExistsError: the run exists, or another job holds it
    report(outcome)


def report(outcome) -> None:
    """Print a finished run (pipeline.train.run.Outcome): its best checkpoint's accuracy, its MLflow run, its
    registered model and whether that became the champion."""
    m = outcome.metrics
    click.echo(f"best checkpoint: eval exact accuracy {m.get('eval/exact_accuracy', float('nan')):.3f}, token "
               f"accuracy {m.get('eval/accuracy', float('nan')):.3f} (step {m.get('step', '?')})")
    click.echo(f"MLflow run: {outcome.run_id}")
    if outcome.model_version:
        state = "now the champion" if outcome.champion else "not better than the champion"
        click.echo(f"model: {outcome.model_uri} ({state})")
