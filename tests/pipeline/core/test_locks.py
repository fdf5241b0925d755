"""One owner per output (pipeline.core.locks): real processes racing for a lock on a local disk, holders killed with
SIGKILL, and the same on a real S3 API server (moto on 127.0.0.1) with its conditional writes and leases."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.core import locks

ROOT = Path(__file__).resolve().parents[3]


def holder_process(output: str, job: str, seconds: float, *, go: Path | None = None,
                   release: Path | None = None) -> subprocess.Popen:
    """A Python process that, given ``go``, prints ``ready`` and waits for that file; then holds ``output``'s lock
    for ``seconds`` or until the file ``release`` exists, and prints ``held`` (or ``busy: <message>``)."""
    code = f"""
import os, sys, time
from pathlib import Path
from pipeline.core import locks
go, release = {str(go) if go else None!r}, {str(release) if release else None!r}
if go:
    print("ready", flush=True)
while go and not Path(go).exists():
    time.sleep(0.001)
try:
    with locks.hold({output!r}, {job!r}):
        print("held", flush=True)
        end = time.monotonic() + {seconds!r}
        while time.monotonic() < end and not (release and Path(release).exists()):
            time.sleep(0.01)
except locks.OutputBusyError as err:
    print("busy:", err, flush=True)
    sys.exit(3)
