"""Where a run's artifacts land in the embedded sqlite store, whatever directory the job runs in."""

from pathlib import Path

import pytest

from pipeline.tracking import registry, runs


@pytest.mark.parametrize(("uri", "expected"), [
    ("sqlite:////srv/store/mlflow.db", Path("/srv/store/mlruns")),
    ("sqlite:///mlflow.db", Path.cwd() / "mlruns"),
    ("sqlite:///:memory:", None),
    ("http://127.0.0.1:5000", None),
    ("databricks", None),
])
def test_artifact_root(uri, expected):
    assert runs.artifact_root(uri) == expected


def test_run_artifacts_sit_beside_the_database(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    config = tmp_path / "train_config.json"
    config.write_text("{}")
    run_id = runs.start_run(uri, "sudoku / demo", "run-1", {"lr": 0.001}, {}, [config])
    runs.end_run(uri, run_id)
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.params == {"lr": "0.001"}
    assert (store / "mlruns" / "sudoku_demo" / run_id / "artifacts" / "train_config.json").is_file()
    assert list(elsewhere.iterdir()) == []
    # the experiment, once made, is found again by name
    assert runs.start_run(uri, "sudoku / demo", "run-2", {}, {}, []) != run_id
    assert len(MlflowClient(uri).search_experiments(filter_string="name = 'sudoku / demo'")) == 1


@pytest.fixture
def store(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_a_run_has_the_tags_mlflow_start_run_records(store):
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import (
        MLFLOW_GIT_COMMIT,
        MLFLOW_SOURCE_NAME,
        MLFLOW_SOURCE_TYPE,
        MLFLOW_USER,
    )

    from pipeline.tracking.version import code_version

    run_id = runs.start_run(store, "tags", "run", {}, {"task": "sudoku"}, [])
    tags = MlflowClient(store).get_run(run_id).data.tags
    assert tags[MLFLOW_SOURCE_TYPE] == "LOCAL" and tags[MLFLOW_SOURCE_NAME] and tags[MLFLOW_USER]
    assert tags["task"] == "sudoku"
    experiment = MlflowClient(store).get_experiment_by_name("tags")  # opened as model training in MLflow 3's UI
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags[MLFLOW_GIT_COMMIT] == code_version()["git_commit"]  # this checkout's commit
    assert tags["code_version"].endswith(tags[MLFLOW_GIT_COMMIT][:10]) or ".dirty" in tags["code_version"]


def test_without_git_the_commit_comes_from_the_environment(store, monkeypatch):
    """A job's working dir has no .git (here: no git at all): the submitter's $HRM_GIT_COMMIT is recorded."""
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

    monkeypatch.setenv("PATH", "/nonexistent")  # no git program
    monkeypatch.setenv("HRM_GIT_COMMIT", "0123456789abcdef0123456789abcdef01234567")
    run_id = runs.start_run(store, "tags", "run", {}, {}, [])
    tags = MlflowClient(store).get_run(run_id).data.tags
    assert tags[MLFLOW_GIT_COMMIT] == "0123456789abcdef0123456789abcdef01234567"
    assert tags["code_version"].endswith("+0123456789")


def test_without_git_or_commit_the_run_names_its_source_by_digest(store, monkeypatch, tmp_path):
    """`ray job submit --working-dir .` with nothing set: the run still says which code ran — the SHA-256 of the
    package's source, equal for a checkout and for a copy of it (what `hrm info` prints), another for other code."""
    import shutil

    from mlflow.tracking import MlflowClient

    from pipeline.tracking.version import ROOT, source_sha256

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("HRM_GIT_COMMIT", raising=False)
    run_id = runs.start_run(store, "tags", "run", {}, {}, [])
    tags = MlflowClient(store).get_run(run_id).data.tags
    assert tags["hrm.source_sha256"] == source_sha256() and len(source_sha256()) == 64
    assert tags["code_version"].endswith(f"+src.{source_sha256()[:12]}") and "mlflow.source.git.commit" not in tags
    copy = tmp_path / "job"
    for top in ("hrm", "pipeline"):
        shutil.copytree(ROOT / top, copy / top, ignore=shutil.ignore_patterns("__pycache__"))
    assert source_sha256(copy) == source_sha256()
    (copy / "pipeline" / "configs" / "train-demo.yaml").write_text("name: changed\n")
    assert source_sha256(copy) != source_sha256()


def test_the_dataset_is_the_runs_input(store, tmp_path):
    import json

    from mlflow.tracking import MlflowClient

    from pipeline.data.meta import DatasetMeta

    meta = DatasetMeta(path=tmp_path / "sudoku-tiny", task="sudoku", task_args={"box": [2, 2]}, vocab_size=6,
                       seq_len=16, num_puzzle_identifiers=1, counts={"train": 48, "test": 12},
                       groups={"train": 12, "test": 12}, config={}, seed=3, fingerprint="f00dfeed12345678")
    run_id = runs.start_run(store, "inputs", "run", {}, {}, [], dataset=meta)
    inputs = MlflowClient(store).get_run(run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert (dataset.name, dataset.digest) == ("sudoku-tiny", "f00dfeed12345678")
    assert str(tmp_path / "sudoku-tiny") in dataset.source
    assert json.loads(dataset.profile) == {"task": "sudoku", "seq_len": 16, "train_count": 48, "test_count": 12}
    assert {t.key: t.value for t in inputs[0].tags} == {"mlflow.data.context": "training"}


def test_runs_opening_at_once_all_log_the_same_dataset(store, tmp_path):
    """A sweep's trials open their runs at once in one experiment, each logging the same dataset: MLflow's store
    looks the dataset up, then inserts it, so two could both insert it and one failed on the table's unique key
    (a Tune trial lost that way). Eight at once, several rounds: every run gets its input."""
    import threading

    from mlflow.tracking import MlflowClient

    from pipeline.data.meta import DatasetMeta

    client = MlflowClient(store)
    failures: list[BaseException] = []
    for round_ in range(4):
        meta = DatasetMeta(path=tmp_path / f"d{round_}", task="sudoku", task_args={"box": [2, 2]}, vocab_size=6,
                           seq_len=16, num_puzzle_identifiers=1, counts={"train": 48, "test": 12},
                           groups={"train": 12, "test": 12}, config={}, seed=3, fingerprint=f"f00d{round_}")
        experiment = client.create_experiment(f"racing-inputs-{round_}")
        run_ids = [client.create_run(experiment).info.run_id for _ in range(8)]
        gate = threading.Barrier(len(run_ids))

        def log(run_id: str) -> None:
            gate.wait()
            try:
                runs.log_dataset(MlflowClient(store), run_id, meta)
            except BaseException as err:  # noqa: BLE001
                failures.append(err)

        threads = [threading.Thread(target=log, args=(r,)) for r in run_ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert failures == []
        assert all(len(client.get_run(r).inputs.dataset_inputs) == 1 for r in run_ids)


def test_logging_a_dataset_retries_only_the_insert_race(monkeypatch):
    from mlflow.exceptions import MlflowException

    from pipeline.data.meta import DatasetMeta

    meta = DatasetMeta(path=Path("/data/d"), task="sudoku", task_args={}, vocab_size=6, seq_len=16,
                       num_puzzle_identifiers=1, counts={"train": 1, "test": 1}, groups={"train": 1, "test": 1},
                       config={}, seed=0, fingerprint="f")
    monkeypatch.setattr(runs.time, "sleep", lambda _: None)

    class Client:
        def __init__(self, errors):
            self.errors, self.calls = list(errors), 0

        def log_inputs(self, run_id, datasets):
            self.calls += 1
            if self.errors:
                raise self.errors.pop(0)

    race = MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, ...")
    client = Client([race])
    runs.log_dataset(client, "r", meta)
    assert client.calls == 2
    with pytest.raises(MlflowException, match="UNIQUE constraint"):
        runs.log_dataset(Client([race, race, race]), "r", meta)
    other = Client([MlflowException("RESOURCE_DOES_NOT_EXIST: run r")])
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        runs.log_dataset(other, "r", meta)
    assert other.calls == 1


def test_system_metrics_are_logged_at_once(store):
    from mlflow.tracking import MlflowClient

    run_id = runs.start_run(store, "system", "run", {}, {}, [])
    monitor = runs.start_system_metrics(store, run_id)
    assert monitor is not None
    metrics = MlflowClient(store).get_run(run_id).data.metrics
    assert metrics["system/cpu_utilization_percentage"] >= 0
    assert metrics["system/system_memory_usage_megabytes"] > 0
    runs.end_run(store, run_id)
    monitor.finish()


def test_the_summary_names_the_registered_checkpoint(store):
    from mlflow.tracking import MlflowClient

    run_id = runs.start_run(store, "summary", "run", {}, {}, [])
    client = MlflowClient(store)
    client.log_metric(run_id, "eval/exact_accuracy", 0.5, step=3)
    client.log_metric(run_id, "eval/exact_accuracy", 0.25, step=6)  # the last step was worse
    registry.log_registered_checkpoint(store, run_id, "checkpoint_000000", 3, {"eval/exact_accuracy": 0.5})
    run = client.get_run(run_id)
    assert run.data.metrics["eval/exact_accuracy"] == 0.25
    assert run.data.tags["model.eval/exact_accuracy"] == "0.5" and run.data.tags["model.step"] == "3"
    assert sorted(run.data.metrics) == ["eval/exact_accuracy"]  # no one-point chart repeating it
    assert run.data.tags["model.checkpoint"] == "checkpoint_000000"
