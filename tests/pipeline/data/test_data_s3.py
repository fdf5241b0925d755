"""``hrm data build`` to ``s3://`` against a real S3 API server (moto) on 127.0.0.1: round trip, publish rules,
a build killed mid-way, ``data show``; and ``pipeline.core.storage`` on both kinds of location."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli.data import data
from pipeline.core import storage
from pipeline.data.loader import load_split, read_metadata, read_split
from tests.pipeline.data.test_data_build import SMALL, same_dataset
from tests.s3_server import S3Server

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def ray_s3(s3, ray_session):
    """The S3 server, with the suite's Ray (started after it: its workers inherit the AWS environment)."""
    return s3


def run(*args):
    return CliRunner().invoke(data, [str(a) for a in args], catch_exceptions=False)


def build(tmp: Path, cfg: dict, out: str, *extra):
    config = tmp / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return run("build", "sudoku", "--config", config, "--out", out, *extra)


@pytest.fixture(scope="module")
def built(ray_s3, tmp_path_factory):
    """SMALL built locally and to s3://…/tiny."""
    tmp = tmp_path_factory.mktemp("s3data")
    uri = ray_s3.uri("tiny")
    for out in (tmp / "local", uri):
        result = build(tmp, SMALL, str(out))
        assert result.exit_code == 0, result.output
    return tmp, uri


def test_storage_on_local_paths_and_s3(s3, tmp_path):
    assert storage.normalize("s3://b/x/") == "s3://b/x" and storage.join("s3://b/x", "y", "z") == "s3://b/x/y/z"
    assert storage.normalize("file://" + str(tmp_path)) == str(tmp_path)
    with pytest.raises(ValueError, match="unsupported storage scheme 'ftp'"):
        storage.normalize("ftp://host/x")
    for base in (str(tmp_path / "loc"), s3.uri("storage-test")):
        assert not storage.exists(base) and storage.listdir(base) == []
        storage.make_dirs(storage.join(base, "sub"))
        storage.write_text(storage.join(base, "sub", "a.txt"), "héllo")
        storage.write_text(storage.join(base, "b.txt"), "x")
        storage.write_text(storage.join(base, "b.txt"), "y")  # replaced whole
        assert storage.read_text(storage.join(base, "sub", "a.txt")) == "héllo"
        assert storage.read_text(storage.join(base, "b.txt")) == "y"
        assert storage.listdir(base) == ["b.txt", "sub"] and storage.list_files(base) == ["b.txt", "sub/a.txt"]
        assert storage.is_dir(base) and storage.is_file(storage.join(base, "b.txt"))
        storage.delete(storage.join(base, "sub"))
        assert storage.list_files(base) == ["b.txt"]
        storage.delete(base)
        assert not storage.exists(base)
    fs, path = storage.filesystem(s3.uri("k"))
    assert path == f"{s3.bucket}/k" and type(fs).__name__ == "S3FileSystem"


def test_s3_build_reads_back_like_the_local_one(built, ray_s3):
    tmp, uri = built
    same_dataset(tmp / "local", uri)
    meta = read_metadata(uri)
    assert meta.path == uri and meta.counts == {"train": 180, "test": 15}
    keys = ray_s3.keys("tiny/")
    prefixes = {k.split("/")[1] for k in keys if k.startswith("tiny/parts-")}
    assert len(prefixes) == 1 and "tiny/metadata.json" in keys
    assert sorted(f"tiny/{p['path']}" for s in ("train", "test") for p in meta.files[s]) == \
        sorted(k for k in keys if k.endswith(".parquet"))
    batch = read_split(uri, "train").take_batch(7, batch_format="numpy")  # Ray Data reads s3:// too
    assert batch["inputs"].shape == (7, 36) and batch["labels"].dtype == np.int64


def test_s3_rebuild_noop_different_config_and_overwrite(built, ray_s3, tmp_path):
    _, uri = built
    before = storage.read_text(storage.join(uri, "metadata.json"))
    result = build(tmp_path, SMALL, uri)
    assert result.exit_code == 0 and "nothing to do" in result.output
    result = build(tmp_path, SMALL, uri, "--seed", 9)
    assert result.exit_code != 0 and "different dataset" in result.output and "seed" in result.output
    assert storage.read_text(storage.join(uri, "metadata.json")) == before
    # overwrite a copy: the new parts replace the old ones, nothing of the old build is left
    copy = ray_s3.uri("tiny-copy")
    result = build(tmp_path, SMALL, copy)
    assert result.exit_code == 0, result.output
    old = {k.split("/")[1] for k in ray_s3.keys("tiny-copy/") if "/parts-" in k}
    result = build(tmp_path, SMALL, copy, "--seed", 9, "--overwrite")
    assert result.exit_code == 0, result.output
    new = {k.split("/")[1] for k in ray_s3.keys("tiny-copy/") if "/parts-" in k}
    assert read_metadata(copy).seed == 9 and len(new) == 1 and not new & old


def test_show_on_s3(built):
    _, uri = built
    result = run("show", uri, "-n", 1)
    assert result.exit_code == 0, result.output
    assert f"dataset      {uri}" in result.output and "train 180" in result.output
    assert result.output.count("--- train example") == 1
    result = run("show", uri + "-missing")
    assert result.exit_code != 0 and "does not exist" in result.output


