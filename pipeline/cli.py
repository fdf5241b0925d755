"""The ``hrm`` command."""

from __future__ import annotations

import logging

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Train, sweep, track and ship Hierarchical Reasoning Models."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


@main.command()
@click.option("--flavour", default="debug", show_default=True, help="Model flavour (hrm.config.FLAVOURS).")
def info(flavour: str) -> None:
    """Print a model flavour's config and size."""
    from hrm.config import model_config, to_dict
    from hrm.model import HRM

    cfg = model_config(flavour)
    for key, value in to_dict(cfg).items():
        click.echo(f"{key:24} {value}")
    click.echo(f"{'parameters':24} {HRM(cfg).num_parameters():,}")


def _register() -> None:
    from pipeline.cli_data import data
    from pipeline.cli_train import evaluate, solve, train
    from pipeline.cli_tune import tune
    from pipeline.demo import demo

    for command in (demo, data, train, evaluate, solve, tune):
        main.add_command(command)


_register()
