"""The end-to-end demo (README's first command, ``hrm demo``: pipeline.cli.demo): data → training → evaluation →
registry → one new puzzle solved."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click
import numpy as np

log = logging.getLogger(__name__)


def fresh_puzzle(data_cfg, seen: set[bytes], seed: int):
    """A puzzle generated now, with the dataset's settings, that is in neither split: (task, inputs, labels)."""
    from hrm.tasks.sudoku import SudokuTask
    from pipeline.data.build_sudoku import top_up_givens

    sec = data_cfg.sudoku
    task = SudokuTask(sec.box, sec.min_rating)
    for attempt in range(100):
        p, s, _, _ = task.generate_many(seed + attempt, 1)
        p = top_up_givens(p.reshape(1, -1), s.reshape(1, -1), sec.givens, seed + attempt)[0].reshape(p.shape[1:])
        inputs, labels = task.encode((p, s[0]))
        if inputs.tobytes() not in seen:
            return task, inputs, labels
    raise RuntimeError("could not draw a puzzle outside the dataset")


def run_demo(workdir: Path, data_config: Path, train_config: Path) -> None:
    """Build the dataset of ``data_config``, train on it with ``train_config`` (runs and the MLflow store under
    ``workdir``), then solve a puzzle from neither split with the registered champion; prints each stage."""
    from pipeline.data.build import build_dataset
    from pipeline.data.config import load_config
    from pipeline.tracking.runs import store_uri
    from pipeline.train.config import load_train_config, resolve_tracking_uri
    from pipeline.train.run import train

    started = time.time()
    click.secho("1/4 building the dataset with Ray Data", bold=True)
    data_cfg = load_config(data_config)
    built = build_dataset(data_cfg, workdir / "data" / data_cfg.name)
    click.echo(f"    {built.path}: {built.counts['train']} train / {built.counts['test']} test examples")

    click.secho("2/4 training HRM with Ray Train (tracked in MLflow)", bold=True)
    sets = {"name": f"demo-{time.strftime('%Y%m%d-%H%M%S')}", "data": str(built.path),
            "storage_path": str(workdir / "runs")}
    cfg = load_train_config(train_config, sets)
    cfg.tracking.tracking_uri = store_uri(cfg.tracking.tracking_uri, workdir)  # embedded: in the workdir
    outcome = train(cfg, config_file=train_config)
    m = outcome.metrics
    click.secho(f"3/4 held-out puzzles: exact accuracy {m['eval/exact_accuracy']:.1%}, "
                f"cell accuracy {m['eval/accuracy']:.1%} ({int(m['eval/count'])} puzzles)", bold=True)

    click.secho("4/4 a new puzzle, solved by the registered model", bold=True)
    uri = resolve_tracking_uri(cfg)
    solve_new_puzzle(data_cfg, built.path, uri, f"models:/{cfg.tracking.model_name or 'hrm-sudoku'}@champion")
    click.echo(f"\ndone in {(time.time() - started) / 60:.1f} min. Look at the run and the model:")
    click.echo(f"    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false .venv/bin/mlflow ui --backend-store-uri {uri} --workers 1"
               "    # then open http://127.0.0.1:5000")


def solve_new_puzzle(data_cfg, data_path: Path, tracking_uri: str, model_uri: str) -> None:
    """Draw a puzzle in neither split of the dataset at ``data_path``, have the registered ``model_uri`` (in the
    MLflow store ``tracking_uri``) solve it and print the puzzle, the answer and whether it is right."""
    import mlflow.pyfunc
    import pandas as pd

    from pipeline.data.loader import load_split
    from pipeline.serving.answers import show_grid

    seen = {bytes(x.astype(np.uint8)) for split in ("train", "test") for x in load_split(data_path, split)["inputs"]}
    task, inputs, labels = fresh_puzzle(data_cfg, seen, seed=int(time.time()))
    mlflow.set_tracking_uri(tracking_uri)
    out = mlflow.pyfunc.load_model(model_uri).predict(pd.DataFrame({"puzzle": [task.render(inputs)]}))
    row = out.iloc[0]
    right = json.loads(row["grid"]) == task.decode(labels).tolist()  # the served grid, in the task's alphabet
    click.echo(f"puzzle:\n{task.render(inputs)}\n\n{model_uri} answers ({row['steps']} ACT steps, "
               f"confidence {row['confidence']:.2f}):\n{show_grid(row['grid'])}\n")
    click.echo("correct!" if right else f"not quite; the solution is:\n{task.render(labels)}")
