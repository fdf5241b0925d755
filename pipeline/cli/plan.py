"""``hrm plan``: what a training run will need (data, steps, model, FLOPs, memory, time) before it runs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.cli.train import load_config


@click.command()
@click.option("--config", "config", type=click.Path(path_type=Path), help="A run file in pipeline/configs/.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config key (dotted).")
@click.option("--probe/--no-probe", default=True, show_default=True,
              help="Time two training steps of the model on this machine's CPU (seconds for the paper's models).")
@click.option("--json", "as_json", is_flag=True, help="The plan as JSON.")
def plan(config: Path | None, sets: tuple[str, ...], probe: bool, as_json: bool) -> None:
    """What a training run will need, before it runs: data, steps, model, FLOPs, memory, time, what is lacking.

    Takes `hrm train`'s --config and --set; starts nothing on a cluster and writes nothing."""
    from pipeline.train.plan import make_plan, render

    cfg = load_config(config, sets)
    try:
        made = make_plan(cfg, probe=probe)
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err
    if as_json:
        click.echo(json.dumps(made.to_dict(), indent=1))
    else:
        click.echo("\n".join(render(made)))
