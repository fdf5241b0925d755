"""Training with everything on object storage, as a multi-node cluster without a shared mount runs it: the dataset
built to and read from ``s3://``, the run folder (checkpoints, the MLflow run id, resume) under ``s3://``, and MLflow's
artifacts (the model) written to S3 by a real ``mlflow server``. The S3 API server is moto on 127.0.0.1 (tests/s3_server.py)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from hrm.optim import lr_at
from pipeline.core.config_io import from_dict
from pipeline.data.build import build_dataset
from pipeline.data.config import DataConfig
from pipeline.train.config import load_train_config
from pipeline.train.run import RUN_ID_FILE, run_folder, train
from pipeline.train.run_log import REPLAYED_TAG
from tests.mlflow_server import mlflow_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("s3train")


@pytest.fixture(scope="module")
def server(s3, workdir):
    with mlflow_server(f"sqlite:///{workdir / 'mlflow.db'}", s3.uri("mlflow-artifacts"), workdir / "mlflow.log") as url:
        yield url


@pytest.fixture(scope="module")
def dataset(s3, ray_session):
    cfg = from_dict(DataConfig, {"name": "tiny", "task": "sudoku", "seed": 5, "sudoku": {
        "box": [2, 2], "count": 40, "min_rating": 0, "test_fraction": 0.25, "augmentations": 2,
        "chunk_size": 20}})
    return build_dataset(cfg, s3.uri("data/tiny")).path


def test_run_folder_and_model_on_s3_resume_from_s3(s3, server, dataset, workdir):
    cfg = load_train_config(None, {
        "name": "on-s3", "data": str(dataset), "storage_path": s3.uri("runs"), "flavour": "debug",
        "model": {"halt_max_steps": 2, "forward_dtype": "float32"}, "global_batch_size": 8, "max_steps": 6,
        "eval_interval": 2, "log_interval": 1, "eval_limit": 8, "eval_samples": 1,
        # sync: the step-2 checkpoint is on S3 and registered before step 3 fails (uploaded in the background, a
        # failure one step later can come first: the run then restarts from none)
        "checkpoint_upload": "sync",
        "tracking": {"tracking_uri": server, "experiment": "s3", "model_name": "hrm-s3"}})
    with pytest.raises(Exception, match="injected failure"):
        train(cfg, fault={"rank": 0, "step": 3, "kind": "raise", "marker": str(workdir / "fault.marker")})
    keys = s3.keys("runs/on-s3/")
    assert f"runs/on-s3/{RUN_ID_FILE}" in keys  # --resume finds its MLflow run on S3
    assert any("/checkpoint_" in k and k.endswith("model.json") for k in keys), keys
    first_id = run_folder(cfg).read(RUN_ID_FILE)
    client = MlflowClient(server)
    assert max(m.step for m in client.get_metric_history(first_id, "train/lm_loss")) == 3  # then it failed

    out = train(cfg, resume=True)  # the resume of a failed run (a local one: test_train's finished-run resume)
    assert out.run_id == first_id  # the same MLflow run went on, from the step-2 checkpoint on S3
    steps = sorted(m.step for m in client.get_metric_history(out.run_id, "train/lm_loss"))
    assert steps == [1, 2, 3, 4, 5, 6]  # step 3 trained twice (from the step-2 checkpoint), logged once
    lr = {m.step: m.value for m in client.get_metric_history(out.run_id, "train/lr")}
    assert sorted(lr) == list(range(1, 7))  # the step count and the schedule go on where the checkpoint left them
    for step, value in lr.items():
        assert value == pytest.approx(lr_at(step - 1, cfg.optim.lr, cfg.optim.lr_warmup_steps, 6,
                                            cfg.optim.lr_min_ratio))
    assert math.isfinite(out.metrics["eval/exact_accuracy"])
    run = client.get_run(out.run_id)
    assert run.data.tags[f"{REPLAYED_TAG}2"].startswith("steps 3-3 trained again")
    assert out.model_version and run.info.status == "FINISHED"
    (used,) = run.inputs.dataset_inputs  # the run's input: the dataset on S3
    assert json.loads(used.dataset.source) == {"uri": s3.uri("data/tiny")} and used.dataset.source_type == "s3"
    # The model's files went through the server to the bucket, and load back from there.
    assert any(k.startswith("mlflow-artifacts/") and k.endswith("MLmodel") for k in s3.keys("mlflow-artifacts/"))
    import mlflow.pyfunc

    mlflow.set_tracking_uri(server)
    model = mlflow.pyfunc.load_model(f"models:/hrm-s3/{out.model_version}")
    puzzle = "1...|..2.|.3..|...4"
    answer = model.predict(pd.DataFrame({"puzzle": [puzzle]}))
    assert len(answer) == 1 and answer["steps"][0] >= 1

