"""``hrm serve``'s process group without a server (pipeline.serving.supervise.run_group, #17, #31): a SIGTERM reaches
the whole group, which is killed after the grace when it ignores it, and the group dies with its supervisor however
that dies (SIGKILL included). Stub programs stand in for the server; test_serve_limits.py runs a real one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

GRACE = 3

STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the grandchild too
sub = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {sub.pid}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(120)
"""
RUNNER = "import sys; from pipeline.serving.supervise import run_group; sys.exit(run_group(sys.argv[2:], None, float(sys.argv[1])))"


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@contextlib.contextmanager
def supervised(tmp_path: Path, stubborn: bool):
    """``run_group`` (grace 1.5 s) in a process of its own, over a child that starts a grandchild (both ignoring
    SIGTERM when ``stubborn``): (the supervisor, [child pid, grandchild pid]) once both run; all killed after."""
    pids = tmp_path / "pids"
    child = [sys.executable, "-c", STUBBORN if stubborn else STUBBORN.replace("signal.SIG_IGN", "signal.SIG_DFL"),
             str(pids)]
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, "1.5", *child], cwd=Path(__file__).parents[3])
    started = []
    try:
        deadline = time.monotonic() + 60
        while not pids.exists():
            assert runner.poll() is None and time.monotonic() < deadline, "the child never started"
            time.sleep(0.1)
        started = [int(p) for p in pids.read_text().split()]
        yield runner, started
    finally:
        runner.kill()
        runner.wait()
        for pid in started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("stubborn", [True, False])
def test_run_group_passes_sigterm_to_the_group_and_kills_it_after_the_grace(tmp_path, stubborn):
    with supervised(tmp_path, stubborn) as (runner, started):
        began = time.monotonic()
        runner.send_signal(signal.SIGTERM)
        code = runner.wait(timeout=15)
        took = time.monotonic() - began
        time.sleep(0.5)  # the grandchild's end is seen once its parent has gone
        assert [pid for pid in started if alive(pid)] == []
        if stubborn:  # ignored SIGTERM: killed after the grace
            assert code == 128 + signal.SIGKILL and 1.5 <= took < 8, (code, took)
        else:  # ended by the SIGTERM passed on
            assert code == 128 + signal.SIGTERM and took < 8, (code, took)


@pytest.mark.parametrize("stubborn", [True, False])
def test_the_group_dies_with_its_supervisor_however_that_dies(tmp_path, stubborn):
    """The probe's case: `kill -9` of `hrm serve` left the model server serving the port. The launcher leading the
    server's group sees the supervisor's pipe close and ends the group: SIGTERM, then SIGKILL after the grace."""
    with supervised(tmp_path, stubborn) as (runner, started):
        began = time.monotonic()
        runner.send_signal(signal.SIGKILL)  # no handler runs: only the pipe tells
        runner.wait(timeout=15)
        while any(alive(pid) for pid in started) and time.monotonic() - began < 15:
            time.sleep(0.1)
        took = time.monotonic() - began
        assert [pid for pid in started if alive(pid)] == []
        assert (1.5 <= took < 8) if stubborn else took < 3, took  # SIGTERM at once; SIGKILL after the grace
