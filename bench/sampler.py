"""Peak memory of a process tree, sampled in a thread (bench/scale.py's builds, bench/paper_steps.py's runs)."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import psutil


class Sampler:
    """Peak RSS of a process tree, sampled in a thread: the root, each Ray worker process, and the tree's sum."""

    def __init__(self, pid: int, every_s: float = 0.25, names: tuple[str, ...] = ("ray::",)):
        self.root = psutil.Process(pid)
        self.names = names  # the worker processes: those whose command line starts with one of these
        self.every_s = every_s
        self.driver = self.total = 0
        self.workers: dict[int, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                tree = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for p in tree:
                try:
                    rss = p.memory_info().rss
                    name = p.cmdline()[0] if p.pid != self.root.pid else ""
                except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
                    continue
                total += rss
                if p.pid == self.root.pid:
                    self.driver = max(self.driver, rss)
                elif name.startswith(self.names):
                    self.workers[p.pid] = max(self.workers.get(p.pid, 0), rss)
            self.total = max(self.total, total)
            self.stop.wait(self.every_s)


def run_sampled(cmd: list[str], log_path: Path, cwd: Path, names: tuple[str, ...] = ("ray::",)) -> tuple[int, Sampler]:
    """``cmd`` (an ``hrm`` command) in a process of its own with an embedded local Ray (``RAY_ADDRESS`` unset) and
    log lines (``HRM_PROGRESS=lines``) into ``log_path``, its process tree sampled until it ends: its exit code and
    the Sampler (worker processes: ``names``)."""
    env = {**os.environ, "HRM_PROGRESS": "lines"}
    env.pop("RAY_ADDRESS", None)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        sampler = Sampler(proc.pid, names=names)
        sampler.thread.start()
        code = proc.wait()
        sampler.stop.set()
        sampler.thread.join()
    return code, sampler
