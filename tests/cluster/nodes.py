"""Ray nodes on one machine for the cluster tests and benchmarks: each ``ray start --block`` is PID 1 of a PID
namespace of its own, so that killing a node ends exactly its processes (raylet, object store, its workers) at once,
as a machine that disappears would. :class:`Nodes` starts them on this machine's loopback (separate raylets of one
cluster); ``tests/cluster/hosts.py`` starts them inside network namespaces. Needs root and util-linux (unshare)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from tests.processes import free_port, stop_group

BIN = Path(sys.executable).parent
N = TypeVar("N", bound="Nodes")
# Quicker than Ray's defaults, so that a node cut off or killed is declared dead in seconds (5 checks missed in a row:
# ≈ 15 s; with a 3 s timeout, ≈ 20 s), but not so quick that a loaded 2-core machine misses them: with a 1 s timeout
# and 3 misses, a replacement node, busy starting its workers, was once declared dead too.
FAST_HEALTH_CHECKS = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
                      "RAY_health_check_timeout_ms": "2000", "RAY_health_check_failure_threshold": "5"}


class Nodes:
    """Ray nodes started in fresh PID namespaces, their output in ``<root>/<name>.log``."""

    def __init__(self, root: Path):
        self.root = root
        self.nodes: dict[str, tuple[subprocess.Popen, object]] = {}
        self.env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "disabled",
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
        self.env.pop("RAY_ADDRESS", None)

    def prefix(self, host: int) -> list[str]:
        """What a command on ``host`` runs under (a network namespace in Hosts; nothing here)."""
        return []

    def start_node(self, name: str, host: int, args: list[str], env: dict | None = None) -> None:
        """``ray start --block`` as PID 1 of a new PID namespace on ``host``: killing it ends the whole node."""
        log = open(self.root / f"{name}.log", "w")
        temp = self.root / f"t{name}"  # short: Ray's socket paths must stay under 108 characters
        proc = subprocess.Popen(
            [*self.prefix(host), "unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
             str(BIN / "ray"), "start", "--block", "--disable-usage-stats", f"--temp-dir={temp}", *args],
            env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes[name] = (proc, log)

    def started(self) -> bool:
        """Whether every node's ``ray start`` has said "Ray runtime started." (its log; no CPU taken from the nodes,
        unlike a question to the cluster): what to wait on before asking the cluster which nodes are alive."""
        return all("Ray runtime started." in (self.root / f"{name}.log").read_text(errors="replace")
                   for name in self.nodes)

    def kill_node(self, name: str) -> None:
        """SIGKILL the node: its PID namespace ends with every process in it, with no word to the rest of the
        cluster (which learns it from missed health checks)."""
        proc, log = self.nodes.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        log.close()

    def stop_node(self, name: str, grace: float = 10) -> None:
        proc, log = self.nodes.pop(name)
        stop_group(proc, grace=grace)
        log.close()

    def destroy(self) -> None:
        """Nothing of the nodes is kept, so no graceful ``ray stop``: killing a node's PID 1 ends all of it — every
        node at once, then each waited for (one after another took ~2 s a node)."""
        for proc, _ in self.nodes.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for name in list(self.nodes):
            self.stop_node(name, grace=0)


@contextlib.contextmanager
def ended(nodes: N, logs: Path) -> Iterator[N]:
    """``nodes`` for the ``with`` block; after it, however it ends, they are destroyed, their own output copied into
    ``logs`` and their folder removed."""
    try:
        yield nodes
    finally:
        nodes.destroy()
        for log in nodes.root.glob("*.log"):
            shutil.copy(log, logs / log.name)
        shutil.rmtree(nodes.root, ignore_errors=True)


def pid_namespaces_problem() -> str | None:
    """Why nodes in PID namespaces cannot be started here (no tool, no permission), or None."""
    if shutil.which("unshare") is None:
        return "needs util-linux (unshare)"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True,
                           timeout=30)
    return None if probe.returncode == 0 else f"PID namespaces are not permitted here: {probe.stderr.strip()}"


class LocalCluster(Nodes):
    """A head on 127.0.0.1 and worker nodes on other loopback addresses (127.0.0.2, ...): separate raylets of one
    cluster, each in its PID namespace, their Train workers talking Gloo over ``lo``. ``address`` is what
    ``RAY_ADDRESS`` takes; a driver started beside them (on 127.0.0.1) belongs to the head."""

    def __init__(self, root: Path, health_checks: dict[str, str] | None = None):
        super().__init__(root)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.node_env = {"GLOO_SOCKET_IFNAME": "lo", **(health_checks or {})}

    def start_head(self, cpus: int) -> None:
        self.start_node("head", 0, ["--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                                    f"--num-cpus={cpus}", "--include-dashboard=false"], env=self.node_env)

    def add_node(self, name: str, cpus: int, ip: str) -> None:
        self.start_node(name, 0, [f"--address={self.address}", f"--node-ip-address={ip}", f"--num-cpus={cpus}"],
                        env=self.node_env)

    def hrm(self, folder: Path, args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
        """``hrm <args>`` as a driver beside the head (in ``folder``, on this cluster, its Train workers' Gloo on
        ``lo``, progress as log lines), its output in ``log``."""
        env = {**self.env, "RAY_ADDRESS": self.address, "HRM_PROGRESS": "lines", "GLOO_SOCKET_IFNAME": "lo",
               **(env or {})}
        with open(log, "w") as out:  # the child keeps its own copy of the file
            return subprocess.Popen([str(BIN / "hrm"), *args], cwd=folder, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)

    def alive(self) -> dict[str, str]:
        """Node name -> Ray node id (hex) of every node the head's GCS counts alive: ``ray.nodes()`` in a process of
        its own (its ``ray.init`` costs ~2 s of CPU: call it seldom), a node named by its temp folder."""
        code = ("import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
                "print(json.dumps([(n['NodeID'], n['RayletSocketName']) for n in ray.nodes() if n['Alive']]))")
        out = subprocess.run([str(BIN / "python"), "-c", code, self.address], capture_output=True, text=True,
                             timeout=120, env=self.env)
        if out.returncode != 0:
            return {}
        nodes = json.loads(out.stdout.strip().splitlines()[-1])
        return {name: node for node, socket in nodes for name in self.nodes if f"/t{name}/" in socket}


def make_root(prefix: str) -> Path:
    """A fresh short folder under /tmp (Ray's socket paths must stay under 108 characters)."""
    root = Path(f"/tmp/{prefix}{secrets.token_hex(3)}")
    root.mkdir()
    return root


def wait_for(what: str, check, timeout: float, every: float = 1.0, explain=lambda: ""):
    """Poll ``check`` until it returns something true (bounded); ``explain`` adds context to a time-out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{explain()}")
