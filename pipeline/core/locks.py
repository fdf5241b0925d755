"""One owner per output: a dataset build and a training run hold a lock on their output for the job's whole life.

The lock is ``<output>.lock``, beside the output (a dataset folder is replaced by a rename, a run folder can be
removed: the lock outlives both). It says who holds it — job, host, pid, since — so the job that loses names the
holder. It is taken before any check of the output, so two jobs can never both find the output free.

- Local disk or a shared mount: the file is held with an exclusive ``flock``. The kernel releases it when the
  holder dies however it dies (SIGKILL, out of memory), so a lock left by a dead job is stale by construction: the
  next job takes it at once. On a filesystem without file locks (an NFS mount with ``nolock``) a warning says the
  output is not protected, and the job goes on.
- ``s3://``: S3 conditional writes. The lock object is created with ``If-None-Match: *`` (exactly one creator
  wins), carries a lease that the holder renews every ``LEASE_SECONDS / 3`` with ``If-Match`` on its own ETag, and
  is stale once the lease has run out, or at once when its holder ran on this host and its pid is gone. A stale
  lock is taken over with ``If-Match`` on the stale object's ETag, so of two jobs taking it over one wins. A holder
  that could not renew (it was stalled past its lease, and another job took over) learns it at ``check()``.
- ``gs://``: no conditional writes through pyarrow; a warning says the output is not protected.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from pipeline.core import storage

log = logging.getLogger(__name__)

LEASE_SECONDS = 120.0  # object stores: a lock not renewed for this long is stale (its holder stopped)
SUFFIX = ".lock"


class OutputBusyError(FileExistsError):
    """Another job holds the output (its lock names it)."""


@dataclass
class Holder:
    """Who holds a lock: the job (``hrm data build``…), the host and pid that run it, when it started, and on an
    object store until when its lease runs (epoch seconds)."""

    job: str
    host: str
    pid: int
    since: float
    expires: float | None = None

    @classmethod
    def me(cls, job: str, lease: float | None = None) -> "Holder":
        now = time.time()
        return cls(job=job, host=socket.gethostname(), pid=os.getpid(), since=now,
                   expires=None if lease is None else now + lease)

    @classmethod
    def parse(cls, data: bytes) -> "Holder | None":
        """The holder recorded in a lock's bytes; None when they hold none (being written, or damaged)."""
        try:
            found = json.loads(data.decode("utf-8"))
            return cls(job=str(found["job"]), host=str(found["host"]), pid=int(found["pid"]),
                       since=float(found["since"]), expires=found.get("expires"))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode("utf-8")

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"{self.job} (pid {self.pid} on {self.host}, since {started})"

    def stale(self, now: float | None = None) -> bool:
        """Its lease ran out, or it ran on this host and its process is gone."""
        now = time.time() if now is None else now
        if self.expires is not None and now > self.expires:
            return True
        return self.host == socket.gethostname() and not pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this host (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_location(output: str | Path) -> str:
    """``<output>.lock``: where the lock of an output (a dataset, a run folder) lives."""
    return storage.normalize(output) + SUFFIX


def busy(output: str, holder: Holder | None) -> OutputBusyError:
    who = holder.describe() if holder else "another job (it is just starting)"
    return OutputBusyError(f"{output} is being written by {who}; wait for it to end, or choose another output "
                           f"(its lock: {output}{SUFFIX})")


# ------------------------------------------------------------------------------------------------ local disk
class FileLock:
    """An exclusive ``flock`` on ``<output>.lock``, with the holder written in it."""

    def __init__(self, output: str, job: str):
        self.output, self.job = output, job
        self.path = output + SUFFIX
        self.fd: int | None = None
        self.made: list[Path] = []  # folders made for the lock file, removed with it when left empty

    def acquire(self) -> None:
        self.made = _make_parents(Path(self.path).parent)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # another job's lock removed the folder it had made: make it again
                self.made += _make_parents(Path(self.path).parent)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise busy(self.output, holder) from None
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                log.warning("%s: this filesystem has no file locks (%s): nothing stops another job from writing "
                            "%s at the same time", self.path, err.strerror, self.output)
                return
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed it between our open and our lock: take the new one
        left = Holder.parse(os.pread(fd, 4096, 0))
        if left is not None:
            log.info("%s: took over the lock left by %s, which is no longer running", self.output, left.describe())
        os.ftruncate(fd, 0)
        os.pwrite(fd, Holder.me(self.job).encode(), 0)
        os.fsync(fd)
        self.fd = fd

    def check(self) -> None:
        """Nothing can take a held flock: always fine."""

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # still held: nobody can have replaced it
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None
        for folder in reversed(self.made):  # a job that failed at once leaves no empty folder behind
            try:
                folder.rmdir()
            except OSError:
                break


def _make_parents(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents; the ones made, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    missing.reverse()
    for path in missing:
        path.mkdir(exist_ok=True)
    return missing


def _read_holder(fd: int, wait: float = 1.0) -> Holder | None:
    """The holder written in a held lock file, waiting up to ``wait`` seconds for a holder that has just taken it
    to write its name."""
    deadline = time.monotonic() + wait
    while True:
        holder = Holder.parse(os.pread(fd, 4096, 0))
        if holder is not None or time.monotonic() > deadline:
            return holder
        time.sleep(0.02)


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------------------------------------ S3
class ObjectLock:
    """A lease on ``s3://bucket/<output>.lock`` kept by conditional writes (see the module's docstring)."""

    def __init__(self, output: str, job: str, lease: float | None = None):
        self.output, self.job, self.lease = output, job, lease or LEASE_SECONDS
        bucket, _, key = output.split("://", 1)[1].partition("/")
        self.bucket, self.key = bucket, key + SUFFIX
        self.etag: str | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client = _s3_client()

    def acquire(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._take()
        except (BotoCoreError, ClientError) as err:  # no such bucket, access denied, store unreachable
            raise OSError(f"{self.output}: cannot take its lock s3://{self.bucket}/{self.key}: {err}") from err
        self._thread = threading.Thread(target=self._renew, name="output-lock", daemon=True)
        self._thread.start()

    def _take(self) -> None:
        """Create the lock, or take over a stale one; OutputBusyError naming a live holder."""
        for _ in range(5):  # a lock released between our create and our read: try again
            if self._put(if_none_match=True):
                break
            got = self._get()
            if got is None:
                continue
            holder, etag = got
            if holder is not None and not holder.stale():
                raise busy(self.output, holder)
            if not self._put(if_match=etag):
                got = self._get()  # another job took it over first
                raise busy(self.output, got[0] if got else None)
            log.info("%s: took over the lock left by %s", self.output,
                     holder.describe() if holder else "a job that wrote no holder")
            break
        else:
            raise busy(self.output, None)

    def _put(self, *, if_none_match: bool = False, if_match: str | None = None) -> bool:
        """Write our holder conditionally; False when the condition failed (someone else's lock is there)."""
        from botocore.exceptions import ClientError

        extra: dict[str, Any] = {"IfNoneMatch": "*"} if if_none_match else {"IfMatch": if_match}
        try:
            reply = self.client.put_object(Bucket=self.bucket, Key=self.key,
                                           Body=Holder.me(self.job, self.lease).encode(), **extra)
        except ClientError as err:
            if _precondition_failed(err):
                return False
            raise
        self.etag = reply["ETag"]
        return True

    def _get(self) -> tuple[Holder | None, str] | None:
        from botocore.exceptions import ClientError

        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return Holder.parse(reply["Body"].read()), reply["ETag"]

    def _renew(self) -> None:
        """Renew the lease every third of it, conditionally on our own ETag; a failed condition: the lock is lost."""
        from botocore.exceptions import BotoCoreError, ClientError

        while not self._stop.wait(self.lease / 3):
            try:
                if not self._put(if_match=self.etag):
                    self.lost = "another job took it over after this one could not renew its lease in time"
                    log.error("%s: lost the lock: %s", self.output, self.lost)
                    return
            except (BotoCoreError, ClientError) as err:  # the store unreachable for a moment: try again
                log.warning("%s: could not renew the lock (%s); trying again", self.output, err)

    def check(self) -> None:
        """Raise when the lock was lost (another job may have written the output meanwhile)."""
        if self.lost:
            raise OutputBusyError(f"{self.output}: {self.lost}; this job stops without writing more")

    def release(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.lost or self.etag is None:
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except ClientError as err:
            if not _precondition_failed(err):
                log.warning("%s: could not remove the lock (%s); it goes stale when its lease ends", self.output,
                            err)
        except BotoCoreError as err:
            log.warning("%s: could not remove the lock (%s); it goes stale when its lease ends", self.output, err)


def _precondition_failed(err: Any) -> bool:
    code = err.response.get("Error", {}).get("Code")
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)


def _s3_client():
    import boto3

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return boto3.client("s3", endpoint_url=storage.endpoint_override(), region_name=region,
                        config=storage.s3_client_config())


class NoLock:
    """Where no lock can be taken (``gs://``): a warning, and nothing held."""

    def __init__(self, output: str, job: str):
        self.output = output

    def acquire(self) -> None:
        log.warning("%s: no lock on %s:// (no conditional writes): nothing stops another job from writing it at "
                    "the same time", self.output, storage.scheme(self.output))

    def check(self) -> None:
        pass

    def release(self) -> None:
        pass


@contextmanager
def hold(output: str | Path, job: str) -> Iterator[Any]:
    """Hold the lock of ``output`` (a local path, ``s3://`` or ``gs://`` URI) while the block runs; raises
    ``OutputBusyError`` naming the holder when another job holds it. The lock's ``check()`` raises if it was lost."""
    output = storage.normalize(output)
    kind = {"": FileLock, "s3": ObjectLock}.get(storage.scheme(output), NoLock)
    lock = kind(output, job)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


__all__ = ["hold", "lock_location", "OutputBusyError", "Holder", "LEASE_SECONDS", "FileLock", "ObjectLock"]
