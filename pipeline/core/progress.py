"""How progress is shown: bars in a terminal, a few plain log lines anywhere else (a file, CI, ``ray job logs``).

The driver (the ``hrm`` process) decides once, from its stdout, or from ``HRM_PROGRESS=bar|lines``
(:func:`progress_mode`), and passes the mode on: to the training workers in the trainer's ``train_loop_config``,
and to the processes of a local Ray through the environment (:func:`setup_driver_output`, called by ``init_ray``).
In ``lines`` mode Ray Data's progress bars and INFO lines are kept off the console (they stay in Ray's log files),
and training progress is one log line every ~10% of the steps (:class:`StepLines`), or of the training-time budget
when the run has one (``max_minutes``: :class:`BudgetLines`); a long data stage says how far it got at least every
30 s (:class:`Heartbeat`).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

log = logging.getLogger(__name__)

ENV_VAR = "HRM_PROGRESS"
MODES = ("bar", "lines")
# Ray Data's notice that its bars are off: noise when we turned them off on purpose.
_RAY_DATA_BARS_OFF = "Progress bars disabled"


def progress_mode(stream: TextIO | None = None) -> str:
    """``"bar"`` or ``"lines"``: ``$HRM_PROGRESS`` when set to one of them, else bars only when ``stream``
    (default stdout) is a terminal."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in MODES:
        return value
    if value:
        log.warning("%s=%r is neither of %s: ignored", ENV_VAR, value, "/".join(MODES))
    stream = sys.stdout if stream is None else stream
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return "lines"


def format_duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``2h05m``; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def crossed(before: float, after: float, total: float, parts: int = 10) -> bool:
    """Whether going from step ``before`` to step ``after`` (of ``total``; or seconds of a budget) passes a
    ``1/parts`` mark; the last step always does. With fewer than ``parts`` steps every step is a mark."""
    if total <= 0 or after <= before:
        return False
    if after >= total:
        return True
    return after * parts // total > before * parts // total


# train metrics shown on a progress line, and their short names
SHOWN = (("train/lm_loss", "loss", ".4g"), ("train/accuracy", "acc", ".3f"), ("train/exact_accuracy", "exact", ".3f"))


