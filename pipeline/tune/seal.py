"""The seal on a sweep's saved Tune state: ``hrm tune --resume`` resumes only a state ``hrm tune`` itself left.

Ray Tune's state (``<sweep>/tune/``: ``tuner.pkl``, searcher state, ``experiment_state-*.json`` with cloudpickled
parts) is code: restoring it unpickles it. So each time ``hrm tune`` stops (finished, stopped, failed) it seals the
state: the SHA-256 of every file under ``tune/`` goes to ``<sweep>/tune_state.json``, and the SHA-256 of that list
to the sweep's MLflow run (tag ``hrm.sweep_state``), where the sweep folder's files cannot change it. A resume checks
the files against the seal before Tune reads any of them. A driver killed by SIGKILL never sealed what Tune wrote
after: its state is refused like a foreign one, unless the user says to trust it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from pipeline.core.digests import differences, folder_digests
from pipeline.core.storage import write_text

log = logging.getLogger(__name__)
TAG = "hrm.sweep_state"
STATE_FILE = "tune_state.json"
TRUST_HINT = ("--trust-sweep-state resumes it anyway (Tune unpickles those files: only for a sweep folder you know "
              "no one else wrote)")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state_files(folder: Path) -> dict[str, str]:
    """``{path under the sweep folder: SHA-256}`` of every file of its Tune state (``tune/``)."""
    return folder_digests(Path(folder) / "tune", base=Path(folder))


def _listing(files: dict[str, str]) -> str:
    return json.dumps(files, sort_keys=True, indent=1)


def seal(folder: Path, tracking_uri: str, parent_run_id: str) -> None:
    """Record the sweep's Tune state as it is now (see the module docstring)."""
    from mlflow.tracking import MlflowClient

    text = _listing(state_files(folder))
    write_text(Path(folder) / STATE_FILE, text)
    MlflowClient(tracking_uri).set_tag(parent_run_id, TAG, _sha256(text.encode()))


def seal_quietly(folder: Path, tracking_uri: str, parent_run_id: str) -> None:
    """``seal``; a failure is logged, not raised (a sweep stopping for another reason says why, not this)."""
    try:
        seal(folder, tracking_uri, parent_run_id)
    except Exception as err:  # noqa: BLE001
        log.warning("could not seal sweep folder %s (%s: %s): --resume will ask for --trust-sweep-state", folder,
                    type(err).__name__, err)


def check(folder: Path, tracking_uri: str, parent_run_id: str, *, trust: bool = False) -> None:
    """A ValueError saying what differs when the sweep's Tune state is not the one sealed in run
    ``parent_run_id``; with ``trust`` a warning instead."""
    problem = _problem(Path(folder), tracking_uri, parent_run_id)
    if problem is None:
        return
    if not trust:
        raise ValueError(f"not resuming sweep folder {folder}: {problem}; {TRUST_HINT}")
    log.warning("sweep folder %s: %s; resuming all the same (--trust-sweep-state)", folder, problem)


def _problem(folder: Path, tracking_uri: str, parent_run_id: str) -> str | None:
    from mlflow.tracking import MlflowClient

    try:
        sealed = MlflowClient(tracking_uri).get_run(parent_run_id).data.tags.get(TAG)
    except Exception as err:  # noqa: BLE001 (a run id that names no run of this store)
        return f"its MLflow run {parent_run_id} cannot be read ({type(err).__name__}), so neither can its seal"
    if sealed is None:
        return (f"its Tune state was never sealed by hrm tune (no tag {TAG} on its MLflow run {parent_run_id}): not "
                "a sweep this project stopped")
    now = state_files(folder)
    if _sha256(_listing(now).encode()) == sealed:
        return None
    saved = folder / STATE_FILE
    recorded = json.loads(saved.read_text()) if saved.is_file() else None
    if recorded is None or _sha256(_listing(recorded).encode()) != sealed:
        return ("its Tune state is not the one hrm tune sealed when the sweep last stopped (and its "
                f"{STATE_FILE} changed too)")
    return (f"its Tune state is not the one hrm tune sealed when the sweep last stopped "
            f"({differences(recorded, now)}): files put there by someone else, or a driver killed before it could "
            "seal them")
