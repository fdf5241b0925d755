"""A run's folder on local disk and on a real S3 API server (moto on 127.0.0.1): the same behaviour on both."""

import pytest

from pipeline.train.run_folder import RunFolder, location_problems
from pipeline.train.run_state import RUN_ID_FILE, started_without_checkpoint


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "runs")
    return request.getfixturevalue("s3").uri(f"runs-{tmp_path.name}")


def test_a_missing_folder_is_empty_and_absent(storage):
    folder = RunFolder(storage, "nothing")
    assert folder.names() == [] and not folder.exists() and folder.read(RUN_ID_FILE) is None
    assert not started_without_checkpoint(folder)  # nothing there: nothing to clear either


def test_write_read_list_remove(storage):
    folder = RunFolder(storage, "run-a")
    folder.write(RUN_ID_FILE, "abc123")
    assert folder.read(RUN_ID_FILE) == "abc123" and folder.exists()
    assert folder.names() == [RUN_ID_FILE]
    assert started_without_checkpoint(folder)  # only the id: the run failed before its first checkpoint
    folder.write("checkpoint_0001", "x")
    assert not started_without_checkpoint(folder)
    assert not RunFolder(storage, "run-b").exists()  # a sibling is not a prefix match
    folder.remove()
    assert not folder.exists() and folder.read(RUN_ID_FILE) is None


def test_s3_objects_sit_under_the_prefix(s3, tmp_path):
    RunFolder(s3.uri(f"p-{tmp_path.name}/runs"), "r").write(RUN_ID_FILE, "id")
    assert s3.keys(f"p-{tmp_path.name}/") == [f"p-{tmp_path.name}/runs/r/{RUN_ID_FILE}"]


@pytest.mark.parametrize("path, problem", [
    ("", "must not be empty"),
    ("hdfs://nn/runs", "unsupported storage scheme 'hdfs'"),
    ("s3:///runs", "no bucket in the URI"),
])
def test_bad_locations_are_named(path, problem):
    (found,) = location_problems(path)
    assert problem in found


@pytest.mark.parametrize("path", ["runs", "/mnt/shared/runs", "s3://bucket/runs", "gs://bucket/a/b"])
def test_good_locations(path):
    assert location_problems(path) == []
