"""Two jobs with one output, through the real ``hrm`` command in separate processes (each starts its own local Ray):
the second build or training run of an output fails at once naming the first and writing nothing, and the first
build finishes untouched; a build killed with SIGKILL leaves nothing that stops or confuses the next one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.processes import wait_until

pytestmark = pytest.mark.slow

HRM = str(Path(sys.executable).with_name("hrm"))
DATA = {"name": "race", "task": "sudoku", "seed": 8, "rows_per_file": 40,
        "sudoku": {"box": [2, 2], "count": 60, "min_rating": 0, "test_fraction": 0.25, "augmentations": 4,
                   "chunk_size": 10}}


def start(folder: Path, *args: str) -> subprocess.Popen:
    """``hrm ARGS`` in ``folder``, in its own process group (a kill reaches its Ray too)."""
    env = {**os.environ, "HRM_PROGRESS": "lines"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([HRM, *args], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"hrm {proc.args[1:]} did not end in {timeout} s:\n{out[-3000:]}")
    return proc.returncode, out


def wait_for(what: str, ready, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until ``ready()``; fail with the first job's output if it ended first."""
    wait_until(what, ready, proc, lambda: proc.stdout.read() if proc.poll() is not None else "", timeout, poll=0.1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("races")
    for seed in (8, 9):
        (path / f"data-{seed}.yaml").write_text(yaml.safe_dump({**DATA, "seed": seed}))
    return path


def build_args(seed: int, out: str = "data/race") -> list[str]:
    return ["data", "build", "sudoku", "--config", f"data-{seed}.yaml", "--out", out]


def holder(lock: Path) -> int | None:
    """The pid a lock file names (the killed build's file stays until the next build takes the lock over)."""
    try:
        return json.loads(lock.read_text()).get("pid")
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def killed_build(folder):
    """A build of data/race (seed 9) SIGKILLed once it has a staging folder: what it leaves behind."""
    first = start(folder, *build_args(9))
    wait_for("a staging folder", lambda: any((folder / "data").glob("race.tmp-*")), first)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    return {"staging": list((folder / "data").glob("race.tmp-*")), "lock": (folder / "data" / "race.lock").exists()}


@pytest.fixture(scope="module")
def raced_build(folder, killed_build):
    """After the killed build, two builds of data/race (seeds 8 and 9), the second started while the first holds
    the output: the first is also the next build after the killed one (one process fewer than separate tests)."""
    first = start(folder, *build_args(8))
    wait_for("the first build's lock on data/race", lambda: holder(folder / "data" / "race.lock") == first.pid, first)
    second = start(folder, *build_args(9))
    return finish(second, timeout=120), finish(first)


def test_a_second_build_of_one_output_fails_naming_the_first(raced_build):
    (code, out), _ = raced_build
    assert code == 1, out
    assert "data/race is being written by hrm data build (pid" in out, out
    assert "Traceback" not in out


def test_the_first_build_finishes_untouched(raced_build, folder):
    _, (code, out) = raced_build
    assert code == 0 and "built" in out, out
    assert json.loads((folder / "data" / "race" / "metadata.json").read_text())["seed"] == 8
    code, out = finish(start(folder, "data", "check", "data/race"))
    assert code == 0 and "OK" in out, out
    assert not (folder / "data" / "race.lock").exists()


def test_a_killed_build_leaves_nothing_in_the_way_of_the_next(killed_build, raced_build, folder):
    assert killed_build["staging"] and killed_build["lock"]  # the killed build left its staging folder and lock
    _, (code, out) = raced_build  # the next build of that output (the race's winner) built, and cleaned up
    assert code == 0 and "built" in out, out
    assert not list((folder / "data").glob("race.tmp-*")) and not (folder / "data" / "race.lock").exists()
    assert json.loads((folder / "data" / "race" / "metadata.json").read_text())["seed"] == 8


def train_args(folder: Path, name: str) -> list[str]:
    sets = {"name": name, "data": "data/race", "storage_path": "runs", "flavour": "debug",
            "model.halt_max_steps": 2, "model.forward_dtype": "float32", "global_batch_size": 8, "max_steps": 2,
            "eval_interval": 2, "eval_limit": 8, "eval_samples": 1,
            "tracking.tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", "tracking.experiment": "races"}
    return ["train", *[a for key, value in sets.items() for a in ("--set", f"{key}={value}")]]


HOLDER = """
import sys, time
from pipeline.core import locks
with locks.hold(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    time.sleep(300)
"""


def test_a_second_training_run_of_one_name_fails_naming_the_first_and_touches_nothing(raced_build, folder):
    """A training run holds ``runs/<name>.lock`` from before its first look at the run folder (here a process
    standing in for it: what a whole first run does with its lock is the builds' test above). The real `hrm train`
    of the same name exits 1 at once, naming it, and writes nothing: no run folder, no MLflow run."""
    run = folder / "runs" / "dup"
    run.parent.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    first = subprocess.Popen([sys.executable, "-c", HOLDER, str(run), "hrm train dup"], stdout=subprocess.PIPE,
                             text=True, env=env, start_new_session=True)
    try:
        assert first.stdout.readline().strip() == "held"
        code, out = finish(start(folder, *train_args(folder, "dup")), timeout=120)
        assert code == 1 and f"runs/dup is being written by hrm train dup (pid {first.pid}" in out, out
        assert "Traceback" not in out and not run.exists()  # no run folder
        if (folder / "mlflow.db").exists():
            client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
            assert client.search_runs([e.experiment_id for e in client.search_experiments()],
                                      "tags.mlflow.runName = 'dup'") == []
    finally:
        first.kill()
        first.wait()
