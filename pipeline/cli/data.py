"""``hrm data build``, ``hrm data show`` and ``hrm data check``: build datasets with Ray Data, look at them, check
them."""

from __future__ import annotations

import click

from pipeline.cli.errors import one_line
from pipeline.data.config import TASK_NAMES


@click.group()
def data() -> None:
    """Build puzzle datasets (Ray Data) and inspect them."""


@data.command()
@click.argument("task", type=click.Choice(TASK_NAMES))
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="YAML data config (pipeline/configs/data-*.yaml); defaults when omitted.")
@click.option("--out", help="Output folder, or an s3:// / gs:// prefix (AWS_* environment, AWS_ENDPOINT_URL) "
                            "(default: config out or data/<name>).")
@click.option("--seed", type=int, help="Override the config seed.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config key (dotted: --set sudoku.count=100).")
@click.option("--workers", type=click.IntRange(min=1), help="Parallel Ray Data tasks (default: all CPUs).")
@click.option("--overwrite", is_flag=True, help="Replace an existing different dataset at --out.")
@click.option("--skip-invalid", is_flag=True, help="Skip and count malformed / invalid input rows instead of failing.")
def build(task: str, config_path: str | None, out: str | None, seed: int | None, sets: tuple[str, ...],
          workers: int | None, overwrite: bool, skip_invalid: bool) -> None:
    """Generate or import TASK puzzles, split, augment and write Parquet + metadata.json."""
    from pipeline.cli.sets import parse_sets
    from pipeline.data.build import build_dataset
    from pipeline.data.config import load_config

    overrides = parse_sets(sets)  # a malformed pair: a usage error naming --set
    try:
        cfg = load_config(config_path, task=task, seed=seed, sets=overrides)
        result = build_dataset(cfg, out, workers=workers, overwrite=overwrite, skip_invalid=skip_invalid)
    except (ValueError, TypeError, OSError) as e:  # OSError: storage unreachable, access denied
        raise click.ClickException(one_line(e)) from None
    if not result.built:
        click.echo(f"{result.path} already holds this dataset (fingerprint {result.fingerprint}): nothing to do")
        return
    click.echo(f"built {result.path}: train {result.counts['train']:,} rows ({result.groups['train']:,} originals), "
               f"test {result.counts['test']:,} rows ({result.groups['test']:,} originals) in {result.seconds:.1f} s")
    if result.skipped:
        click.echo(f"skipped {result.skipped} invalid input row(s)/task(s) (--skip-invalid)")


@data.command()
@click.argument("path")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("-n", "count", type=click.IntRange(min=0), default=3, show_default=True, help="Examples to print.")
def show(path: str, split: str, count: int) -> None:
    """Print a dataset's metadata and a few examples as grids (PATH: a folder or an s3:// / gs:// prefix)."""
    from pipeline.data.show import show as render

    try:
        click.echo(render(path, split, count))
    except (ValueError, OSError) as e:
        raise click.ClickException(one_line(e)) from None


@data.command()
@click.argument("path")
def check(path: str) -> None:
    """Check a dataset (PATH: a folder or an s3:// / gs:// prefix): every part's size and checksum against
    metadata.json, its schema, rows and tokens. `hrm train` runs the same check before it starts."""
    from pipeline.data.loader import read_metadata
    from pipeline.data.verify import verify_dataset

    try:
        done = verify_dataset(read_metadata(path))
    except (ValueError, OSError) as e:
        raise click.ClickException(one_line(e)) from None
    sums = f"{done.checksums} with a recorded checksum" if done.checksums else "no checksums recorded (an older build)"
    click.echo(f"{path}: OK — {done.parts} parts, {done.rows:,} rows, {sums}, in {done.seconds:.1f} s")
