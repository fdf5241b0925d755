"""Where a run's artifacts land in the embedded sqlite store, whatever directory the job runs in."""

from pathlib import Path

import pytest

from pipeline import tracking


@pytest.mark.parametrize(("uri", "expected"), [
    ("sqlite:////srv/store/mlflow.db", Path("/srv/store/mlruns")),
    ("sqlite:///mlflow.db", Path.cwd() / "mlruns"),
    ("sqlite:///:memory:", None),
    ("http://127.0.0.1:5000", None),
    ("databricks", None),
])
def test_artifact_root(uri, expected):
    assert tracking.artifact_root(uri) == expected


def test_run_artifacts_sit_beside_the_database(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    config = tmp_path / "train_config.json"
    config.write_text("{}")
    run_id = tracking.start_run(uri, "sudoku / demo", "run-1", {"lr": 0.001}, {}, [config])
    tracking.end_run(uri, run_id)
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.params == {"lr": "0.001"}
    assert (store / "mlruns" / "sudoku_demo" / run_id / "artifacts" / "train_config.json").is_file()
    assert list(elsewhere.iterdir()) == []
    # the experiment, once made, is found again by name
    assert tracking.start_run(uri, "sudoku / demo", "run-2", {}, {}, []) != run_id
    assert len(MlflowClient(uri).search_experiments(filter_string="name = 'sudoku / demo'")) == 1
