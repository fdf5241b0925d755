"""``hrm demo``: the README's first command, the whole pipeline at small scale (pipeline.demo.run)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.core.config_io import CONFIGS


@click.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="Where data/, runs/ and mlflow.db go.")
@click.option("--data-config", type=click.Path(exists=True, path_type=Path),
              default=CONFIGS / "data-sudoku-demo.yaml", show_default=True)
@click.option("--train-config", type=click.Path(exists=True, path_type=Path),
              default=CONFIGS / "train-demo.yaml", show_default=True)
def demo(workdir: Path, data_config: Path, train_config: Path) -> None:
    """Run the whole pipeline on an embedded local Ray and a local MLflow store."""
    from pipeline.demo.run import run_demo

    run_demo(workdir.resolve(), data_config, train_config)
