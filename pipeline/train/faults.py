"""Test-only fault injection: the training tests kill or fail one worker once, to check recovery and resume."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any


def inject_fault(fault: dict[str, Any] | None, rank: int, step: int) -> None:
    """Once (the file ``fault["marker"]`` records it), SIGKILL (``kind`` "sigkill") or raise in (any other kind)
    worker ``fault["rank"]`` at optimizer step ``fault["step"]``; no ``fault`` (every real run): nothing."""
    if not fault or rank != fault["rank"] or step != fault["step"]:
        return
    marker = Path(fault["marker"])
    if marker.exists():
        return
    marker.write_text(str(step))
    if fault["kind"] == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected failure at step {step}")
