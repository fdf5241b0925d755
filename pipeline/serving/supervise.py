"""Running a server as a supervised process group: ``hrm serve`` runs MLflow's scoring server (``mlflow models
serve``, which starts ``uvicorn`` as its own child) this way, so that a SIGTERM stops all of it within seconds even
while a request is being computed (MLflow computes it in a thread the interpreter would wait for), and so that the
server dies with ``hrm serve`` however that dies. The group is led by a small launcher (:data:`LAUNCHER`) that starts
the server and holds the read end of a pipe whose only write end ``hrm serve`` holds; when ``hrm serve`` is gone
(even by SIGKILL, which no handler sees) the pipe reads end-of-file and the launcher ends the group (SIGTERM, then
SIGKILL after the grace). It ends as the server ended (its exit status, or the same signal)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

logger = logging.getLogger(__name__)

FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP")  # passed on to the server's whole group
LAUNCHER = """
import os, signal, subprocess, sys, threading, time
fd, grace, args = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
for name in ("SIGTERM", "SIGINT", "SIGHUP"):  # the group's signals are for the server; a handler (not SIG_IGN)
    signal.signal(getattr(signal, name), lambda *_: None)  # is reset by exec, so the server gets the default
server = subprocess.Popen(args)


def watch():
    while os.read(fd, 1):  # end-of-file once the supervisor is gone, however it went
        pass
    os.killpg(0, signal.SIGTERM)
    time.sleep(grace)
    os.killpg(0, signal.SIGKILL)


threading.Thread(target=watch, daemon=True).start()
code = server.wait()
if code < 0:  # ended by a signal: end the same way, so the supervisor sees it
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def run_group(args: list[str], env: dict[str, str] | None, grace: float) -> int:
    """Run ``args`` (in ``env``; None: this one's) as the leader of a new session (its own process group, with
    whatever it starts) until it exits; SIGTERM / SIGINT / SIGHUP received meanwhile are passed on to the whole
    group, which then has ``grace`` seconds to end before it is killed (SIGKILL); leftovers of a child that ended
    by itself get SIGTERM, then the same. Returns an exit status: the child's, or 128 + N when signal N ended it."""
    received: list[int] = []
    group: list[int] = []

    def forward(signum, _frame) -> None:
        received.append(signum)
        for pgid in group:
            _signal_group(pgid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (getattr(signal, name) for name in FORWARDED)}
    proc, read, write = None, *os.pipe()  # not inheritable: only this process ever holds the write end
    try:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(read), str(grace), *args], env=env,
                                start_new_session=True, pass_fds=(read,))
        os.close(read)
        group.append(proc.pid)
        if received:  # a signal that came before the child did
            _signal_group(proc.pid, received[-1])
        while proc.poll() is None and not received:
            time.sleep(0.2)
        if received:
            logger.info("%s: stopping the server (killed if still running in %g s)",
                        signal.Signals(received[0]).name, grace)
        else:
            _signal_group(proc.pid, signal.SIGTERM)  # what the child left behind, if anything
        _end_group(proc, grace)
    finally:
        os.close(write)  # the launcher is gone by now, or (an error here) its watchdog ends the group
        if proc is None:
            os.close(read)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode


def _signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to process group ``pgid``; nothing when the group is gone."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def _end_group(proc, grace: float) -> None:
    """Wait up to ``grace`` seconds for ``proc`` (a subprocess.Popen leading its own group) and the rest of its
    group to end, then SIGKILL what is left; return once ``proc`` has been waited for."""
    def alive() -> bool:
        proc.poll()  # reaps the leader once it has ended
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    deadline = time.monotonic() + grace
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive():
        logger.warning("the server's processes did not end within %g s: killing them", grace)
        _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


__all__ = ["run_group", "FORWARDED"]