def test_failed_overwrite_keeps_the_old_dataset(built, ray_s3, tmp_path, monkeypatch):
    """An injected failure after the parts are written, before metadata.json: its parts are removed again."""
    import pipeline.data.build as build_module
    import pipeline.data.write as write_module

    _, uri = built
    before = load_split(uri, "train", with_ids=True)
    keys = ray_s3.keys("tiny/")

    def fail(*args, **kwargs):
        raise RuntimeError("injected: lost the connection")

    monkeypatch.setattr(write_module, "write_metadata", fail)
    with pytest.raises(RuntimeError, match="injected"):
        build_module.build_dataset(_config(tmp_path, seed=9), uri, overwrite=True)
    assert ray_s3.keys("tiny/") == keys
    after = load_split(uri, "train", with_ids=True)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def _config(tmp_path, **overrides):
    from pipeline.data.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    return load_config(path, **overrides)


def _hrm_build(config: Path, out: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    import ray

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "HRM_PROGRESS": "lines",
           "PYTHONPATH": str(ROOT), **(env or {})}
    cmd = [sys.executable, "-c", "from pipeline.cli import main; main()", "data", "build", "sudoku",
           "--config", str(config), "--out", out, "--workers", "1", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _kill_when_parts_appear(proc: subprocess.Popen, server, prefix: str, known: set[str]) -> None:
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            new = [k for k in server.keys(prefix) if k not in known and k.endswith(".parquet")]
            if new:
                assert proc.poll() is None, "the build finished before it could be killed"
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return
            if proc.poll() is not None:
                pytest.fail(f"build ended before writing parts: {proc.stdout.read().decode()[-3000:]}")
            time.sleep(0.05)
        pytest.fail("no parts appeared in time")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# many small parts, one worker: stage 2 takes a few seconds, so the kill lands while parts are being written
SLOW = {**SMALL, "rows_per_file": 40, "sudoku": {**SMALL["sudoku"], "count": 300, "augmentations": 40}}


@pytest.mark.slow
def test_killed_build_leaves_nothing_readable_and_the_old_dataset_whole(built, ray_s3, tmp_path):
    from pipeline.data.build import build_dataset, check_existing

    config = tmp_path / "slow.yaml"
    config.write_text(yaml.safe_dump(SLOW))
    # 1. a fresh prefix: the killed build's parts are there, but no dataset
    fresh = ray_s3.uri("killed")
    _kill_when_parts_appear(_hrm_build(config, fresh), ray_s3, "killed/", set())
    assert any(k.endswith(".parquet") for k in ray_s3.keys("killed/"))
    assert "killed/metadata.json" not in ray_s3.keys("killed/")
    with pytest.raises(FileNotFoundError, match="not a complete dataset"):
        load_split(fresh, "train")
    cfg = _config(tmp_path)
    assert check_existing(fresh, cfg, overwrite=False) is False  # leftovers only: a new build may go there
    result = build_dataset(cfg, fresh)
    assert result.built and not any("parts-" in k and k.split("/")[1] not in
                                    {p["path"].split("/")[0] for p in read_metadata(fresh).files["train"]}
                                    for k in ray_s3.keys("killed/"))
    # 2. an overwrite of an existing dataset, killed: the old dataset stays readable, unchanged
    _, uri = built
    before = load_split(uri, "train", with_ids=True)
    meta_before = storage.read_text(storage.join(uri, "metadata.json"))
    _kill_when_parts_appear(_hrm_build(config, uri, "--overwrite"), ray_s3, "tiny/", set(ray_s3.keys("tiny/")))
    assert storage.read_text(storage.join(uri, "metadata.json")) == meta_before
    after = load_split(uri, "train", with_ids=True)
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_a_build_whose_store_dies_ends_at_once_in_one_line(ray_s3, tmp_path):
    """#31: its S3 server killed mid-write, a build waited ≥ 165 s (Ray Data retries a write 10 times, backing off
    up to 32 s) and then printed a 308-line traceback. Now it ends within seconds, its error in one line."""
    from tests.s3_server import start_server

    proc, endpoint = start_server(tmp_path / "doomed.log")  # a server of its own: the session's stays up
    try:
        client = S3Server(endpoint, "doomed").client()
        client.create_bucket(Bucket="doomed")
        config = tmp_path / "slow.yaml"
        config.write_text(yaml.safe_dump(SLOW))
        build = _hrm_build(config, "s3://doomed/x", env={"AWS_ENDPOINT_URL": endpoint})
        deadline = time.monotonic() + 180
        while not any(o["Key"].endswith(".parquet") for o in client.list_objects_v2(Bucket="doomed").get("Contents", [])):
            assert build.poll() is None, build.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no parts appeared in time"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    killed = time.monotonic()
    try:
        out, _ = build.communicate(timeout=120)
    finally:
        if build.poll() is None:
            os.killpg(build.pid, signal.SIGKILL)
    took, text = time.monotonic() - killed, out.decode(errors="replace")
    assert build.returncode == 1 and took < 60, (took, text[-3000:])
    assert text.strip().splitlines()[-1].startswith("Error: the object store failed: AWS Error NETWORK_CONNECTION"), \
        text[-3000:]
    assert "Traceback" not in text and len(text.splitlines()) < 40, text[-5000:]
