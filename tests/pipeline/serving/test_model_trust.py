"""A logged model is code, so ``hrm solve`` / ``hrm eval`` / ``hrm serve`` load only a model whose files are those
recorded when it was logged (pipeline.tracking.model_files): a line appended to its shipped code, a pickle dropped
beside it, a file removed or weights changed are refused in one line naming the files, before any of its code runs;
``--trust-model-files`` loads it on purpose (and then its code does run)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from test_serve import BIN, bare_env  # noqa: E402
from tiny_registry import PUZZLES, register_tiny_model  # noqa: E402

from pipeline.cli import main  # noqa: E402
from pipeline.tracking.model_files import TAG_PREFIX, version_model_id  # noqa: E402

MODEL = "hrm-trust-test"
URI = f"models:/{MODEL}@champion"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(folder, tracking URI, the registered model's files on disk, its run id, its model id)."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("trust")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    register_tiny_model(uri, MODEL, folder)
    client = MlflowClient(uri)
    version = client.get_model_version_by_alias(MODEL, "champion")
    model_id = version_model_id(version)
    location = client.get_logged_model(model_id).artifact_location
    files = Path(location.removeprefix("file://"))
    assert (files / "MLmodel").is_file(), location
    return folder, uri, files, version.run_id, model_id


@pytest.fixture
def tampered(store, tmp_path):
    """Restores the model's files after the test has changed them."""
    files = store[2]
    kept = tmp_path / "kept"
    shutil.copytree(files, kept)
    yield files
    shutil.rmtree(files)
    shutil.copytree(kept, files)


def solve(store, *extra: str):
    return CliRunner().invoke(main, ["solve", "--model", URI, "--tracking-uri", store[1], *extra, PUZZLES[0]])


def test_every_file_of_the_logged_model_is_recorded_in_its_run(store):
    from mlflow.tracking import MlflowClient

    _, uri, files, run_id, model_id = store
    recorded = json.loads(MlflowClient(uri).get_run(run_id).data.tags[TAG_PREFIX + model_id])
    on_disk = {p.relative_to(files).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in files.rglob("*") if p.is_file()}
    assert recorded == on_disk
    assert {"MLmodel", "code/pipeline/serving/pyfunc.py", "code/hrm/model.py"} <= recorded.keys()
    assert any(p.startswith("artifacts/export/") for p in recorded)
    assert len(MlflowClient(uri).get_run(run_id).data.tags[TAG_PREFIX + model_id]) < 6000  # MLflow's 8000 limit


def test_an_untouched_model_loads(store):
    result = solve(store)
    assert result.exit_code == 0, result.output
    assert "solution: " in result.output


RAN = "import pathlib, os; pathlib.Path(os.environ['HRM_TRUST_MARKER']).write_text('ran')\n"


@pytest.mark.parametrize("tamper, expected", [
    ("append code", "changed: model_file.py"),  # the file MLflow runs to build the model
    ("drop a pickle", "added: python_model.pkl"),
    ("remove a file", "missing: code/hrm/solve.py"),
    ("change the weights", "changed: artifacts/export/"),
])
def test_a_changed_model_is_refused_before_its_code_runs(store, tampered, tmp_path, monkeypatch, tamper, expected):
    marker = tmp_path / "ran"
    monkeypatch.setenv("HRM_TRUST_MARKER", str(marker))
    if tamper == "append code":
        with open(tampered / "model_file.py", "a") as f:
            f.write(RAN)
    elif tamper == "drop a pickle":
        (tampered / "python_model.pkl").write_bytes(b"\x80\x04N.")
    elif tamper == "remove a file":
        (tampered / "code/hrm/solve.py").unlink()
    else:
        weights = sorted((tampered / "artifacts/export").iterdir())[0]
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))
    result = solve(store)
    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: {URI}: its files are not those logged with it (") and expected in line, line
    assert line.endswith("--trust-model-files loads it anyway (its code then runs unchecked)"), line
    assert not marker.exists()
    if tamper == "append code":  # on purpose: loaded, and its code runs
        trusted = solve(store, "--trust-model-files")
        assert trusted.exit_code == 0, trusted.output
        assert marker.read_text() == "ran"


def test_a_model_without_a_record_is_refused(store, tampered):
    from mlflow.tracking import MlflowClient

    _, uri, _, run_id, model_id = store
    client = MlflowClient(uri)
    kept = client.get_run(run_id).data.tags[TAG_PREFIX + model_id]
    client.delete_tag(run_id, TAG_PREFIX + model_id)
    try:
        result = solve(store)
        assert result.exit_code == 1, result.output
        assert f"no record of its files (tag {TAG_PREFIX}{model_id} of run {run_id})" in result.output
        assert solve(store, "--trust-model-files").exit_code == 0
    finally:
        client.set_tag(run_id, TAG_PREFIX + model_id, kept)


def test_eval_and_serve_refuse_a_changed_model(store, tampered, tmp_path):
    with open(tampered / "code/hrm/model.py", "a") as f:
        f.write("\n# changed\n")
    folder, uri = store[0], store[1]
    data = tmp_path / "sudoku4"  # only its metadata is read before the model
    for split in ("train", "test"):
        (data / split).mkdir(parents=True)
    (data / "metadata.json").write_text(json.dumps({
        "task": "sudoku", "task_args": {"box": [2, 2]}, "vocab_size": 6, "seq_len": 16, "num_puzzle_identifiers": 1,
        "counts": {"train": 10, "test": 10}, "groups": {"train": 10, "test": 10}, "config": {}, "seed": 0,
        "fingerprint": "x"}))
    result = CliRunner().invoke(main, ["eval", "--model", URI, "--tracking-uri", uri, "--data", str(data)])
    assert result.exit_code == 1 and "changed: code/hrm/model.py" in result.output, result.output
    served = subprocess.run([str(BIN / "hrm"), "serve", "--model", URI, "--tracking-uri", uri, "--port", "1"],
                            env=bare_env(), cwd=folder, capture_output=True, text=True, timeout=120)
    assert served.returncode == 1, served.stderr[-2000:]
    assert served.stderr.strip().splitlines()[-1].startswith(f"Error: {URI}: its files are not those logged"), \
        served.stderr[-2000:]
