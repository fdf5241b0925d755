"""The seal on a sweep's Tune state (pipeline.tune.seal), on a folder and a real MLflow store: the state a sweep left
passes; a file changed, added or removed, a seal missing or a listing changed with the files are refused naming
them, before anything is unpickled; --trust-sweep-state makes it a warning."""

from __future__ import annotations

import logging

import pytest
from mlflow.tracking import MlflowClient

from pipeline.tune.seal import STATE_FILE, TAG, check, seal


@pytest.fixture
def sweep(tmp_path):
    """(sweep folder with a Tune state, tracking URI, the sweep's run id), sealed."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("seal")).info.run_id
    folder = tmp_path / "sweep"
    (folder / "tune" / "trial_1").mkdir(parents=True)
    (folder / "tune" / "tuner.pkl").write_bytes(b"tuner")
    (folder / "tune" / "experiment_state-1.json").write_text("{}")
    (folder / "tune" / "trial_1" / "params.pkl").write_bytes(b"params")
    seal(folder, uri, run)
    return folder, uri, run


def test_the_sealed_state_passes_and_a_new_seal_follows_changes(sweep):
    folder, uri, run = sweep
    check(folder, uri, run)
    (folder / "tune" / "searcher-state.pkl").write_bytes(b"later")  # Tune wrote more, then the sweep stopped
    seal(folder, uri, run)
    check(folder, uri, run)
    assert MlflowClient(uri).get_run(run).data.tags[TAG]


@pytest.mark.parametrize("change, named", [
    (lambda f: (f / "tune" / "tuner.pkl").write_bytes(b"crafted"), "changed: tune/tuner.pkl"),
    (lambda f: (f / "tune" / "trial_1" / "evil.pkl").write_bytes(b"x"), "added: tune/trial_1/evil.pkl"),
    (lambda f: (f / "tune" / "experiment_state-1.json").unlink(), "missing: tune/experiment_state-1.json"),
])
def test_a_changed_state_is_refused_naming_the_file(sweep, change, named):
    folder, uri, run = sweep
    change(folder)
    with pytest.raises(ValueError) as caught:
        check(folder, uri, run)
    message = str(caught.value)
    assert message.startswith(f"not resuming sweep folder {folder}: its Tune state is not the one hrm tune sealed "
                              f"when the sweep last stopped ({named}): files put there by someone else, or a driver "
                              "killed before it could seal them; --trust-sweep-state resumes it anyway"), message


def test_a_listing_changed_with_the_files_is_refused(sweep):
    folder, uri, run = sweep
    (folder / "tune" / "tuner.pkl").write_bytes(b"crafted")
    (folder / STATE_FILE).write_text("{}")  # whoever changed the files rewrote the listing: the tag still disagrees
    with pytest.raises(ValueError, match=r"not the one hrm tune sealed when the sweep last stopped \(and its "
                                         r"tune_state.json changed too\)"):
        check(folder, uri, run)


def test_a_state_never_sealed_is_refused(sweep):
    folder, uri, run = sweep
    MlflowClient(uri).delete_tag(run, TAG)
    with pytest.raises(ValueError, match=f"was never sealed by hrm tune \\(no tag {TAG} on its MLflow run {run}\\)"):
        check(folder, uri, run)
    with pytest.raises(ValueError, match="its MLflow run 0123abcd cannot be read"):
        check(folder, uri, "0123abcd")


def test_trust_makes_it_a_warning(sweep, caplog):
    folder, uri, run = sweep
    (folder / "tune" / "tuner.pkl").write_bytes(b"crafted")
    with caplog.at_level(logging.WARNING, logger="pipeline.tune.seal"):
        check(folder, uri, run, trust=True)
    assert "resuming all the same (--trust-sweep-state)" in caplog.text
