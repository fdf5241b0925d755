"""``hrm eval``, ``hrm solve``, ``hrm serve``: using a registered model from the MLflow registry."""

from __future__ import annotations

from pathlib import Path

import click

MODEL_OPTION = click.option("--model", "model_uri", required=True, help="e.g. models:/hrm-sudoku@champion")
TRACKING_OPTION = click.option("--tracking-uri", help="The MLflow store of the registry (default: "
                               "$MLFLOW_TRACKING_URI, else ./mlflow.db).")


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


def show_grid(grid_json: str) -> str:
    """The pyfunc's JSON grid -> text, one row per line (cells spaced when they are numbers)."""
    import json

    grid = json.loads(grid_json)
    if grid is None:
        return "(no well-formed grid)"
    return "\n".join((" " if row and not isinstance(row[0], str) else "").join(str(c) for c in row) for row in grid)


@click.command()
@MODEL_OPTION
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


@click.command(name="eval")
@MODEL_OPTION
@TRACKING_OPTION
@click.option("--data", "data", required=True, type=click.Path(path_type=Path), help="A dataset folder.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "test"]))
@click.option("--limit", type=int, help="At most this many examples.")
@click.option("--batch-size", default=256, show_default=True)
def evaluate(model_uri: str, tracking_uri: str | None, data: Path, split: str, limit: int | None,
             batch_size: int) -> None:
    """Evaluate a registered model on a dataset split and print the metrics."""
    from pipeline.data.loader import load_split
    from pipeline.train.evaluate import evaluate as run_eval

    use_store(tracking_uri, model_uri)
    solver, meta = _solver_for(model_uri, data)
    arrays = load_split(data, split, limit=limit)
    metrics = run_eval(solver.model, arrays, solver.task, batch_size=batch_size, device="cpu")
    for key, value in sorted(metrics.items()):
        click.echo(f"{key:36} {value:.4f}")


def _solver_for(model_uri: str, data: Path):
    """(the registered model's HRMSolver, the dataset's metadata); a click error when either cannot be read or
    the model solves another task or sequence length than the dataset holds."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    from pipeline.data.loader import read_metadata

    try:
        meta = read_metadata(data)
        solver = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    except (FileNotFoundError, ValueError, MlflowException) as err:
        raise click.ClickException(str(getattr(err, "message", err))) from err
    if solver.info["task"] != meta.task or solver.model.config.seq_len != meta.seq_len:
        raise click.ClickException(f"the model solves {solver.info['task']} (length {solver.model.config.seq_len}); "
                                   f"{data} holds {meta.task} (length {meta.seq_len})")
    return solver, meta


@click.command()
@MODEL_OPTION
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

    import mlflow

    from pipeline.tracking import NO_PROGRESS_BARS

    use_store(tracking_uri, model_uri)
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in NO_PROGRESS_BARS.items()},
           "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
           "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    args = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "-h", host, "-p", str(port),
            "-w", str(workers), "--env-manager", env_manager]
    os.execve(sys.executable, args, env)  # the server replaces this process: signals reach it directly
