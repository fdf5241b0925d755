"""``hrm eval``, ``hrm solve``, ``hrm serve``: using a registered model from the MLflow registry."""

from __future__ import annotations

from pathlib import Path

import click

MODEL_OPTION = click.option("--model", "model_uri", required=True, help="e.g. models:/hrm-sudoku@champion")
TRACKING_OPTION = click.option("--tracking-uri", help="The MLflow store of the registry (default: "
                               "$MLFLOW_TRACKING_URI, else ./mlflow.db).")


MAX_STEPS_OPTION = click.option("--max-steps", type=int, help="ACT segments at the most (default: the model's M_max; "
                                "more is inference-time depth; capped at hrm.vote.MAX_STEPS_CAP).")
TRUST_OPTION = click.option("--trust-model-files", "trust", is_flag=True,
                            help="Load the model even when its files are not those recorded when it was logged (or "
                                 "none were recorded): its code then runs unchecked.")
VOTES_OPTION = click.option("--votes", default=1, show_default=True, type=int,
                            help="Vote over this many symmetries of each puzzle (the identity among them; 1: none).")


def load_model(model_uri: str, trust: bool):
    """The pyfunc model of ``model_uri``, loaded from a download whose files were checked against those recorded
    when it was logged (``pipeline.tracking.model_files``); a click error saying what differs. The download stays
    until the process ends (the model's code may import from it later)."""
    import atexit
    import shutil
    import tempfile

    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    from pipeline.tracking.model_files import ModelFilesChanged, fetch

    folder = tempfile.mkdtemp(prefix="hrm-model-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    try:
        return mlflow.pyfunc.load_model(str(fetch(model_uri, Path(folder), trust=trust)))
    except (MlflowException, ModelFilesChanged) as err:
        raise click.ClickException(str(getattr(err, "message", err))) from err


def check_flags(task, max_steps: int | None, votes: int) -> None:
    """A click error naming the flag when ``--max-steps`` / ``--votes`` are out of range or ``task`` (None: not
    checked) has not that many symmetries to vote over (hrm.vote.problem, the server's check too)."""
    from hrm.vote import problem as vote_problem

    problem = vote_problem(task, votes=votes, max_steps=max_steps)
    if problem is not None:
        name, message = problem
        raise click.BadParameter(message, param_hint=f"'--{name.replace('_', '-')}'")


def use_store(tracking_uri: str | None, model_uri: str) -> None:
    """Point MLflow at ``tracking_uri``, else $MLFLOW_TRACKING_URI, else ./mlflow.db; a sqlite store must exist
    (rather than MLflow quietly creating an empty one and answering that the model does not exist)."""
    import mlflow

    from pipeline.tracking.runs import quiet_downloads, sqlite_file, store_uri

    quiet_downloads()  # no "Downloading artifacts" bar for the model's files
    uri = store_uri(tracking_uri)
    db = sqlite_file(uri)
    if db is not None and model_uri.startswith("models:/") and not db.is_file():
        raise click.ClickException(f"no MLflow store here: {db} does not exist; run where `hrm demo` or "
                                   "`hrm train` ran, or give --tracking-uri (or set MLFLOW_TRACKING_URI)")
    mlflow.set_tracking_uri(uri)


@click.command()
@MODEL_OPTION
@TRACKING_OPTION
@click.option("--adaptive/--full", default=True, help="Stop where the model halts, or run all the segments.")
@MAX_STEPS_OPTION
@VOTES_OPTION
@TRUST_OPTION
@click.argument("puzzle", required=False)
@click.option("--file", "file", type=click.Path(exists=True, path_type=Path), help="Read the puzzle from a file.")
def solve(model_uri: str, tracking_uri: str | None, adaptive: bool, max_steps: int | None, votes: int, trust: bool,
          puzzle: str | None, file: Path | None) -> None:
    """Solve one puzzle with a registered model and print the answer."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from pipeline.serving.answers import (
        show_grid,  # imported before the model's shipped code joins sys.path
    )

    if (puzzle is None) == (file is None):
        raise click.UsageError("give the puzzle as an argument or with --file (one of them)")
    text = read_puzzle_file(file) if file else puzzle
    check_flags(None, max_steps, votes)  # the ranges, before the model's own code is put on sys.path
    use_store(tracking_uri, model_uri)
    model = load_model(model_uri, trust)
    params = {"adaptive": adaptive, **({"max_steps": max_steps} if max_steps is not None else {}),
              **({"votes": votes} if votes != 1 else {})}  # the defaults unsaid: an older model has no such params
    _check_declared(model, params)  # an older model (older code too) stops here when asked for more
    if votes > 1:
        check_flags(model.unwrap_python_model().task, max_steps, votes)
    try:
        out = model.predict(pd.DataFrame({"puzzle": [text]}), params=params)
    except MlflowException as err:
        raise click.ClickException(err.message) from err
    row = out.iloc[0]
    click.echo(show_grid(row["grid"]))
    click.echo(f"solution: {row['solution']}")
    click.echo(validity_line(row.get("valid", "absent")))
    if votes == 1:
        click.echo(f"halted after {row['steps']} segment(s), confidence {row['confidence']:.3f}")
    else:
        click.echo(f"voted over {votes} symmetries, about {row['steps']} segment(s) each, "
                   f"confidence {row['confidence']:.3f}")


def validity_line(valid) -> str:
    """What ``hrm solve`` says of an answer's ``valid`` column (``"absent"``: a model logged before it existed)."""
    if isinstance(valid, str):
        return "valid: not reported (a model logged before answers were checked: register it again)"
    if valid is None or valid != valid:  # None, or NaN from a DataFrame
        return "valid: unknown (this task has no rules to check an answer by: only its hidden output decides)"
    return ("valid: yes, the answer follows the puzzle's rules" if valid else
            "valid: NO, the answer breaks the puzzle's rules (wrong, whatever its confidence)")


MAX_PUZZLE_FILE = 1 << 20  # bytes: a puzzle file is a grid, a few kB at the most


def read_puzzle_file(path: Path) -> str:
    """The text of ``--file``; a click error naming it when it is too large or not text."""
    if path.stat().st_size > MAX_PUZZLE_FILE:
        raise click.BadParameter(f"{path} is {path.stat().st_size:,} bytes: a puzzle file is text of at most "
                                 f"{MAX_PUZZLE_FILE:,} bytes", param_hint="'--file'")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise click.BadParameter(f"{path} is not UTF-8 text (byte {err.start}): give a puzzle as text",
                                 param_hint="'--file'") from None
    if "\x00" in text:
        raise click.BadParameter(f"{path} holds NUL bytes: a binary file, not a puzzle", param_hint="'--file'")
    return text


def _check_declared(model, params: dict) -> None:
    """A click error naming the flag when the model's signature lacks one of ``params`` (a model logged before
    --max-steps / --votes existed: MLflow would drop the value with a mere warning)."""
    schema = model.metadata.signature.params if model.metadata.signature is not None else None
    declared = {p.name for p in schema.params} if schema is not None else set()
    for name in params:
        if name != "adaptive" and name not in declared:
            raise click.BadParameter(f"this model was logged before {name} could be set per request: register it "
                                     "again to use it", param_hint=f"'--{name.replace('_', '-')}'")


@click.command(name="eval")
@MODEL_OPTION
@TRACKING_OPTION
@click.option("--data", "data", required=True, type=click.Path(path_type=Path), help="A dataset folder.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "test"]))
@click.option("--limit", type=int, help="At most this many examples.")
@click.option("--batch-size", default=256, show_default=True)
@MAX_STEPS_OPTION
@VOTES_OPTION
@click.option("--seed", default=0, show_default=True, type=int, help="Draws the symmetries voted over.")
@TRUST_OPTION
@click.option("--experiment", help="The MLflow experiment of the eval run (default: the model's own run's).")
@click.option("--log/--no-log", "log_run", default=True, show_default=True,
              help="Log the metrics, the curves and their plot to a new MLflow eval run.")
def evaluate(model_uri: str, tracking_uri: str | None, data: Path, split: str, limit: int | None,
             batch_size: int, max_steps: int | None, votes: int, seed: int, trust: bool, experiment: str | None,
             log_run: bool) -> None:
    """Evaluate a registered model on a dataset split and print the metrics.

    Then exact accuracy against the segments run (1..--max-steps) and against the votes (1, 2, 4, …, --votes), with
    what each point cost; all logged to a new MLflow run (tag hrm.kind=eval) with a plot of both curves."""
    import time

    from pipeline.core.progress import Heartbeat, format_duration
    from pipeline.data.loader import load_split
    from pipeline.tracking.model_files import registered_version
    from pipeline.train.evaluate import evaluate as run_eval

    use_store(tracking_uri, model_uri)
    solver, meta, model_run = _solver_for(model_uri, data, trust)
    check_flags(solver.task, max_steps, votes)
    arrays = load_split(data, split, limit=limit)
    started = time.time()  # the eval run's start: the evaluation's, not the moment it is logged
    began = time.perf_counter()
    with Heartbeat(lambda s: f"evaluating {len(arrays['inputs']):,} puzzles, {format_duration(s)} elapsed"):
        metrics = run_eval(solver.model, arrays, solver.task, batch_size=batch_size, device="cpu",
                           max_steps=max_steps)
    seconds = time.perf_counter() - began
    for key, value in sorted(metrics.items()):
        click.echo(f"{key:36} {value:.4f}")
    K = max_steps or solver.model.config.halt_max_steps
    by_segment, by_votes = _curves(solver, arrays, metrics, seconds, K, votes=votes, seed=seed,
                                   batch_size=batch_size)
    _echo_curves(by_segment, by_votes)
    if log_run:
        run_id, name = _log_eval(model_run, experiment, metrics, by_segment, by_votes,
                                 {"model": model_uri, "data": meta.path, "split": split, "limit": limit,
                                  "max_steps": K, "votes": votes, "seed": seed},
                                 model=registered_version(model_uri), meta=meta, started=started)
        click.echo(f"logged to MLflow run {run_id} (experiment {name})")


def _curves(solver, arrays, metrics: dict[str, float], seconds: float, K: int, *, votes: int, seed: int,
            batch_size: int) -> tuple[list[dict], list[dict]]:
    """(exact accuracy after each segment 1..K, from the evaluation's metrics; each segment's wall time is its
    share of the evaluation's, s/K of it), (exact accuracy voted over N = 1, 2, 4, …, ``votes``, each run and
    timed on its own; only the evaluation's own point when ``votes`` is 1)."""
    from pipeline.evaluate.curves import vote_counts, votes_curve

    by_segment = [{"segment": s, "exact_accuracy": metrics[f"eval/exact_accuracy_step_{s}"], "forward_passes": s,
                   "seconds": seconds * s / K} for s in range(1, K + 1)]
    if votes == 1:
        by_votes = [{"votes": 1, "exact_accuracy": metrics["eval/exact_accuracy"], "forward_passes": K,
                     "seconds": seconds}]
    else:
        by_votes = votes_curve(solver.model, arrays, solver.task, counts=vote_counts(votes), max_steps=K, seed=seed,
                               batch_size=batch_size)
    return by_segment, by_votes


def _echo_curves(by_segment: list[dict], by_votes: list[dict]) -> None:
    """The two curves as text tables: one line per point with its cost (forward passes per puzzle, seconds)."""
    for x, title in (("segment", "segments run"), ("votes", "votes")):
        click.echo(f"exact accuracy against {title}:")
        click.echo(f"{x:>10} {'exact':>8} {'passes':>8} {'seconds':>9}")
        for p in by_segment if x == "segment" else by_votes:
            click.echo(f"{p[x]:10d} {p['exact_accuracy']:8.4f} {p['forward_passes']:8d} {p['seconds']:9.2f}")


def _log_eval(model_run: str | None, experiment: str | None, metrics: dict[str, float],
              by_segment: list[dict], by_votes: list[dict], params: dict, *, model=None, meta=None,
              started: float | None = None) -> tuple[str, str]:
    """A new MLflow run (in ``experiment``, default the model's run's), as MLflow has an evaluation: ``params``
    (with the resolved ``model_version`` of ``model``, a registry ModelVersion), the dataset ``meta`` as its input
    (context ``eval``), its start at ``started``; the metrics (step 0) linked to the model's LoggedModel and the
    dataset; each curve once (``eval/<y>_by_segment`` with step = segment, ``eval/<y>_by_votes`` with step = votes,
    for y in exact_accuracy, forward_passes, seconds: not also as one ``eval/exact_accuracy_step_<s>`` metric a
    segment) and ``eval_curves.png``; returns (its id, the experiment's name)."""
    import time

    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from pipeline.evaluate.curves import plot_curves
    from pipeline.tracking import runs
    from pipeline.tracking.model_files import version_model_id

    uri = mlflow.get_tracking_uri()
    name = experiment or runs.experiment_of_model(uri, model_run, "hrm-eval")
    tags = {"hrm.kind": "eval", **({"hrm.model_run_id": model_run} if model_run else {})}
    model_id = version_model_id(model) if model is not None else None
    if model is not None:
        params = {**params, "model_version": f"{model.name}/{model.version}"}
        tags.update({"hrm.model_name": model.name, "hrm.model_version": str(model.version),
                     **({"hrm.model_id": model_id} if model_id else {})})
    run_id = runs.start_run(uri, name, "eval", params, tags, [], dataset=meta, dataset_context="eval",
                            start_time=started)
    try:
        now = int(time.time() * 1000)
        dataset = runs.dataset_input(meta) if meta is not None else None
        linked = {"model_id": model_id,
                  **({"dataset_name": dataset.name, "dataset_digest": dataset.digest} if dataset else {})}
        MlflowClient(uri).log_batch(run_id, metrics=[
            Metric(k, float(v), now, 0, **linked) for k, v in metrics.items()
            if not k.startswith("eval/exact_accuracy_step_")])
        for x, points in (("segment", by_segment), ("votes", by_votes)):
            for y in ("exact_accuracy", "forward_passes", "seconds"):
                runs.log_curve(uri, run_id, f"eval/{y}_by_{x}", {p[x]: p[y] for p in points})
        runs.log_figure(uri, run_id, plot_curves(by_segment, by_votes), "eval_curves.png")
    except Exception:
        runs.end_run(uri, run_id, "FAILED")
        raise
    runs.end_run(uri, run_id)
    return run_id, name


def _solver_for(model_uri: str, data: Path, trust: bool):
    """(the registered model's HRMSolver, the dataset's metadata, the id of the run that logged the model or None);
    a click error when either cannot be read or the model solves another task or sequence length than the dataset
    holds."""
    from pipeline.data.loader import read_metadata

    try:
        meta = read_metadata(data)
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    loaded = load_model(model_uri, trust)
    solver = loaded.unwrap_python_model()
    if solver.info["task"] != meta.task or solver.model.config.seq_len != meta.seq_len:
        raise click.ClickException(f"the model solves {solver.info['task']} (length {solver.model.config.seq_len}); "
                                   f"{data} holds {meta.task} (length {meta.seq_len})")
    return solver, meta, getattr(loaded.metadata, "run_id", None)


@click.command()
@MODEL_OPTION
@TRACKING_OPTION
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5001, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int)
@click.option("--env-manager", default="local", show_default=True, type=click.Choice(["local", "virtualenv"]),
              help="local: this environment; virtualenv: a fresh one built from the model's pinned requirements "
                   "(needs pyenv on PATH; minutes the first time).")
@click.option("--max-puzzles", type=click.IntRange(min=1), help="Puzzles per request at most; more are answered "
              "413 (default: $HRM_SERVE_MAX_PUZZLES, else 2000).")
@click.option("--max-work", type=click.IntRange(min=1), help="Puzzles × votes × segments per request at most; more "
              "are answered 413 (default: $HRM_SERVE_MAX_WORK, else 65536).")
@click.option("--batch", type=click.IntRange(min=1), help="Rows (a puzzle under one voted symmetry) through the model "
              "at a time: bounds a request's memory (default: $HRM_SERVE_BATCH, else 20,736 tokens' worth: 256 "
              "rows of 9×9 Sudoku, 23 of 30×30 grids).")
@click.option("--max-bytes", type=click.IntRange(min=1), help="Bytes of a request's body at most; more are answered "
              "413 before MLflow reads them (default: $HRM_SERVE_MAX_BYTES, else 16 MiB).")
@TRUST_OPTION
@click.option("--grace-seconds", default=10.0, show_default=True, type=click.FloatRange(min=0),
              help="On SIGTERM / SIGINT / SIGHUP, how long the server may take to stop before it is killed.")
def serve(model_uri: str, tracking_uri: str | None, host: str, port: int, workers: int, env_manager: str,
          max_puzzles: int | None, max_work: int | None, batch: int | None, max_bytes: int | None, trust: bool,
          grace_seconds: float) -> None:
    """Serve a registered model over REST (MLflow's scoring server: POST /invocations, GET /ping).

    What ``mlflow models serve`` does, with a guard in front that refuses a body past --max-bytes (413) or JSON
    nested too deep (400) before MLflow reads it (pipeline.serving.server). Runs with this environment's programs on
    PATH (uvicorn is started from PATH: without the venv activated it is not found) and without download progress
    bars, as a child in its own process group: a SIGTERM / SIGINT / SIGHUP here stops the whole group, killed after
    --grace-seconds (a request being computed would otherwise keep it alive), and the group dies with hrm serve
    however that dies. Exits with the server's status (128 + N when signal N ended it).
    """
    import os
    import sys

    import mlflow
    from mlflow.exceptions import MlflowException

    from pipeline.serving.guard import MAX_BYTES_ENV, max_bytes_from
    from pipeline.serving.pyfunc import (
        BATCH_ENV,
        MAX_PUZZLES_ENV,
        MAX_WORK_ENV,
        serving_limits,
    )
    from pipeline.tracking.runs import NO_PROGRESS_BARS

    limits = {name: str(value) for name, value in ((MAX_PUZZLES_ENV, max_puzzles), (MAX_WORK_ENV, max_work),
                                                   (BATCH_ENV, batch), (MAX_BYTES_ENV, max_bytes))
              if value is not None}
    try:
        serving_limits({**os.environ, **limits})  # a bad $HRM_SERVE_* named now, not in the server's log
        max_bytes_from({**os.environ, **limits})
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    use_store(tracking_uri, model_uri)
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in NO_PROGRESS_BARS.items()}, **limits,
           "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
           "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    import shutil
    import tempfile

    from pipeline.serving.supervise import run_group
    from pipeline.tracking.model_files import ModelFilesChanged, fetch

    folder = Path(tempfile.mkdtemp(prefix="hrm-serve-"))
    try:
        try:
            local = fetch(model_uri, folder, trust=trust)  # served from the folder checked, not fetched again
        except (MlflowException, ModelFilesChanged) as err:
            raise click.ClickException(str(getattr(err, "message", err))) from err
        args = [sys.executable, "-m", "pipeline.serving.server", str(local), host, str(port), str(workers),
                env_manager]
        code = run_group(args, env, grace_seconds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    click.get_current_context().exit(code)