class _Lines:
    """What both line displays share: the latest train metrics, the closing line, emitting."""

    step: int
    last_emitted: int
    metrics: dict[str, float]
    emit: Callable[[str], None]

    def line(self) -> str:
        raise NotImplementedError

    def set_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Remember the latest train metrics (keys as logged: ``train/lm_loss``, ...) for the next line."""
        self.metrics = {k: float(metrics[k]) for k, _, _ in SHOWN if k in metrics}

    def close(self) -> str | None:
        """A last line when the run stopped (early, or failed over) after the last line emitted."""
        if self.step > self.last_emitted:
            return self._emit()
        return None

    def _emit(self) -> str:
        text = self.line()
        self.last_emitted = self.step
        self.emit(text)
        return text


class StepLines(_Lines):
    """Training progress as log lines, one each ~10% of the steps and one at the end: step k/N, elapsed, rate,
    ETA and the latest train metrics. ``emit`` receives each line (default: an INFO log line).

    The rate is measured from the first step on, so that the start (the data stream's, compilation) does not skew
    the ETA; the elapsed time counts from the display's creation."""

    def __init__(self, total: int, initial: int = 0, *, parts: int = 10, label: str = "train step",
                 emit: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.total, self.step, self.parts, self.label = int(total), int(initial), parts, label
        self.emit = emit or (lambda line: log.info("%s", line))
        self.clock = clock
        self.initial, self.started = self.step, clock()
        self.first: tuple[int, float] | None = None  # (step, time) at the first update
        self.metrics: dict[str, float] = {}
        self.last_emitted = self.step

    def advance(self, step: int, trained_seconds: float = 0.0) -> str | None:
        """Move to ``step`` (the training loop's call; the seconds are :class:`BudgetLines`'s measure)."""
        return self.update(step - self.step)

    def update(self, n: int = 1) -> str | None:
        """Advance ``n`` steps; returns the line when one was emitted."""
        before, self.step = self.step, self.step + n
        if self.first is None:
            self.first = (self.step, self.clock())
        if crossed(before, self.step, self.total, self.parts):
            return self._emit()
        return None

    def line(self) -> str:
        now = self.clock()
        elapsed = now - self.started
        rate = math.nan
        if self.first is not None:
            first_step, first_time = self.first
            if self.step > first_step and now > first_time:
                rate = (self.step - first_step) / (now - first_time)
            elif elapsed > 0:  # one update so far: its steps over the whole time
                rate = (first_step - self.initial) / elapsed
        eta = (self.total - self.step) / rate if rate > 0 else math.nan
        pct = 100 * self.step / self.total if self.total else 100.0
        parts = [f"{self.label} {self.step}/{self.total} ({pct:.0f}%)", f"{format_duration(elapsed)} elapsed",
                 _rate(rate), f"ETA {format_duration(eta) if self.step < self.total else '0s'}"]
        parts += [f"{short} {self.metrics[k]:{spec}}" for k, short, spec in SHOWN if k in self.metrics]
        return " | ".join(parts)


class BudgetLines(_Lines):
    """Training progress under a wall-clock budget (``max_minutes``) as log lines, one each ~10% of the budget and
    one at the end: training time done of the budget, the step, the pace, the training time left and the latest
    train metrics. Only training time counts, as for the budget itself (evaluations and checkpoints do not)."""

    def __init__(self, budget_seconds: float, initial_seconds: float = 0.0, initial_step: int = 0, *,
                 parts: int = 10, emit: Callable[[str], None] | None = None):
        self.budget, self.seconds, self.step, self.parts = float(budget_seconds), float(initial_seconds), \
            int(initial_step), parts
        self.emit = emit or (lambda line: log.info("%s", line))
        self.first: tuple[int, float] | None = None  # (step, seconds) at the first update
        self.metrics: dict[str, float] = {}
        self.last_emitted = self.step

    def advance(self, step: int, trained_seconds: float) -> str | None:
        """Move to ``step`` after ``trained_seconds`` of training; returns the line when one was emitted."""
        before, self.step, self.seconds = self.seconds, int(step), float(trained_seconds)
        if self.first is None:
            self.first = (self.step, self.seconds)
        if crossed(before, self.seconds, self.budget, self.parts):
            return self._emit()
        return None

    def line(self) -> str:
        rate = math.nan
        if self.first is not None and self.step > self.first[0] and self.seconds > self.first[1]:
            rate = (self.step - self.first[0]) / (self.seconds - self.first[1])
        pct = min(100.0, 100 * self.seconds / self.budget) if self.budget > 0 else 100.0
        parts = [f"training time {format_duration(self.seconds)}/{format_duration(self.budget)} ({pct:.0f}%)",
                 f"step {self.step}", _rate(rate), f"{format_duration(max(self.budget - self.seconds, 0))} left"]
        parts += [f"{short} {self.metrics[k]:{spec}}" for k, short, spec in SHOWN if k in self.metrics]
        return " | ".join(parts)


def _rate(per_second: float) -> str:
    if not per_second > 0:
        return "? steps/s"
    if per_second >= 1:
        return f"{per_second:.3g} steps/s"
    return f"{1 / per_second:.3g} s/step"


class RayBar:
    """A Ray progress bar (``ray.experimental.tqdm_ray``: drawn by the driver) with :class:`StepLines`'s methods;
    the latest train loss goes in its description. It counts steps, or seconds of training under a budget
    (``by_time``)."""

    def __init__(self, total: float, initial: float = 0, desc: str = "train steps", by_time: bool = False):
        from ray.experimental import tqdm_ray

        self.desc, self.by_time = desc, by_time
        self.bar = tqdm_ray.tqdm(total=int(total), desc=desc)
        self.shown = int(initial)
        if self.shown:
            self.bar.update(self.shown)

    def set_metrics(self, metrics: Mapping[str, Any]) -> None:
        if "train/lm_loss" in metrics:
            self.bar.set_description(f"{self.desc} (loss {float(metrics['train/lm_loss']):.4g})")

    def advance(self, step: int, trained_seconds: float = 0.0) -> None:
        target = int(trained_seconds) if self.by_time else int(step)
        if target > self.shown:
            self.bar.update(target - self.shown)
            self.shown = target

    def close(self) -> None:
        self.bar.close()


def make_progress(mode: str | None, total: int, initial: int = 0, budget_seconds: float | None = None,
                  initial_seconds: float = 0.0):
    """The training progress display of ``mode`` (``None``: decided here, see :func:`progress_mode`): against the
    ``total`` steps, or against ``budget_seconds`` of training when the run has a time budget."""
    mode = mode or progress_mode()
    if budget_seconds is not None:
        if mode == "bar":
            return RayBar(budget_seconds, initial_seconds, desc="training seconds", by_time=True)
        return BudgetLines(budget_seconds, initial_seconds, initial)
    return RayBar(total, initial) if mode == "bar" else StepLines(total, initial)


HEARTBEAT_S = 30.0  # the longest a long stage stays silent in ``lines`` mode


class Heartbeat:
    """While a long stage runs (``with Heartbeat(...):``), a log line every ``every_s`` seconds saying how far it
    got: ``say(elapsed_seconds)`` makes the line, in a daemon thread. Only in ``lines`` mode (a terminal has Ray
    Data's bars); a stage that ends sooner prints nothing here (its closing line says it all). A ``say`` that fails
    loses its line, never the stage."""

    def __init__(self, say: Callable[[float], str], every_s: float | None = None, mode: str | None = None):
        import threading

        self.say, self.every_s = say, HEARTBEAT_S if every_s is None else every_s
        self.on = (mode or progress_mode()) == "lines"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="hrm-heartbeat", daemon=True)
        self.started = time.monotonic()

    def __enter__(self) -> Heartbeat:
        self.started = time.monotonic()
        if self.on:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()

    def _beat(self) -> None:
        while not self.stop.wait(self.every_s):
            try:
                line = self.say(time.monotonic() - self.started)
            except Exception as err:  # noqa: BLE001 (a progress line is never worth a failed stage)
                log.debug("progress line failed: %s", err)
                continue
            log.info("%s", line)


def stage_line(name: str, done: int, total: int, unit: str, elapsed: float) -> str:
    """``maze originals: 12/40 chunks (30%), 2m10s elapsed, ETA 5m03s`` (the ETA from the pace so far)."""
    eta = elapsed * (total - done) / done if done else math.nan
    pct = 100 * done / total if total else 100.0
    return (f"{name}: {done:,}/{total:,} {unit} ({pct:.0f}%), {format_duration(elapsed)} elapsed, "
            f"ETA {format_duration(eta)}")


class _QuietBelow(logging.Filter):
    """On a console handler: drop the records of package ``name`` below ``level`` and those whose message starts
    with one of ``drop``. A record is the package's when its logger is ``name`` or a child, or when it was logged
    from a file under ``where`` (the package's folder: some modules name their logger by file path)."""

    def __init__(self, name: str, level: int, drop: tuple[str, ...] = (), where: str | None = None):
        super().__init__()
        self.prefix, self.level, self.drop, self.where = name, level, drop, where

    def ours(self, record: logging.LogRecord) -> bool:
        return (record.name == self.prefix or record.name.startswith(self.prefix + ".")
                or bool(self.where and record.pathname.startswith(self.where)))

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.ours(record):
            return True
        if record.levelno < self.level:
            return False
        return not (self.drop and record.getMessage().startswith(self.drop))


def _consoles(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def quiet_console(name: str, level: int = logging.WARNING, drop: tuple[str, ...] = ()) -> None:
    """Keep package ``name``'s log records below ``level`` off the console handlers (its own and the root
    logger's); file handlers (Ray's session logs) keep everything. Idempotent."""
    module = sys.modules.get(name)
    init = getattr(module, "__file__", None) or ""
    where = os.path.dirname(init) + os.sep if init.endswith("__init__.py") else None
    seen: set[int] = set()
    for handler in _consoles(logging.getLogger(name)) + _consoles(logging.getLogger()):
        if id(handler) in seen:
            continue
        seen.add(id(handler))
        if not any(isinstance(f, _QuietBelow) and f.prefix == name for f in handler.filters):
            handler.addFilter(_QuietBelow(name, level, drop, where))


def quiet_ray_data() -> None:
    """This process's Ray Data: no progress bars (Datasets made from now on copy the setting) and no INFO lines on
    the console; warnings and errors still show."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    quiet_console("ray.data", logging.WARNING, drop=(_RAY_DATA_BARS_OFF,))


# Ray Data's console lines when a task fails: the error and its traceback twice, then an invitation to report a bug
# in Ray. The hrm command says what failed in one line (pipeline.cli.errors); Ray Data's log file keeps it all.
RAY_DATA_TRACEBACK_NOTES = ("Exception occurred in Ray Data or Ray Core internal code", "Full stack trace")


class _WithoutTraceback(logging.Formatter):
    """A console handler's formatter, less the traceback of the records of package ``name``."""

    def __init__(self, inner: logging.Formatter | None, name: str):
        super().__init__()
        self.inner, self.name = inner or logging.Formatter(), name

    def format(self, record: logging.LogRecord) -> str:
        if not (record.name == self.name or record.name.startswith(self.name + ".")):
            return self.inner.format(record)
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def ray_data_errors_without_tracebacks() -> None:
    """Ray Data's console shows a failed task's error line, not its tracebacks and bug-report invitation (its log
    file keeps them; ``hrm --debug`` / ``$HRM_DEBUG`` keeps them on the console too). Idempotent."""
    import ray.data  # noqa: F401 (configures Ray Data's loggers, which this then adjusts)

    for handler in _consoles(logging.getLogger("ray.data")) + _consoles(logging.getLogger()):
        if not isinstance(handler.formatter, _WithoutTraceback):
            handler.setFormatter(_WithoutTraceback(handler.formatter, "ray.data"))
            handler.addFilter(_dropped_notes)


def _dropped_notes(record: logging.LogRecord) -> bool:
    return not (record.name.startswith("ray.data") and record.getMessage().startswith(RAY_DATA_TRACEBACK_NOTES))


def setup_driver_output(mode: str | None = None) -> str:
    """Decide the progress mode of this driver (see :func:`progress_mode`) and set its output up; returns it.

    Records the mode in ``$HRM_PROGRESS`` so that the processes of a Ray started from here (e.g. Tune trials, which
    build their own trainers) follow it. In ``lines`` mode: no ANSI colours in Ray's prefixes of its processes' lines,
    Ray Data without bars or INFO lines on the console, no
    MLflow artifact download bars, and MLflow's and matplotlib's INFO lines (store set-up, input-example checks,
    system-metrics notices, the font cache) only in a verbose run; their warnings still show. The environment
    settings reach the processes of a local Ray (they inherit it) and of a joined cluster (pipeline.core.ray_start)."""
    mode = mode or progress_mode()
    os.environ[ENV_VAR] = mode
    if os.environ.get("HRM_DEBUG", "") in ("", "0"):
        ray_data_errors_without_tracebacks()
    if mode == "lines":
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # Ray prints its processes' lines without colour codes
        quiet_ray_data()
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:  # `hrm -v` keeps them
            os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
            for name in QUIET_LIBRARIES:  # in case it is imported already
                logging.getLogger(name).setLevel(logging.WARNING)
    return mode


# Libraries whose INFO lines a short job's log can do without (lines mode).
QUIET_LIBRARIES = ("mlflow", "matplotlib")
