"""What a build may replace (pipeline.data.publish), without Ray: --overwrite never deletes a file it did not write,
leftovers of dead builds are cleaned (a dataset caught between install's two renames is put back), and a build never
installs over a dataset that changed after it started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core import locks
from pipeline.core.config_io import from_dict
from pipeline.data.build import build_dataset, check_existing
from pipeline.data.config import DataConfig
from pipeline.data.publish import (
    DatasetExistsError,
    Publish,
    clean_leftovers,
    foreign_files,
    install,
    metadata_digest,
)
from tests.pipeline.data.test_verify import make_dataset

CFG = from_dict(DataConfig, {"name": "x", "task": "sudoku", "sudoku": {"box": [2, 2], "count": 8}})


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("extra", ["NOTES.md", "train/my_extra.txt", "test/sub/notes.parquet.txt"])
def test_overwrite_refuses_a_dataset_folder_holding_foreign_files(tmp_path, extra):
    ds = make_dataset(tmp_path / "ds")
    (ds / extra).parent.mkdir(parents=True, exist_ok=True)
    (ds / extra).write_text("mine")
    before = tree(ds)
    with pytest.raises(DatasetExistsError, match=rf"files no dataset build wrote \({extra}\).*--overwrite replaces "
                                                 r"only a dataset's own files"):
        build_dataset(CFG, ds, overwrite=True)  # refused before any Ray work
    assert tree(ds) == before
    assert not Path(f"{ds}.lock").exists()  # the lock is released on the way out


def test_overwrite_accepts_a_dataset_of_its_own_files_only(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    assert foreign_files(str(ds), json.loads((ds / "metadata.json").read_text())) == []
    assert check_existing(ds, CFG, overwrite=True) is False  # build over it


def test_an_incomplete_dataset_counts_only_parquet_parts_as_its_own(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    (ds / "metadata.json").unlink()  # a build that died before its metadata
    assert foreign_files(str(ds), None) == []
    (ds / "train" / "README").write_text("x")
    with pytest.raises(DatasetExistsError, match="train/README"):
        check_existing(ds, CFG, overwrite=True)


def test_leftovers_of_dead_builds_are_removed_and_a_moved_dataset_put_back(tmp_path):
    out = tmp_path / "data" / "set"
    for name in ("set.tmp-1a2b3c4d", "set.tmp-5e6f7a8b"):
        (tmp_path / "data" / name / "train").mkdir(parents=True)
    make_dataset(tmp_path / "data" / "set.old-0badc0de")  # killed between install's two renames
    (tmp_path / "data" / "settle").mkdir()  # another output whose name starts alike: not ours
    clean_leftovers(str(out))
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["set", "settle"]
    assert (out / "metadata.json").is_file()
    (tmp_path / "data" / "set.old-11111111").mkdir()
    clean_leftovers(str(out))  # with the dataset in place, an old copy is a leftover
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["set", "settle"]


def test_install_refuses_a_dataset_that_changed_since_the_build_started(tmp_path):
    out = make_dataset(tmp_path / "ds")
    work = make_dataset(tmp_path / "ds.tmp-00000000")
    with locks.hold(out, "build") as lock:
        publish = Publish(lock=lock, before=metadata_digest(str(out)))
        meta = json.loads((out / "metadata.json").read_text())
        (out / "metadata.json").write_text(json.dumps({**meta, "fingerprint": "another build's"}))
        with pytest.raises(DatasetExistsError, match="changed while this build ran"):
            install(str(work), str(out), publish)
        assert json.loads((out / "metadata.json").read_text())["fingerprint"] == "another build's"
        publish = Publish(lock=lock, before=metadata_digest(str(out)))
        install(str(work), str(out), publish)  # unchanged since: installed
    assert not work.exists() and (out / "metadata.json").is_file()
    assert metadata_digest(str(tmp_path / "none")) is None