"""
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def race(output: str, racers: int, tmp_path: Path) -> list[tuple[int, str]]:
    """``racers`` processes started, each waiting at the start line (``ready``), let go at once; the winner holds
    the lock until every loser has ended. Their exit codes and last lines."""
    go, release = tmp_path / "go", tmp_path / "release"
    procs = [holder_process(output, f"racer {i}", 60, go=go, release=release) for i in range(racers)]
    for proc in procs:
        while (line := proc.stdout.readline()) and line.strip() != "ready":  # a library's warning may come first
            pass
    go.touch()
    deadline = time.monotonic() + 60
    while sum(p.poll() is not None for p in procs) < racers - 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    release.touch()
    return [(p.wait(timeout=60), p.communicate(timeout=60)[0].strip().splitlines()[-1]) for p in procs]


def first_line(proc: subprocess.Popen) -> str:
    """The first line ``proc`` prints (``held`` once it holds the lock)."""
    return proc.stdout.readline().strip()


def test_the_second_holder_is_refused_naming_the_first(tmp_path):
    out = str(tmp_path / "data" / "set")
    with locks.hold(out, "hrm data build"):
        lock_file = Path(out + ".lock")
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        with pytest.raises(locks.OutputBusyError, match=rf"being written by hrm data build \(pid {os.getpid()} on"):
            with locks.hold(out, "hrm data build"):
                pass
    assert not lock_file.exists()  # released: gone
    with locks.hold(out, "again"):  # and free
        pass


@pytest.mark.parametrize("racers", [2, 6])
def test_processes_racing_for_one_output_get_exactly_one_owner(tmp_path, racers):
    ended = race(str(tmp_path / "race"), racers, tmp_path)
    outputs = [line for _, line in ended]
    assert sum(o == "held" for o in outputs) == 1, outputs
    losers = [o for o in outputs if o != "held"]
    assert all(o.startswith("busy:") and "being written by racer" in o for o in losers), outputs
    assert sorted(code for code, _ in ended) == [0] + [3] * (racers - 1)


def test_a_lock_left_by_a_killed_holder_is_taken_over(tmp_path, caplog):
    out = str(tmp_path / "out")
    proc = holder_process(out, "doomed", 600)
    assert first_line(proc) == "held"
    with pytest.raises(locks.OutputBusyError, match="doomed"):
        with locks.hold(out, "next"):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert Path(out + ".lock").exists()  # left behind, still naming the dead job
    with caplog.at_level(logging.INFO, logger="pipeline.core.locks"):
        with locks.hold(out, "next"):
            assert json.loads(Path(out + ".lock").read_text())["job"] == "next"
    assert "took over the lock left by doomed" in caplog.text


def test_holder_records_say_when_they_are_stale():
    me = locks.Holder.me("job")
    assert not me.stale()
    assert locks.Holder("job", me.host, 2**22 + 12345, me.since).stale()  # this host, no such pid
    assert not locks.Holder("job", "another-host", 2**22 + 12345, me.since).stale()  # cannot tell: not stale
    assert locks.Holder("job", "another-host", 1, me.since, expires=time.time() - 1).stale()  # lease ran out
    assert locks.Holder.parse(b"") is None and locks.Holder.parse(b"{\"job\": 1}") is None


# ------------------------------------------------------------------------------------------------ S3
@pytest.fixture
def s3_out(s3, request):
    return s3.uri(f"locks/{request.node.name}")


def put_holder(s3, out: str, holder: locks.Holder) -> None:
    key = out.split("/", 3)[3] + ".lock"
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=holder.encode())


def test_s3_second_holder_is_refused_and_the_lock_removed_at_the_end(s3, s3_out):
    with locks.hold(s3_out, "first"):
        assert s3.keys(s3_out.split("/", 3)[3]) == [s3_out.split("/", 3)[3] + ".lock"]
        with pytest.raises(locks.OutputBusyError, match="being written by first"):
            with locks.hold(s3_out, "second"):
                pass
    assert s3.keys(s3_out.split("/", 3)[3]) == []


def test_s3_processes_racing_get_exactly_one_owner(s3, s3_out, tmp_path):
    ended = race(s3_out, 4, tmp_path)
    assert sum(line == "held" for _, line in ended) == 1, ended
    assert sorted(code for code, _ in ended) == [0, 3, 3, 3], ended


def test_s3_lock_of_a_killed_holder_on_this_host_is_taken_at_once(s3, s3_out):
    proc = holder_process(s3_out, "doomed", 600)
    assert first_line(proc) == "held"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with locks.hold(s3_out, "next"):  # its pid is gone: stale although its lease runs for minutes
        pass


def test_s3_lock_of_another_host_waits_for_its_lease(s3, s3_out):
    alive = locks.Holder("hrm train x", "elsewhere", 1, time.time(), expires=time.time() + 300)
    put_holder(s3, s3_out, alive)
    with pytest.raises(locks.OutputBusyError, match=r"hrm train x \(pid 1 on elsewhere"):
        with locks.hold(s3_out, "next"):
            pass
    put_holder(s3, s3_out, locks.Holder("hrm train x", "elsewhere", 1, time.time() - 400,
                                        expires=time.time() - 100))
    with locks.hold(s3_out, "next"):
        pass


def test_s3_lease_is_renewed_while_held_and_a_lost_lock_is_reported(s3, s3_out):
    lock = locks.ObjectLock(s3_out, "holder", lease=1.5)
    lock.acquire()
    try:
        time.sleep(2.5)  # past the first lease: renewed, so still ours
        with pytest.raises(locks.OutputBusyError, match="holder"):
            locks.ObjectLock(s3_out, "other", lease=1.5).acquire()
        lock.check()
        put_holder(s3, s3_out, locks.Holder("thief", "elsewhere", 1, time.time(), expires=time.time() + 60))
        time.sleep(1.2)  # the next renewal finds another job's lock
        with pytest.raises(locks.OutputBusyError, match="another job took it over"):
            lock.check()
    finally:
        lock.release()
    assert s3.keys(s3_out.split("/", 3)[3])  # the thief's lock stays: a lost lock is not ours to delete


def test_gs_outputs_are_written_without_a_lock_and_say_so(caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.core.locks"):
        with locks.hold("gs://bucket/data/x", "build") as lock:
            lock.check()
    assert "no lock on gs://" in caplog.text


def test_s3_lock_in_a_missing_bucket_is_an_error_naming_it(s3):
    with pytest.raises(OSError, match=r"s3://no-such-bucket-for-hrm/x: cannot take its lock s3://no-such-bucket-for-hrm/"
                                      r"x\.lock"):
        with locks.hold("s3://no-such-bucket-for-hrm/x", "build"):
            pass


def test_a_second_sweep_of_one_name_is_refused_by_hrm_tune(tmp_path, monkeypatch):
    """``hrm tune`` takes its sweep folder's lock before reading anything (here another process holds it)."""
    from click.testing import CliRunner

    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text("name: s\nstorage_path: runs/sweeps\n")
    proc = holder_process(str(tmp_path / "runs" / "sweeps" / "s"), "hrm tune s", 600)
    try:
        assert first_line(proc) == "held"
        result = CliRunner().invoke(main, ["tune", "--config", "s.yaml"])
    finally:
        proc.kill()
        proc.wait()
    assert result.exit_code == 1 and "runs/sweeps/s is being written by hrm tune s (pid" in result.output, \
        result.output
