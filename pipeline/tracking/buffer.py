"""Buffered MLflow logging for the rank-0 training worker: an unreachable tracking server does not stall training.

:class:`BufferedRunLogger` has :class:`pipeline.tracking.runs.RunLogger`'s methods (``log``, ``log_params``,
``set_tags``) and ``log_image``; they queue and return at once, and one daemon thread sends the queue in order
(metric batches merged up to MLflow's 1000 metrics per ``log_batch``; every metric keeps its step and the time it was
logged at). When a send fails for want of the server (a refused or timed-out connection, a 5xx, a rate limit) the
thread warns once (the tracking URI, the error, what is buffered, the deadline) and tries again with back-off (1 s
doubling up to 60 s); once the server answers it sends the backlog and says so. Training stops
(:class:`TrackingUnreachable`, raised by the next ``log`` call) only when the server has been unreachable longer than
``tracking.unreachable_minutes``. An error the server answers with (a refused value, a deleted run) is no outage: the
next call raises it, as the unbuffered logger raised it at once.

MLflow's own retries of each HTTP request (7, with back-off, and 120 s per attempt) would hide an outage for minutes:
this process's are lowered to ``HTTP_DEFAULTS`` unless the user set $MLFLOW_HTTP_REQUEST_MAX_RETRIES or
$MLFLOW_HTTP_REQUEST_TIMEOUT (:func:`lower_http_retries`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)
MAX_METRICS = 1000  # MLflow's limit of metrics in one log_batch
STUCK_SECONDS = 10.0  # a send without an answer this long is reported (a server that takes connections, silent)
FAILED_CLOSE_SECONDS = 30.0  # how long closing waits on the way out of a failed run
# MLflow's HTTP retries in the rank-0 worker: 2 retries (≈ 5 s against a dead server) and 15 s per attempt
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
# MLflow error codes of an outage (a failed connection is INTERNAL_ERROR): retried, not raised
OUTAGE_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}


class TrackingUnreachable(RuntimeError):
    """The tracking server has been unreachable longer than ``tracking.unreachable_minutes``: training stops."""


def lower_http_retries(environ: MutableMapping[str, str] = os.environ) -> None:
    """Lower MLflow's retries of one HTTP request in this process to ``HTTP_DEFAULTS``, keeping what the user set."""
    for key, value in HTTP_DEFAULTS.items():
        environ.setdefault(key, value)


