"""Test-only fault injection: the training tests kill, fail or pause one worker once, to check recovery and resume.

A fault is ``{"rank", "step", "kind", "marker"}`` (and ``"until"`` for a pause); a test passes one or a list of them
to ``pipeline.train.run.train``, or — for an ``hrm train`` it starts as a process — as JSON in ``HRM_TEST_FAULTS``.
Real runs have none.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

ENV = "HRM_TEST_FAULTS"
PAUSE_LIMIT_S = 600.0  # a pause ends by itself after this long, whatever happens to the test


def from_env() -> list[dict[str, Any]] | None:
    """The faults ``HRM_TEST_FAULTS`` holds (a JSON object or list), None when it is unset."""
    text = os.environ.get(ENV)
    if not text:
        return None
    found = json.loads(text)
    return found if isinstance(found, list) else [found]


def inject_fault(fault: dict[str, Any] | list[dict[str, Any]] | None, rank: int, step: int) -> None:
    """Once each (the file ``fault["marker"]`` records it): SIGKILL (``kind`` "sigkill"), pause until the file
    ``fault["until"]`` exists ("pause": the test then does something to the cluster, which may end the worker), or
    raise in (any other kind) worker ``fault["rank"]`` at optimizer step ``fault["step"]``; no ``fault`` (every real
    run): nothing."""
    for one in fault if isinstance(fault, list) else [fault] if fault else []:
        if rank != one["rank"] or step != one["step"]:
            continue
        marker = Path(one["marker"])
        if marker.exists():
            continue
        marker.write_text(str(step))
        if one["kind"] == "pause":
            deadline = time.monotonic() + PAUSE_LIMIT_S
            while not Path(one["until"]).exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            continue
        if one["kind"] == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected failure at step {step}")
