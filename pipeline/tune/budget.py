"""A sweep's wall-clock limits: ``time_budget_s`` for the whole sweep, counted across its parts (each ``--resume``
adds the time it ran to ``<sweep>/time_spent.json``), and ``--stop-after`` for this part alone. Either ends the part
as Ctrl-C does — Ray Tune's graceful stop (SIGUSR1 to the driver), its state saved — and says which it was: a spent
budget ends the sweep with what it has, a part's end leaves it to ``--resume``."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

from pipeline.core import storage

log = logging.getLogger(__name__)
SPENT_FILE = "time_spent.json"


class SweepClock:
    """Arms a timer for the sooner of the budget's rest and ``stop_after_s`` when ``start`` is called; ``stop``
    cancels it and adds the time run to the sweep folder's record. ``reason`` afterwards: "budget", "part" or
    None (the trials ended first)."""

    def __init__(self, folder: Path, budget_s: float | None, stop_after_s: float | None = None):
        self.folder, self.budget_s, self.stop_after_s = Path(folder), budget_s, stop_after_s
        self.reason: str | None = None
        self._timer: threading.Timer | None = None
        self._started: float | None = None

    @property
    def spent_s(self) -> float:
        """Wall seconds the sweep's earlier parts ran."""
        path = self.folder / SPENT_FILE
        return float(json.loads(path.read_text())["seconds"]) if path.is_file() else 0.0

    def left_s(self) -> float | None:
        """Seconds of the budget not yet spent (None: no budget)."""
        return None if self.budget_s is None else self.budget_s - self.spent_s

    def start(self) -> None:
        left = self.left_s()
        if left is not None and left <= 0:
            raise ValueError(f"sweep folder {self.folder} has spent its time_budget_s ({self.budget_s:g} s, "
                             f"{self.spent_s:.0f} s run): raise it with --set time_budget_s=<seconds> to go on")
        limits = {"budget": left, "part": self.stop_after_s}
        reason, seconds = min(((k, v) for k, v in limits.items() if v is not None), key=lambda kv: kv[1],
                              default=(None, None))
        self._started = time.monotonic()
        if reason is not None:
            self._timer = threading.Timer(seconds, self._ring, args=(reason,))
            self._timer.daemon = True
            self._timer.start()
            log.info("sweep stops in %.0f min (%s)", seconds / 60,
                     "its time_budget_s" if reason == "budget" else "--stop-after")

    def _ring(self, reason: str) -> None:
        while signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):  # Tune's handler not in place yet (or
            if self._started is None:  # the part is over): the signal would end the process
                return
            time.sleep(1.0)
        self.reason = reason
        log.warning("%s: stopping the trials (Ray Tune saves the sweep's state)",
                    "the sweep's time_budget_s is spent" if reason == "budget" else "--stop-after reached")
        os.kill(os.getpid(), signal.SIGUSR1)  # Ray Tune's graceful stop, as Ctrl-C

    def stop(self) -> None:
        """Cancel the timer; add this part's time to the record (written whole: a temp file renamed)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._started is None:
            return
        seconds = self.spent_s + time.monotonic() - self._started
        self._started = None
        self.folder.mkdir(parents=True, exist_ok=True)
        storage.write_text(self.folder / SPENT_FILE, json.dumps({"seconds": round(seconds, 1)}))
