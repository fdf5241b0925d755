"""``hrm train``, ``hrm eval``, ``hrm solve``: the training job and using its registered models."""

from __future__ import annotations

from pathlib import Path

import click


def parse_sets(pairs: tuple[str, ...]) -> dict:
    """``--set a.b=value`` pairs, values read as YAML (numbers as Python writes them, booleans, null, lists)."""
    from pipeline.yaml_io import parse

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--set")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = parse(value, f"--set {key.strip()}")
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--set") from None
    return out


def load_config(config: Path | None, sets: tuple[str, ...]):
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
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as err:
        raise click.ClickException(str(err)) from err
    report(outcome)


def report(outcome) -> None:
    m = outcome.metrics
    click.echo(f"best checkpoint: eval exact accuracy {m.get('eval/exact_accuracy', float('nan')):.3f}, token "
               f"accuracy {m.get('eval/accuracy', float('nan')):.3f} (step {m.get('step', '?')})")
    click.echo(f"MLflow run: {outcome.run_id}")
    if outcome.model_version:
        state = "now the champion" if outcome.champion else "not better than the champion"
        click.echo(f"model: {outcome.model_uri} ({state})")


def use_store(tracking_uri: str | None, model_uri: str) -> None:
    """Point MLflow at ``tracking_uri``, else $MLFLOW_TRACKING_URI, else ./mlflow.db; a sqlite store must exist
    (rather than MLflow quietly creating an empty one and answering that the model does not exist)."""
    import mlflow

    from pipeline.tracking import quiet_downloads, sqlite_file, store_uri

    quiet_downloads()  # no "Downloading artifacts" bar for the model's files
    uri = store_uri(tracking_uri)
    db = sqlite_file(uri)
    if db is not None and model_uri.startswith("models:/") and not db.is_file():
        raise click.ClickException(f"no MLflow store here: {db} does not exist; run where `hrm demo` or "
                                   "`hrm train` ran, or give --tracking-uri (or set MLFLOW_TRACKING_URI)")
    mlflow.set_tracking_uri(uri)


TRACKING_OPTION = click.option("--tracking-uri", help="The MLflow store of the registry (default: "
                               "$MLFLOW_TRACKING_URI, else ./mlflow.db).")


@click.command()
@click.option("--model", "model_uri", required=True, help="e.g. models:/hrm-sudoku@champion")
@TRACKING_OPTION
@click.option("--adaptive/--full", default=True, help="Stop where the model halts, or run all M_max segments.")
@click.argument("puzzle", required=False)
@click.option("--file", "file", type=click.Path(exists=True, path_type=Path), help="Read the puzzle from a file.")
def solve(model_uri: str, tracking_uri: str | None, adaptive: bool, puzzle: str | None,
          file: Path | None) -> None:
    """Solve one puzzle with a registered model and print the answer."""
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.exceptions import MlflowException

    if (puzzle is None) == (file is None):
        raise click.UsageError("give the puzzle as an argument or with --file (one of them)")
    text = file.read_text() if file else puzzle
    use_store(tracking_uri, model_uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
        out = model.predict(pd.DataFrame({"puzzle": [text]}), params={"adaptive": adaptive})
    except MlflowException as err:
        raise click.ClickException(err.message) from err
    row = out.iloc[0]
    click.echo(show_grid(row["grid"]))
    click.echo(f"solution: {row['solution']}")
    click.echo(f"halted after {row['steps']} segment(s), confidence {row['confidence']:.3f}")


def show_grid(grid_json: str) -> str:
    """The pyfunc's JSON grid, one row per line (cells spaced when they are numbers)."""
    import json

    grid = json.loads(grid_json)
    if grid is None:
        return "(no well-formed grid)"
    return "\n".join((" " if row and not isinstance(row[0], str) else "").join(str(c) for c in row) for row in grid)


@click.command(name="eval")
@click.option("--model", "model_uri", required=True, help="e.g. models:/hrm-sudoku@champion")
@TRACKING_OPTION
@click.option("--data", "data", required=True, type=click.Path(path_type=Path), help="A dataset folder.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "test"]))
@click.option("--limit", type=int, help="At most this many examples.")
@click.option("--batch-size", default=256, show_default=True)
def evaluate(model_uri: str, tracking_uri: str | None, data: Path, split: str, limit: int | None,
             batch_size: int) -> None:
    """Evaluate a registered model on a dataset split and print the metrics."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    from pipeline.data.loader import load_split, read_metadata
    from pipeline.train.evaluate import evaluate as run_eval

    use_store(tracking_uri, model_uri)
    try:
        meta = read_metadata(data)
        solver = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    except (FileNotFoundError, ValueError, MlflowException) as err:
        raise click.ClickException(str(getattr(err, "message", err))) from err
    if solver.info["task"] != meta.task or solver.model.config.seq_len != meta.seq_len:
        raise click.ClickException(f"the model solves {solver.info['task']} (length {solver.model.config.seq_len}); "
                                   f"{data} holds {meta.task} (length {meta.seq_len})")
    arrays = load_split(data, split, limit=limit)
    metrics = run_eval(solver.model, arrays, solver.task, batch_size=batch_size, device="cpu")
    for key, value in sorted(metrics.items()):
        click.echo(f"{key:36} {value:.4f}")


@click.command()
@click.option("--model", "model_uri", required=True, help="e.g. models:/hrm-sudoku@champion")
@TRACKING_OPTION
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5001, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int)
@click.option("--env-manager", default="local", show_default=True, type=click.Choice(["local", "virtualenv"]),
              help="local: this environment; virtualenv: a fresh one built from the model's pinned requirements "
                   "(needs pyenv on PATH; minutes the first time).")
def serve(model_uri: str, tracking_uri: str | None, host: str, port: int, workers: int, env_manager: str) -> None:
    """Serve a registered model over REST (MLflow's scoring server: POST /invocations, GET /ping).

    Runs ``mlflow models serve`` of this environment with its programs on PATH (MLflow starts ``uvicorn`` from
    PATH: without the venv activated it is not found) and without download progress bars."""
    import os
    import sys

    from pipeline.tracking import NO_PROGRESS_BARS

    use_store(tracking_uri, model_uri)
    import mlflow

    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in NO_PROGRESS_BARS.items()},
           "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
           "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    args = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "-h", host, "-p", str(port),
            "-w", str(workers), "--env-manager", env_manager]
    os.execve(sys.executable, args, env)  # the server replaces this process: signals reach it directly
