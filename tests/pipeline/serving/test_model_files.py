"""What a logged model holds: the checkpoint's weights + config (no optimizer or RNG state), only the code serving
imports, requirements pinned to the installed versions; its eval metrics linked to it at the checkpoint's step."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from hrm.config import model_config
from hrm.ema import EMA
from hrm.model import HRM
from hrm.step import OptimConfig, build_optimizers
from hrm.tasks.sudoku import SudokuTask
from pipeline.serving.code import code_files, served_modules
from pipeline.tracking import registry, runs
from pipeline.train import checkpoint

pytestmark = pytest.mark.slow  # logs a model (≈ 5 s) and loads it in a fresh interpreter
PUZZLE = "1.3.....2...4..1"
METRICS = {"eval/exact_accuracy": 0.25, "eval/accuracy": 0.75}


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A training checkpoint (state.pt + export) logged through the training job's own code; the model folder."""
    import mlflow

    tmp = tmp_path_factory.mktemp("model_files")
    task = SudokuTask((2, 2))
    config = model_config("debug", vocab_size=task.vocab_size, seq_len=task.seq_len, num_puzzle_identifiers=1,
                          halt_max_steps=2, forward_dtype="float32")
    model = HRM(config)
    opt, ema = build_optimizers(model, OptimConfig()), EMA(model, 0.99)
    ckpt = tmp / "checkpoint_000001"
    checkpoint.save(ckpt, model=model, opt=opt, ema=ema, position=checkpoint.Position(step=3),
                    rng_states=[checkpoint.rng_state()],
                    export_info={"task": "sudoku", "task_args": {"box": [2, 2]}, "metrics": {**METRICS, "step": 3}})
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    run_id = runs.start_run(uri, "files", "run", {}, {}, [])
    info = registry.log_model(uri, run_id, ckpt, "hrm-files", [PUZZLE], step=3, metrics=METRICS)
    runs.end_run(uri, run_id)
    mlflow.set_tracking_uri(uri)
    folder = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp / "downloaded")))
    return uri, info, ckpt, folder


def test_the_model_ships_weights_and_config_only(logged):
    _, _, ckpt, folder = logged
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith("state.pt")]
    assert sorted(p.name for p in (folder / "artifacts" / "export").iterdir()) == ["model.json", "model.pt"]
    weights = (folder / "artifacts" / "export" / "model.pt").stat().st_size
    assert (ckpt / "state.pt").stat().st_size > 1.9 * weights  # what it leaves out: training weights, EMA, optimizer
    total = sum((folder / f).stat().st_size for f in files)
    assert total < weights + 600_000  # weights + config, code, MLmodel and environment files


def test_requirements_are_pinned_to_the_installed_versions(logged):
    folder = logged[3]
    lines = (folder / "requirements.txt").read_text().split()
    expected = {name: version(name).split("+")[0] for name in ("mlflow", "numba", "numpy", "pandas", "pydantic", "torch")}
    assert lines == sorted(f"{name}=={v}" for name, v in expected.items())
    assert version("torch").startswith(expected["torch"])  # 2.13.0 matches the installed 2.13.0+cpu build


def test_the_code_is_what_serving_imports(logged):
    folder = logged[3]
    shipped = sorted(str(p.relative_to(folder / "code")) for p in (folder / "code").rglob("*.py"))
    assert shipped == [str(p) for p in code_files()]
    assert "pipeline/tracking/runs.py" not in shipped and "pipeline/train/run.py" not in shipped
    assert not [p for p in (folder / "code").rglob("*") if "__pycache__" in p.parts]


def test_the_model_loads_and_answers_from_its_own_code_only(logged, tmp_path):
    """In a fresh interpreter, loading and predicting imports modules of hrm/pipeline from the model's code/ only,
    exactly those ``served_modules`` names."""
    folder = logged[3]
    script = f"""
import json, sys
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model({str(folder)!r})
out = model.predict(pd.DataFrame({{"puzzle": [{PUZZLE!r}]}}))
ours = {{name: getattr(m, "__file__", None) for name, m in sys.modules.items()
        if name.split(".")[0] in ("hrm", "pipeline")}}
print(json.dumps({{"modules": ours, "answer": out.to_dict("records")}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    code = str(folder / "code")
    assert {name: path for name, path in result["modules"].items() if not str(path).startswith(code)} == {}
    assert set(result["modules"]) == set(served_modules()[0])
    answer = result["answer"][0]
    assert len(answer["solution"]) == 16 and len(json.loads(answer["grid"])) == 4


def test_the_logged_model_holds_the_checkpoints_metrics(logged):
    from mlflow.tracking import MlflowClient

    uri, info, _, _ = logged
    model = MlflowClient(uri).get_logged_model(info.model_id)
    linked = {m.key: (m.value, m.step) for m in model.metrics}
    assert linked == {key: (value, 3) for key, value in METRICS.items()}
    assert model.source_run_id == info.run_id
