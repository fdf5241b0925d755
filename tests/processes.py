"""Servers that tests start as subprocesses: a free port for them, and a stop that leaves nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Callable

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM the process group ``proc`` leads (started with ``start_new_session=True``), SIGKILL what is left after
    ``grace`` seconds; return once none of the group remains."""
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                proc.wait(timeout=10)
                return
            time.sleep(0.2)
    proc.wait(timeout=10)


def wait_until(what: str, ready: Callable[[], bool], proc: subprocess.Popen, output: Callable[[], str],
               timeout: float = 90, poll: float = 0.2) -> None:
    """Poll ``ready()`` until it is true; fail the test naming ``what``, with the tail of ``output()``, when ``proc``
    exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with {proc.returncode} first:\n{output()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s:\n{output()[-3000:]}")
        time.sleep(poll)
