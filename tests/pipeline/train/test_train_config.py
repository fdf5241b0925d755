"""Bad training configs fail before any cluster work, with a message that names the problem."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main


@pytest.fixture
def fake_dataset(tmp_path):
    """A small dataset in the build's format (one part per split, listed with size and checksum): 64 train rows,
    8 test rows of 4×4 Sudoku tokens. ``hrm train`` reads every part before it starts."""
    from pipeline.data.meta import write_metadata
    from pipeline.data.write import index_parts, write_part

    d = tmp_path / "data"
    rng = np.random.default_rng(0)
    counts, files = {"train": 64, "test": 8}, {}
    for split, rows in counts.items():
        (d / split).mkdir(parents=True)
        tokens = rng.integers(0, 6, (2, rows, 16), dtype=np.uint8)
        write_part(d / split / "part-00000.parquet", tokens[0], tokens[1], np.zeros(rows, np.int32), np.arange(rows), 0)
        files[split] = index_parts(str(d / split), split, rows)
    write_metadata(d, {"task": "sudoku", "task_args": {"box": [2, 2]}, "vocab_size": 6, "seq_len": 16,
                       "num_puzzle_identifiers": 1, "counts": counts, "groups": {"train": 8, "test": 1},
                       "config": {}, "seed": 0, "fingerprint": "x", "files": files})
    return d


def run(tmp_path, yaml_text, *args):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml_text)
    return CliRunner().invoke(main, ["train", "--config", str(cfg), *args])


@pytest.mark.parametrize("yaml_text, message", [
    ("global_batch_sise: 8\n", "unknown key(s) ['global_batch_sise']"),
    ("global_batch_size: eight\n", "global_batch_size: expected an integer, got str 'eight'"),
    ("global_batch_size: 8\nscaling: {num_workers: 9}\n", "scaling.num_workers 9 is more than data_shards 8"),
    ("scaling: {num_workers: [3, 2]}\nmax_failures: 2\n", "scaling.num_workers [3, 2]: min 3 is more than max 2"),
    ("scaling: {num_workers: [0, 2]}\nmax_failures: 2\n", "scaling.num_workers [0, 2]: at least 1 worker"),
    ("scaling: {num_workers: [1, 3]}\n", "is elastic, but max_failures is 0"),
    ("scaling: {num_workers: [1, 2, 3]}\n",
     "scaling.num_workers: expected an integer or a list of 2 integers, got list [1, 2, 3]"),
    ("scaling: {num_workers: two}\n",
     "scaling.num_workers: expected an integer or a list of 2 integers, got str 'two'"),
    ("checkpoint_minutes: 0\n", "checkpoint_minutes must be a number of minutes > 0"),
    ("checkpoint_upload: later\n", "checkpoint_upload: must be one of ['async', 'sync'], got 'later'"),
    ("ingest_in_worker_mib: -1\n", "ingest_in_worker_mib must be a number of MiB >= 0, got -1"),
    ("ingest_in_worker_mib: .nan\n", "ingest_in_worker_mib must be a number of MiB >= 0, got nan"),
    ("model: {hidden_size: 64, num_heads: 3}\n", "not divisible by num_heads 3"),
    ("model: {h_cycle: 2}\n", "unknown key(s) ['h_cycle']"),
    ("flavour: giant\n", "unknown model flavour 'giant'"),
    ("optim: {lr: fast}\n", "optim.lr: expected a number"),
    ("storage_path: hdfs://nn/runs\n", "storage_path hdfs://nn/runs: unsupported storage scheme 'hdfs'"),
    ("storage_path: s3:///runs\n", "storage_path s3:///runs: no bucket in the URI"),
    ("name: team/run-1\n", "name must be a plain folder name (no '/'"),
    ('name: "a\\nb"\n', "name must be a plain folder name"),
    ("name: ..\n", "got '..'"),
    ("optim: {lr: .nan}\n", "lr must be a finite number >= 0, got nan"),
    ("optim: {lr: -1}\n", "lr must be a finite number >= 0, got -1"),
    ("optim: {lr: 1e-4, beta2: 1.0}\n", "beta2 must be in [0, 1), got 1.0"),
    ("max_steps: 0\n", "max_steps must be >= 1"),
    ("max_steps: -5\n", "max_steps must be >= 1 (or null: epochs decide), got -5"),
])
def test_bad_config_fails_before_ray(tmp_path, monkeypatch, yaml_text, message):
    """Refused before Ray is started or joined: neither our ``init_ray`` nor ``ray.init`` is called (a spy on each,
    not ``ray.is_initialized()``: the test process may hold the suite's own Ray)."""
    import ray

    import pipeline.core.ray_start as ray_start

    calls = []
    monkeypatch.setattr(ray_start, "init_ray", lambda *a, **k: calls.append("init_ray"))
    monkeypatch.setattr(ray, "init", lambda *a, **k: calls.append("ray.init"))
    result = run(tmp_path, yaml_text)
    assert result.exit_code != 0
    assert message in result.output
    assert calls == []


def test_missing_dataset(tmp_path):
    result = run(tmp_path, f"data: {tmp_path / 'nowhere'}\n")
    assert result.exit_code != 0 and "dataset not found" in result.output and "nowhere" in result.output


def test_dataset_smaller_than_a_batch_and_existing_run(tmp_path, fake_dataset):
    result = run(tmp_path, f"data: {fake_dataset}\nglobal_batch_size: 128\n")
    assert result.exit_code != 0 and "fewer than one global batch (128)" in result.output
    (tmp_path / "runs" / "taken" / "checkpoint_2026-11-29_10-00-00.000000").mkdir(parents=True)
    result = run(tmp_path, f"data: {fake_dataset}\nglobal_batch_size: 8\nname: taken\n"
                           f"storage_path: {tmp_path / 'runs'}\n")
    assert result.exit_code != 0 and "run 'taken' already exists" in result.output
    result = run(tmp_path, f"data: {fake_dataset}\nglobal_batch_size: 8\nname: fresh\n"
                           f"storage_path: {tmp_path / 'runs'}\n", "--resume")
    assert result.exit_code != 0 and "nothing to resume" in result.output


def test_missing_config_file(tmp_path):
    result = CliRunner().invoke(main, ["train", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code != 0 and "config file not found" in result.output


def test_shipped_run_files_load():
    from pathlib import Path

    from pipeline.train.config import load_train_config

    files = sorted((Path(__file__).parents[3] / "pipeline" / "configs").glob("train-*.yaml"))
    assert len(files) >= 9
    for f in files:
        load_train_config(f)


def test_a_submitted_job_is_warned_of_outputs_in_its_temporary_working_dir(tmp_path):
    from pipeline.train.run import ephemeral_outputs

    job = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123"
    local = f"sqlite:///{job / 'mlflow.db'}"
    both = ephemeral_outputs(job, "runs", local)
    assert len(both) == 2 and "storage_path 'runs'" in both[0] and "MLflow store" in both[1]
    assert ephemeral_outputs(job, "/mnt/shared/runs", "http://mlflow:5000") == []
    assert ephemeral_outputs(job, "/mnt/shared/runs", "sqlite:////mnt/shared/mlflow.db") == []
    assert ephemeral_outputs(tmp_path, "runs", f"sqlite:///{tmp_path / 'mlflow.db'}") == []  # not a submitted job


def test_no_run_file_pins_a_dtype():
    """Every run file leaves forward_dtype to `auto` (bfloat16 only where the device multiplies it natively)."""
    from pathlib import Path

    import yaml

    files = sorted((Path(__file__).resolve().parents[3] / "pipeline" / "configs").glob("*.yaml"))
    assert len(files) > 10
    for path in files:
        text = yaml.safe_load(path.read_text())
        assert "forward_dtype" not in json.dumps(text), path.name


def test_model_memory_is_counted_without_allocating_and_warned():
    from hrm.config import model_config
    from hrm.model import HRM
    from pipeline.train.config import load_train_config
    from pipeline.train.plan import training_state_size
    from pipeline.train.run import memory_warning

    small = model_config("debug", vocab_size=8, seq_len=16)  # a puzzle table of 1 row
    params, state = training_state_size(small, ema=True)
    assert params == HRM(small).num_parameters() and state == (params - small.emb_dim) * 4 * 5 + small.emb_dim * 8
    huge = model_config("demo", hidden_size=1 << 20, num_heads=1 << 12, vocab_size=8, seq_len=36)
    params, state = training_state_size(huge, ema=False)  # 35 trillion parameters: a meta count, no memory
    assert params > 3e13 and state == (params - huge.emb_dim) * 16 + huge.emb_dim * 4
    cfg = load_train_config(None, {"scaling.num_workers": 2})
    message = memory_warning(state, params, cfg, cluster_memory=16e9)
    assert f"{params:,} parameters" in message and "8 GB of memory a worker can have" in message
    assert memory_warning(10**6, 10**5, cfg, cluster_memory=16e9) is None
    arc = model_config("debug", vocab_size=12, seq_len=900, num_puzzle_identifiers=50_000)  # a 50,000-row table
    table = HRM(arc).puzzle_emb.weight.numel()
    params, state = training_state_size(arc, ema=True)
    assert table == 50_000 * arc.emb_dim and state == (params - table) * 4 * 5 + table * 4 * 2  # weights and EMA


@pytest.mark.parametrize("files, fresh_start", [
    (["mlflow_run_id.txt", ".validate_storage_marker"], True),  # failed before its first checkpoint
    ([], True),
    (["mlflow_run_id.txt", "checkpoint_2026-11-29_10-00-00.000000/"], False),  # a run to resume
    (["mlflow_run_id.txt", "NOTES.md"], False),  # someone's file: never deleted
])
def test_a_run_that_failed_before_any_checkpoint_does_not_block_its_name(tmp_path, fake_dataset, files, fresh_start):
    from pipeline.train.config import load_train_config
    from pipeline.train.run import prepare

    folder = tmp_path / "runs" / "again"
    folder.mkdir(parents=True)
    for name in files:
        (folder / name.rstrip("/")).mkdir() if name.endswith("/") else (folder / name).write_text("x")
    cfg = load_train_config(None, {"data": str(fake_dataset), "global_batch_size": 8, "name": "again",
                                   "storage_path": str(tmp_path / "runs")})
    if fresh_start:
        prepare(cfg, resume=False)
        assert not folder.exists()
    else:
        with pytest.raises(FileExistsError, match="run 'again' already exists"):
            prepare(cfg, resume=False)
        assert sorted(p.name for p in folder.iterdir()) == sorted(n.rstrip("/") for n in files)


def test_a_run_left_running_by_a_dead_driver_is_ended_killed_when_its_name_is_used_again(tmp_path, fake_dataset):
    """The probe's case: a driver killed before its first checkpoint left its MLflow run RUNNING for good once the
    rerun started afresh."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import runs
    from pipeline.train.config import load_train_config
    from pipeline.train.run import prepare

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    orphan = runs.start_run(store, "tests", "again", {}, {}, [])  # RUNNING: nobody ended it
    folder = tmp_path / "runs" / "again"
    folder.mkdir(parents=True)
    (folder / "mlflow_run_id.txt").write_text(orphan)
    cfg = load_train_config(None, {"data": str(fake_dataset), "global_batch_size": 8, "name": "again",
                                   "storage_path": str(tmp_path / "runs")})
    prepare(cfg, resume=False, uri=store)
    run = MlflowClient(store).get_run(orphan)
    assert run.info.status == "KILLED" and "died before its first checkpoint" in run.data.tags["hrm.ended_by"]
    assert not folder.exists()
    finished = runs.start_run(store, "tests", "again", {}, {}, [])
    runs.end_run(store, finished)
    folder.mkdir()
    (folder / "mlflow_run_id.txt").write_text(finished)
    prepare(cfg, resume=False, uri=store)  # an ended run stays as it ended
    assert MlflowClient(store).get_run(finished).info.status == "FINISHED"


def test_a_lost_tracking_server_ends_training_in_one_line():
    """The probe's case: past tracking.unreachable_minutes, a 100-line traceback of Ray's worker error. The driver
    turns the workers' TrackingUnreachable into the one-line message (a ConnectionError: `Error: …`, exit 1)."""
    from ray.exceptions import RayTaskError
    from ray.train import WorkerGroupError

    from pipeline.tracking.buffer import TrackingUnreachable
    from pipeline.train.run import tracking_lost

    lost = TrackingUnreachable("MLflow tracking server http://x has been unreachable for 1800.0 s")
    assert tracking_lost(WorkerGroupError("rank 0 failed", {0: lost})) == str(lost)
    wrapped = RayTaskError("train_loop", "Traceback ...", lost)  # as Ray may hand it over
    assert tracking_lost(WorkerGroupError("rank 0 failed", {1: ValueError("x"), 0: wrapped})) == str(lost)
    assert tracking_lost(WorkerGroupError("rank 0 failed", {0: ValueError("x")})) is None
    assert tracking_lost(RuntimeError("no workers")) is None


def test_resume_refuses_a_dataset_rebuilt_with_other_settings(tmp_path, fake_dataset):
    """The probe's case: a dataset rebuilt under a run was trained on by --resume while MLflow kept the old
    fingerprint."""
    import json

    from pipeline.data.loader import read_metadata
    from pipeline.tracking import runs
    from pipeline.train.config import load_train_config
    from pipeline.train.run import prepare

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = runs.start_run(store, "tests", "again", {}, {}, [], dataset=read_metadata(fake_dataset))
    folder = tmp_path / "runs" / "again"
    folder.mkdir(parents=True)
    (folder / "mlflow_run_id.txt").write_text(run_id)
    cfg = load_train_config(None, {"data": str(fake_dataset), "global_batch_size": 8, "name": "again",
                                   "storage_path": str(tmp_path / "runs")})
    prepare(cfg, resume=True, uri=store)  # the same dataset: resumes
    meta_file = fake_dataset / "metadata.json"
    meta = json.loads(meta_file.read_text())
    was = meta["fingerprint"]
    meta_file.write_text(json.dumps({**meta, "fingerprint": "f" * 16}))  # rebuilt with other settings
    with pytest.raises(ValueError, match=rf"run 'again' began on the dataset of fingerprint {was[:36]}; .* now holds "
                                         r"fingerprint ffffffffffffffff \(rebuilt with other settings\)"):
        prepare(cfg, resume=True, uri=store)


def test_an_elastic_run_waits_less_for_a_stale_placement_unless_told(monkeypatch):
    import os

    from pipeline.train.run import ELASTIC_START_TIMEOUT_S, shorter_start_timeout

    monkeypatch.delenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", raising=False)
    shorter_start_timeout()
    assert os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] == str(ELASTIC_START_TIMEOUT_S) == "30"
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "90")
    shorter_start_timeout()
    assert os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] == "90"
