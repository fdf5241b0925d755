"""Two Ray "hosts" on one machine, for the cluster tests and benchmarks: two network namespaces with their own
addresses (10.231.0.1 head, 10.231.0.2 worker) joined by a veth pair, a Ray node in each, each node in its own PID
namespace (tests/cluster/nodes.py: tearing a host down ends exactly its processes). Needs root, iproute2 and
util-linux."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from tests.cluster.nodes import BIN, Nodes

HEAD_IP, WORKER_IP, PREFIX = "10.231.0.1", "10.231.0.2", 24
DASHBOARD = f"http://{HEAD_IP}:8265"


def sh(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=check)


class Hosts(Nodes):
    """Two namespaces and a veth pair between them; Ray nodes started in fresh PID namespaces."""

    def __init__(self, root: Path):
        super().__init__(root)
        tag = secrets.token_hex(3)
        self.ns = (f"hrm2h-{tag}-0", f"hrm2h-{tag}-1")
        self.veth = (f"h2h{tag}a", f"h2h{tag}b")

    def create(self) -> None:
        a, b = self.ns
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "link", "add", self.veth[0], "netns", a, "type", "veth", "peer", "name", self.veth[1], "netns", b)
        for ns, dev, ip in ((a, self.veth[0], HEAD_IP), (b, self.veth[1], WORKER_IP)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/{PREFIX}", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")

    def run(self, host: int, *args: str, timeout: float = 120, cwd: Path | None = None, env: dict | None = None):
        """A command on a host (its network namespace), bounded in time."""
        return subprocess.run(["ip", "netns", "exec", self.ns[host], *args], capture_output=True, text=True,
                              timeout=timeout, cwd=cwd, env={**self.env, **(env or {})})

    def prefix(self, host: int) -> list[str]:
        return ["ip", "netns", "exec", self.ns[host]]

    def start_node(self, name: str, host: int, args: list[str], env: dict | None = None) -> None:
        # Gloo (torch.distributed on CPU) finds peers through this interface, not through the hostname (which both
        # hosts share here and which resolves to loopback).
        super().start_node(name, host, args, {"GLOO_SOCKET_IFNAME": self.veth[host], **(env or {})})

    def destroy(self) -> None:
        """Tear both hosts down. Nothing of theirs is kept, so no graceful ``ray stop``: a node is PID 1 of its PID
        namespace, and killing it ends every process of the node at once (about 20 s saved against SIGTERM)."""
        super().destroy()
        for ns in self.ns:
            sh("ip", "netns", "del", ns, check=False)


# Polling asks the head's dashboard over HTTP from a stdlib-only Python (~20 ms of CPU a poll): a process that runs
# `ray.init` or a JobSubmissionClient costs a second or more of CPU a poll, taken from the cluster being waited for.
FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=20).read().decode())"


def dashboard_get(hosts: Hosts, path: str):
    """The JSON the head's dashboard answers at ``path`` (asked from the head host), None when it does not."""
    out = hosts.run(0, str(BIN / "python"), "-I", "-c", FETCH, f"{DASHBOARD}{path}", timeout=60)
    try:
        return json.loads(out.stdout) if out.returncode == 0 else None
    except json.JSONDecodeError:
        return None


def alive_nodes(hosts: Hosts) -> list[str]:
    """Node IPs the head's GCS counts alive (its state API, asked from the head's namespace)."""
    answer = dashboard_get(hosts, "/api/v0/nodes?limit=100")
    if not answer or not answer.get("result"):
        return []
    return [n["node_ip"] for n in answer["data"]["result"]["result"] if n["state"] == "ALIVE"]


def join_worker_host(hosts: Hosts, name: str, args: list[str], tries: int = 3) -> None:
    """Start a Ray node on the worker host and wait until the head counts it alive. A loaded machine can make
    `ray start` give up (its raylet must register within 30 s): start it again, at most ``tries`` times."""
    for attempt in range(1, tries + 1):
        hosts.start_node(name, 1, args)
        proc = hosts.nodes[name][0]
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            if WORKER_IP in alive_nodes(hosts):
                return
            time.sleep(0.5)
        hosts.stop_node(name)
        log = (hosts.root / f"{name}.log").read_text()[-1500:]
        if attempt == tries:
            raise AssertionError(f"the worker host's Ray node did not join after {tries} tries:\n{log}")


def job_status(hosts: Hosts, job_id: str) -> str:
    """PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED (the Jobs API, asked from the head host)."""
    answer = dashboard_get(hosts, f"/api/jobs/{job_id}")
    return answer["status"] if isinstance(answer, dict) and "status" in answer else "UNKNOWN"


def job(hosts: Hosts, command: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``ray job <command> --address <head dashboard> ...`` from the head host."""
    return hosts.run(0, str(BIN / "ray"), "job", command, "--address", DASHBOARD, *args, timeout=timeout)


def namespaces_problem() -> str | None:
    """Why two hosts cannot be made here (no tools, no permission), or None."""
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "needs iproute2 (ip netns) and util-linux (unshare)"
    probe = f"hrm2h-probe-{secrets.token_hex(3)}"
    try:
        added = sh("ip", "netns", "add", probe, check=False)
        if added.returncode != 0:
            return f"network namespaces are not permitted here: {added.stderr.strip()}"
        pid_ns = subprocess.run(["ip", "netns", "exec", probe, "unshare", "--pid", "--fork", "--mount-proc", "true"],
                                capture_output=True, text=True, timeout=30)
        if pid_ns.returncode != 0:
            return f"PID namespaces are not permitted here: {pid_ns.stderr.strip()}"
    finally:
        sh("ip", "netns", "del", probe, check=False)
    return None


def make_hosts() -> Hosts:
    """Two fresh hosts under a short /tmp folder (Ray's socket paths must stay under 108 characters)."""
    root = Path(f"/tmp/h2h{secrets.token_hex(3)}")
    root.mkdir()
    hosts = Hosts(root)
    hosts.create()
    return hosts
