"""The three notebooks run headless (nbclient, this venv's Python as the kernel) on tiny artifacts: small datasets,
a tiny registered model, a sweep-shaped set of MLflow runs. The repository keeps them with outputs cleared."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline" / "serving"))
from tiny_registry import register_tiny_model  # noqa: E402

from pipeline.tracking import runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_puzzles.ipynb", "02_reasoning.ipynb", "03_sweeps.ipynb"]
MODEL = "hrm-notebook-test"


def run_notebook(name: str, workdir: Path, timeout: int = 300) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
    client.execute()  # a failing cell raises CellExecutionError with its traceback
    return nb


def outputs(nb, kind: str) -> list:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
            if o.get("output_type") in ("display_data", "execute_result") and kind in o.get("data", {})]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    raw = json.loads((NOTEBOOKS / name).read_text())
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{name}: clear its outputs"
            assert "def " not in "".join(cell["source"]), f"{name}: logic belongs in pipeline/explore"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("notebooks")


@pytest.fixture(scope="module")
def datasets(workdir):
    folder = workdir / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HRM_NB_DATA", str(folder))
        nb = run_notebook("01_puzzles.ipynb", workdir, timeout=400)
    return folder, nb


@pytest.mark.slow
def test_01_puzzles_builds_and_draws_every_task(datasets):
    folder, nb = datasets
    for name in ("nb-sudoku", "nb-maze", "nb-arc"):
        assert (folder / name / "metadata.json").is_file()
    assert len(outputs(nb, "image/png")) == 6  # examples + augmentations of each task


@pytest.mark.slow
def test_02_reasoning_traces_a_registered_model(workdir, datasets, monkeypatch):
    folder, _ = datasets
    uri = f"sqlite:///{workdir / 'model.db'}"
    register_tiny_model(uri, MODEL, workdir / "model", box=(2, 3), halt_max_steps=3)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("HRM_MODEL_URI", f"models:/{MODEL}@champion")
    monkeypatch.setenv("HRM_DATA", str(folder / "nb-sudoku"))  # 6×6 Sudoku: the model's task
    monkeypatch.setenv("HRM_NB_PUZZLES", "2")
    nb = run_notebook("02_reasoning.ipynb", workdir)
    assert len(outputs(nb, "image/png")) == 2  # the traces, the Q-values
    tables = [o["data"]["text/plain"] for o in outputs(nb, "text/html")]
    assert any("q_continue" in t and "cells_changed" in t for t in tables)  # the per-segment table
    assert any("halts_at" in t and "correct_at_halt" in t for t in tables)  # answers were known: from HRM_DATA


def log_sweep(uri: str, experiment: str) -> str:
    """A sweep as `hrm tune` records it: a parent run, one nested run per trial with its params and eval metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = runs.experiment_id(client, uri, experiment)
    parent = client.create_run(exp, run_name="depth-sweep").info.run_id
    trials = [(m, n, t) for m in (1, 2, 4) for n, t in ((1, 1), (2, 2))]
    for i, (m, n, t) in enumerate(trials):
        run = client.create_run(exp, run_name=f"depth-sweep-{i:05d}",
                                tags={"mlflow.parentRunId": parent, "trial_id": f"t{i:05d}", "tune.status": "done"})
        rid = run.info.run_id
        for key, value in {"flavour": "debug", "model.halt_max_steps": m, "model.h_cycles": n,
                           "model.l_cycles": t}.items():
            client.log_param(rid, key, value)
        depth = m * n * (t + 1)
        for step, scale in ((10, 0.5), (20, 1.0)):
            client.log_metric(rid, "eval/exact_accuracy", scale * depth / 40, step=step)
        client.log_metric(rid, "eval/steps", (m + 1) / 2, step=20)
        for s in range(1, m + 1):
            client.log_metric(rid, f"eval/exact_accuracy_step_{s}", s * n * (t + 1) / 40, step=20)
        client.set_terminated(rid)
    client.set_terminated(parent)
    return parent


@pytest.mark.slow
def test_03_sweeps_plots_accuracy_against_depth(workdir, monkeypatch):
    uri = f"sqlite:///{workdir / 'sweep.db'}"
    log_sweep(uri, "hrm-sweeps")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("HRM_EXPERIMENT", "hrm-sweeps")
    monkeypatch.setenv("HRM_SWEEP", "depth-sweep")
    nb = run_notebook("03_sweeps.ipynb", workdir)
    assert len(outputs(nb, "image/png")) == 1
    table = outputs(nb, "text/html")[0]["data"]["text/plain"]
    assert table.count("done") == 6 and "max_depth" in table


def test_sweep_table_reads_depth_and_compute(tmp_path):
    from pipeline.explore import sweeps

    uri = f"sqlite:///{tmp_path / 'sweep.db'}"
    parent = log_sweep(uri, "hrm")
    assert sweeps.find_sweep(uri, "hrm") == parent
    table = sweeps.trials(uri, parent)
    assert len(table) == 6 and set(table["halt_max_steps"]) == {1, 2, 4}
    deepest = table.iloc[-1]
    assert (deepest["halt_max_steps"], deepest["h_cycles"], deepest["l_cycles"]) == (4, 2, 2)
    assert deepest["per_segment"] == 4 and deepest["max_depth"] == 16  # N·T = 2·2, M_max = 4
    from hrm.config import model_config
    from pipeline.tune.report import compute_per_example

    # compute used: the sweep report's compute_per_example (at M_max 4) with the mean halting segment (2.5) instead
    per_example = compute_per_example(model_config("debug", halt_max_steps=4, h_cycles=2, l_cycles=2))
    assert deepest["best_accuracy"] == pytest.approx(24 / 40) and deepest["compute"] == pytest.approx(
        2.5 * per_example / 4)
    curves = sweeps.depth_curves(table)
    assert len(curves) == 2 * (1 + 2 + 4) and curves["depth"].max() == 16


def test_make_lab_installs_jupyterlab_and_opens_the_notebooks(tmp_path):
    """README's command for the notebooks: `make lab` installs the `notebooks` extra (JupyterLab) into the venv, then
    opens notebooks/ (shown with -n, nothing run: a fresh venv folder that does not exist)."""
    import subprocess
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("jupyterlab") for req in extras["notebooks"])
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # not make test's
    plan = subprocess.run(["make", "--no-print-directory", "-n", "lab", f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                          capture_output=True, text=True, check=True, env=env).stdout
    install = plan.index('pip install --quiet -e ".[notebooks]"')
    assert plan.index("venv/bin/jupyter lab", install) > install and plan.rstrip().endswith("notebooks/")
    assert "`make lab`" in (ROOT / "README.md").read_text()
