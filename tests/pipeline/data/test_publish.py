"""What a build may replace (pipeline.data.publish), without Ray: --overwrite never deletes a file it did not write
(also one put there while the build ran), only leftovers that carry a build's marker are cleaned (a dataset caught
between install's two renames is put back), a folder of the user's named like a leftover is never touched, and a
build never installs over a dataset that changed after it started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core import locks
from pipeline.core.config_io import from_dict
from pipeline.data import publish as publish_module
from pipeline.data.build import build_dataset, check_existing
from pipeline.data.config import DataConfig
from pipeline.data.publish import (
    MARKER,
    DatasetExistsError,
    Publish,
    clean_leftovers,
    exchange,
    foreign_files,
    install,
    mark,
    metadata_digest,
    staging,
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


def test_overwrite_refuses_a_folder_without_metadata_holding_the_users_parquet_files(tmp_path):
    """No metadata.json: no dataset of ours, whatever its Parquet files are named (the probe's case: both deleted)."""
    ds = tmp_path / "mine"
    for name in ("train/my-results-2025.parquet", "test/holdout.parquet"):
        (ds / name).parent.mkdir(parents=True, exist_ok=True)
        (ds / name).write_bytes(b"PAR1 the user's own data PAR1")
    before = tree(ds)
    with pytest.raises(DatasetExistsError, match=r"not a complete dataset of ours .*--overwrite replaces only such"):
        build_dataset(CFG, ds, overwrite=True)  # refused before any Ray work
    assert tree(ds) == before
    ds2 = make_dataset(tmp_path / "ds")
    (ds2 / "metadata.json").unlink()  # a dataset whose metadata is gone: not ours to delete either
    with pytest.raises(DatasetExistsError, match="not a complete dataset of ours"):
        check_existing(ds2, CFG, overwrite=True)


def test_overwrite_accepts_an_older_dataset_whose_metadata_lists_no_parts(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    meta = json.loads((ds / "metadata.json").read_text())
    del meta["files"], meta["checksums"]  # as builds wrote it before part lists
    (ds / "metadata.json").write_text(json.dumps(meta))
    assert foreign_files(str(ds), meta) == []
    (ds / "train" / "my-results.parquet").write_text("mine")  # not a part's name: the user's
    assert foreign_files(str(ds), meta) == ["train/my-results.parquet"]


def leftover(parent: Path, name: str, out: str, token: str | None) -> Path:
    """A folder ``name`` beside ``out`` with a user's file in it, marked as a build's of ``out`` with ``token``."""
    folder = parent / name
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "part-00000.parquet").write_bytes(b"x")
    if token is not None:
        mark(str(folder), str(parent / out), token)
    return folder


def test_only_marked_leftovers_are_removed_and_a_marked_old_dataset_put_back(tmp_path):
    data, out = tmp_path / "data", tmp_path / "data" / "set"
    data.mkdir()
    leftover(data, "set.tmp-1a2b3c4d", "set", "1a2b3c4d")  # a staging folder of a build that died
    leftover(data, "set.tmp-5e6f7a8b", "set", "5e6f7a8b")
    make_dataset(data / "set.old-0badc0de")  # killed between install's two renames
    mark(str(data / "set.old-0badc0de"), str(out), "0badc0de")
    (data / "settle").mkdir()  # another output whose name starts alike
    clean_leftovers(str(out))
    assert sorted(p.name for p in data.iterdir()) == ["set", "settle"]
    assert (out / "metadata.json").is_file() and not (out / MARKER).exists()  # put back, unmarked
    leftover(data, "set.old-11111111", "set", "11111111")
    clean_leftovers(str(out))  # with the dataset in place, a marked old copy is a leftover
    assert sorted(p.name for p in data.iterdir()) == ["set", "settle"]


@pytest.mark.parametrize(("name", "token", "marked_for"), [
    ("o2.old-2025backup", None, "o2"),  # the probe's case: the user's backup, no marker
    ("o2.tmp-mine", None, "o2"),
    ("o2.tmp-aaaa0000", "bbbb1111", "o2"),  # a marker whose token is not the folder's
    ("o2.old-cccc2222", "cccc2222", "o3"),  # a marker of another output's build
])
def test_a_folder_named_like_a_leftover_is_never_removed_or_moved(tmp_path, name, token, marked_for):
    data = tmp_path / "data"
    folder = leftover(data, name, marked_for, token)
    before = tree(folder)
    clean_leftovers(str(data / "o2"))  # o2 absent: the old build put-back must not take the user's folder
    assert not (data / "o2").exists() and tree(folder) == before


def test_install_refuses_files_put_into_the_output_while_the_build_ran(tmp_path):
    out = make_dataset(tmp_path / "ds")
    with locks.hold(out, "build") as lock:
        publish = Publish(lock=lock, before=metadata_digest(str(out)))  # the build starts: only our files
        _, work, _ = staging(str(out))
        make_dataset(Path(work))
        (out / "NOTES.md").write_text("written 2 s into the build")  # the probe's case: gone at the end
        before = tree(out)
        with pytest.raises(DatasetExistsError, match=r"holds files no dataset build wrote \(NOTES.md\), put there "
                                                     "while this build ran: nothing was replaced"):
            install(work, str(out), publish)
        assert tree(out) == before


@pytest.mark.parametrize("swap", [True, False])
def test_install_replaces_an_old_dataset_and_leaves_no_marker_or_folder(tmp_path, monkeypatch, swap):
    """In one step where the filesystem swaps two folders (RENAME_EXCHANGE), in two renames where it does not."""
    if not swap:
        monkeypatch.setattr(publish_module, "exchange", lambda a, b: False)
    out = make_dataset(tmp_path / "ds")
    with locks.hold(out, "build") as lock:
        publish = Publish(lock=lock, before=metadata_digest(str(out)))
        _, work, _ = staging(str(out))
        assert (Path(work) / MARKER).is_file()
        meta = json.loads((make_dataset(Path(work)) / "metadata.json").read_text())
        (Path(work) / "metadata.json").write_text(json.dumps({**meta, "fingerprint": "the new build's"}))
        install(work, str(out), publish)
    assert json.loads((out / "metadata.json").read_text())["fingerprint"] == "the new build's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"] and not (out / MARKER).exists()


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("a"), (b / "y").write_text("b")
    if not exchange(str(a), str(b)):
        pytest.skip("this filesystem cannot swap folders (renameat2 RENAME_EXCHANGE): install uses two renames")
    assert [p.name for p in a.iterdir()] == ["y"] and [p.name for p in b.iterdir()] == ["x"]


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