def is_outage(err: BaseException) -> bool:
    """Whether a failed send is the server's absence (retried), not an answer refusing it (raised)."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        return err.error_code in OUTAGE_CODES
    return isinstance(err, OSError)  # requests' errors are OSErrors


@dataclass
class Item:
    """One call: ``kind`` "metrics" (``payload`` a list of mlflow Metric), "params" or "tags" (a dict), "image"
    (a dict of MlflowClient.log_image's arguments)."""

    kind: str
    payload: Any


@dataclass
class Recovery:
    """The server is back after ``down_seconds``: ``left`` of the items buffered meanwhile still to send."""

    down_seconds: float
    left: int
    sent: int = 0


def describe(items: list[Item]) -> str:
    """What ``items`` hold, for a message: ``3 items (20 metrics of steps 40-80, 1 params)``."""
    metrics = [m for item in items if item.kind == "metrics" for m in item.payload]
    parts = [f"{len(metrics)} metrics of steps {min(m.step for m in metrics)}-{max(m.step for m in metrics)}"]
    parts = parts if metrics else []
    for kind in ("params", "tags"):
        count = sum(len(item.payload) for item in items if item.kind == kind)
        if count:
            parts.append(f"{count} {kind}")
    images = sum(item.kind == "image" for item in items)
    if images:
        parts.append(f"{images} images")
    return f"{len(items)} items ({', '.join(parts)})" if parts else f"{len(items)} items"


def short(err: BaseException, limit: int = 200) -> str:
    """An error's text cut to ``limit`` characters (MLflow's connection errors run to a screenful)."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else f"{text[:limit]}…"


def duration(seconds: float) -> str:
    """``42.0 s`` below two minutes, ``12.5 min`` above."""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def clock_time(seconds_from_now: float) -> str:
    """The local wall-clock time in ``seconds_from_now``, e.g. ``2026-12-01 15:42:07+00:00``."""
    return datetime.fromtimestamp(time.time() + seconds_from_now).astimezone().isoformat(" ", timespec="seconds")


class BufferedRunLogger:
    """Logs metric batches, params and tags to one MLflow run through a queue and a daemon sender thread (used by
    the rank-0 worker; see the module's docstring). ``unreachable_minutes``: how long the server may be unreachable
    before ``log`` raises TrackingUnreachable; ``backoff``: the first and the longest pause between tries;
    ``stuck_seconds``: a send without an answer this long is reported. ``close`` sends what is left."""

    def __init__(self, tracking_uri: str, run_id: str, unreachable_minutes: float = 30.0, *,
                 backoff: tuple[float, float] = (1.0, 60.0), stuck_seconds: float = STUCK_SECONDS):
        from pipeline.tracking.runs import RunLogger

        lower_http_retries()  # before the client makes its first request
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self.minutes, self.limit = unreachable_minutes, unreachable_minutes * 60  # the limit, and in seconds
        self.backoff, self.stuck_seconds = backoff, stuck_seconds
        self.skip_through = 0  # metrics of steps up to this one are dropped: the run holds them from before a restart
        self.sender = RunLogger(tracking_uri, run_id)
        self._items: deque[Item] = deque()  # the queue; its head stays in it until sent
        self._cond = threading.Condition()
        self._down_since: float | None = None  # time.monotonic() when the first failed send of an outage started
        self._in_flight: float | None = None  # when the send in progress started
        self._stuck_warned = False
        self._recovery: Recovery | None = None
        self._refused: Exception | None = None  # an error the server answered with: the next call raises it
        self._stopping = False  # closing: send what is queued, then end
        self._abandoned = False  # closing gave up: end now
        self._closed = False
        self._thread = threading.Thread(target=self._send_loop, name="mlflow-run-logger", daemon=True)
        self._thread.start()

    # the training thread

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Queue ``metrics`` at ``step``, stamped now. Raises TrackingUnreachable once the server has been
        unreachable longer than the limit, and the error of an item the server refused."""
        from mlflow.entities import Metric

        self.check()
        if step <= self.skip_through:  # already in the run, from before a restart (pipeline.train.worker)
            return
        now = int(time.time() * 1000)
        batch = [Metric(key=k, value=float(v), timestamp=now, step=step) for k, v in metrics.items()]
        for start in range(0, len(batch), MAX_METRICS):
            self._put(Item("metrics", batch[start:start + MAX_METRICS]))

    def log_params(self, params: dict[str, Any]) -> None:
        """Queue params known only on a worker; sent by ``RunLogger.log_params`` (on a resumed run that logged
        another value before, the first value stays and the new one goes to the tag ``<key>.resumed``)."""
        self.check()
        self._put(Item("params", dict(params)))

    def set_tags(self, tags: dict[str, str]) -> None:
        self.check()
        self._put(Item("tags", {k: str(v) for k, v in tags.items()}))

    def log_image(self, image: Any, key: str, step: int) -> None:
        """Queue a picture (RGB pixels (H, W, 3) uint8) as the run's image ``key`` at ``step``, stamped now (MLflow
        keeps one per step and shows them with a step slider); dropped like metrics for steps from before a restart."""
        self.check()
        if step <= self.skip_through:
            return
        self._put(Item("image", {"image": image, "key": key, "step": step, "timestamp": int(time.time() * 1000)}))

    def _put(self, item: Item) -> None:
        with self._cond:
            if self._stopping:
                raise RuntimeError(f"the MLflow logger of run {self.run_id} is closed")
            self._items.append(item)
            self._cond.notify_all()

    def check(self) -> None:
        """Raise what stops training: the error of a refused item, TrackingUnreachable past the limit (naming the
        URI, how long, and that the checkpoints let ``hrm train --resume`` continue)."""
        with self._cond:
            refused = self._refused
        if refused is not None:
            raise refused
        down = self._watch()
        if down is not None and down > self.limit:
            with self._cond:
                buffered = describe(list(self._items))
            raise TrackingUnreachable(
                f"MLflow tracking server {self.tracking_uri} has been unreachable for {duration(down)} "
                f"(tracking.unreachable_minutes = {self.minutes:g}): training stops here, {buffered} not logged "
                f"to run {self.run_id}. Its checkpoints are kept: once the server is back, `hrm train --resume` "
                "(same config) continues the run.")

    def _watch(self) -> float | None:
        """How long the server has been unreachable (an outage, or a send in flight), None when it is not; warns
        once when the send in flight has had no answer for ``stuck_seconds`` outside a known outage."""
        now = time.monotonic()
        with self._cond:
            down, in_flight = self._down_since, self._in_flight
            stuck = (down is None and in_flight is not None and now - in_flight > self.stuck_seconds
                     and not self._stuck_warned)
            self._stuck_warned = self._stuck_warned or stuck
            buffered = describe(list(self._items)) if stuck else ""
        if stuck:
            log.warning("MLflow tracking server %s has not answered for %.0f s (%s buffered): training goes on; it "
                        "stops at %s (tracking.unreachable_minutes = %g) unless the server answers by then",
                        self.tracking_uri, now - in_flight, buffered, clock_time(self.limit - (now - in_flight)),
                        self.minutes)
        starts = [t for t in (down, in_flight) if t is not None]
        return now - min(starts) if starts else None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued item is sent: at most ``timeout`` seconds (None: the unreachable limit), and
        not past the limit of an outage. True when all were sent."""
        end = time.monotonic() + (self.limit if timeout is None else timeout)
        while True:
            with self._cond:
                if not self._items or self._refused is not None:
                    return not self._items
            down = self._watch()
            left = end - time.monotonic()
            if left <= 0 or (down is not None and down > self.limit):
                return False
            with self._cond:
                self._cond.wait(timeout=min(0.5, left))

    def settle(self, timeout: float = 10.0) -> bool:
        """Before a report that may end this run (Ray Tune's scheduler stops a trial at a report; its workers are
        then killed with what they buffered): wait at most ``timeout`` seconds for the queue to be sent, but not at
        all while the server is down (training does not wait on an outage). True when nothing is left."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._items and self._down_since is None and self._refused is None:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(timeout=min(0.1, left))
            return not self._items

    def close(self, timeout: float | None = None) -> bool:
        """Send what is queued (waiting as ``flush`` does) and stop the sender; a warning says what was not sent.
        The worker calls it at the end of training, and with ``FAILED_CLOSE_SECONDS`` on the way out of a failed
        run. True when everything was sent."""
        if self._closed:
            return not self._items
        self._closed = True
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        sent = self.flush(timeout)
        with self._cond:
            self._abandoned = True
            self._cond.notify_all()
            left, refused, down = list(self._items), self._refused, self._down_since
        if left:
            why = (f"the server refused an item: {refused}" if refused is not None else
                   f"unreachable for {duration(time.monotonic() - down)}" if down is not None else "no answer in time")
            log.warning("MLflow tracking server %s (%s): %s not logged to run %s, lost", self.tracking_uri, why,
                        describe(left), self.run_id)
        self._thread.join(timeout=1)
        return sent

    # the sender thread

    def _send_loop(self) -> None:
        """Send the queue's head (its next metric items merged) until closing ends it; pause with back-off while
        the server is unreachable; stop at an error the server answers with (``check`` raises it)."""
        delay = self.backoff[0]
        while True:
            with self._cond:
                while not self._items and not self._stopping:
                    self._cond.wait()
                if self._abandoned or not self._items:
                    return
                batch = self._head()
                started = self._in_flight = time.monotonic()
            try:
                self._send(batch)
            except Exception as err:  # noqa: BLE001 (an outage is retried; anything else goes to the training thread)
                if self._abandoned:  # closing gave up on it: nothing more to say
                    return
                if not is_outage(err):
                    with self._cond:
                        self._refused, self._in_flight = err, None
                        self._cond.notify_all()
                    return
                self._failed(err, started)
                with self._cond:
                    self._cond.wait_for(lambda: self._abandoned, timeout=delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            self._sent(len(batch))
            delay = self.backoff[0]

    def _head(self) -> list[Item]:
        """The queue's first item; with the metric items after it, up to MAX_METRICS metrics, when it is one."""
        batch = [self._items[0]]
        if batch[0].kind == "metrics":
            count = len(batch[0].payload)
            for item in list(self._items)[1:]:
                if item.kind != "metrics" or count + len(item.payload) > MAX_METRICS:
                    break
                batch.append(item)
                count += len(item.payload)
        return batch

    def _send(self, batch: list[Item]) -> None:
        head = batch[0]
        if head.kind == "params":
            self.sender.log_params(head.payload)
        elif head.kind == "tags":
            self.sender.set_tags(head.payload)
        elif head.kind == "image":
            self.sender.client.log_image(self.run_id, **head.payload, synchronous=True)
        else:
            self.sender.client.log_batch(self.run_id, metrics=[m for item in batch for m in item.payload])

    def _failed(self, err: Exception, started: float) -> None:
        """A send failed for want of the server: the first failure of an outage is reported, the next ones only
        in the debug log."""
        with self._cond:
            self._in_flight = None
            first = self._down_since is None
            if first:
                self._down_since = started
            down, buffered = time.monotonic() - self._down_since, describe(list(self._items))
        if first:
            log.warning("MLflow tracking server %s is unreachable (%s): %s buffered, retrying with back-off; "
                        "training goes on, and stops at %s (tracking.unreachable_minutes = %g) unless the server "
                        "is back by then", self.tracking_uri, short(err), buffered, clock_time(self.limit - down),
                        self.minutes)
        else:
            log.debug("MLflow tracking server %s still unreachable after %s: %s", self.tracking_uri,
                      duration(down), short(err))

    def _sent(self, count: int) -> None:
        """``count`` items were sent: off the queue; after an outage, one line once its backlog is sent."""
        with self._cond:
            for _ in range(count):
                self._items.popleft()
            stuck, self._in_flight, self._stuck_warned = self._stuck_warned, None, False
            if self._down_since is not None:
                self._recovery = Recovery(time.monotonic() - self._down_since, left=count + len(self._items))
                self._down_since = None
            done = self._recovery
            if done is not None:
                done.sent, done.left = done.sent + count, done.left - count
                self._recovery = None if done.left <= 0 else done
            self._cond.notify_all()
        if done is not None and done.left <= 0:
            log.info("MLflow tracking server %s is back: the %d items buffered while it was unreachable (%s) "
                     "are sent", self.tracking_uri, done.sent, duration(done.down_seconds))
        elif stuck:
            log.info("MLflow tracking server %s answers again", self.tracking_uri)
