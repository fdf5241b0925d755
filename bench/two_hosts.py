"""Table 2 of #25 on two Ray hosts: a paper dataset built on a cluster of two hosts against the same build on one.

    python bench/two_hosts.py --config sudoku-extreme-1k [--scale 1] [--cpus 1] [--json FILE]

The hosts are two network namespaces of this machine (tests/cluster/hosts.py, as the two-host test makes them), each
a Ray node of ``--cpus`` CPUs, the worker host joined to the head over its own address. ``hrm data build`` runs as a
driver on the head with ``RAY_ADDRESS`` naming it, so Ray Data spreads its tasks over both nodes. Then the same build
on one host of twice the CPUs (no worker host): the same cores, one node. The difference is what running on two
nodes costs (objects cross the hosts' link, each node's processes start), not what two machines gain: both hosts share
this machine's cores. Printed: wall time, rows, the tasks each node ran. Needs root, iproute2 and util-linux."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.scale import config_file, scaled  # noqa: E402
from pipeline.core.precision import cpu_capability, cpu_name  # noqa: E402
from tests.cluster.hosts import (  # noqa: E402
    BIN,
    HEAD_IP,
    WORKER_IP,
    alive_nodes,
    dashboard_get,
    join_worker_host,
    make_hosts,
    namespaces_problem,
)


@dataclass
class Run:
    layout: str  # "2 hosts × C CPUs" or "1 host × 2C CPUs"
    config: str
    scale: float
    seconds: float
    rows: dict
    tasks_by_host: dict  # node IP -> Ray tasks it ran
    returncode: int

    def line(self) -> str:
        tasks = ", ".join(f"{ip}: {n}" for ip, n in sorted(self.tasks_by_host.items()))
        return (f"| {self.config} ×{self.scale:g} | {self.layout} | {self.seconds:.1f} s | "
                f"{sum(self.rows.values()):,} | {tasks} |")


HEADER = "| build | cluster | wall | rows | Ray tasks per host |\n|---|---|---|---|---|"


def tasks_per_host(hosts) -> dict[str, int]:
    """Ray tasks (and actors' methods) the cluster ran, by node address (the state API of the head's dashboard)."""
    nodes = dashboard_get(hosts, "/api/v0/nodes?limit=100") or {}
    ip_of = {n["node_id"]: n["node_ip"] for n in nodes.get("data", {}).get("result", {}).get("result", [])}
    answer = dashboard_get(hosts, "/api/v0/tasks?limit=10000&detail=true") or {}
    tasks = answer.get("data", {}).get("result", {}).get("result", [])
    return dict(Counter(ip_of.get(t.get("node_id"), "?") for t in tasks if t.get("type") == "NORMAL_TASK"))


def build_on(hosts, layout: str, config: str, scale: float, work: Path) -> Run:
    """``hrm data build`` of ``config`` at ``scale``, a driver on the head host joined to the cluster."""
    cfg = scaled(config, scale)
    (work / "data.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    done = hosts.run(0, str(BIN / "hrm"), "data", "build", cfg["task"], "--config", "data.yaml", "--out", str(out),
                     cwd=work, timeout=3600, env={"RAY_ADDRESS": f"{HEAD_IP}:6379", "HRM_PROGRESS": "lines"})
    seconds = time.monotonic() - started
    (work / f"{layout.replace(' ', '')}.log").write_text(done.stdout + done.stderr)
    rows = json.loads((out / "metadata.json").read_text())["counts"] if done.returncode == 0 else {}
    if done.returncode:
        print(f"{layout}: hrm data build exited with {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}",
              file=sys.stderr)
    shutil.rmtree(out, ignore_errors=True)
    return Run(layout, config, scale, seconds, rows, tasks_per_host(hosts), done.returncode)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="sudoku-extreme-1k", help="a paper data config or a YAML file")
    ap.add_argument("--scale", type=float, default=1.0, help="rows × this")
    ap.add_argument("--cpus", type=int, default=1, help="CPUs of each host (the one-host run gets twice)")
    ap.add_argument("--json", type=Path, default=None, help="append one JSON object a build here")
    args = ap.parse_args(argv)
    if not config_file(args.config).is_file():
        ap.error(f"no data config {config_file(args.config)}")
    problem = namespaces_problem()
    if problem:
        ap.error(problem)
    work = Path(tempfile.mkdtemp(prefix="hrm-2h-"))
    print(f"two hosts on {cpu_name()} ({cpu_capability()}, {os.cpu_count()} CPUs); logs under {work}\n{HEADER}",
          flush=True)
    runs = []
    for layout, head_cpus, worker in ((f"2 hosts × {args.cpus} CPU", args.cpus, True),
                                      (f"1 host × {2 * args.cpus} CPU", 2 * args.cpus, False)):
        hosts = make_hosts()
        try:
            hosts.start_node("head", 0, ["--head", f"--node-ip-address={HEAD_IP}", "--port=6379",
                                         f"--num-cpus={head_cpus}", f"--dashboard-host={HEAD_IP}",
                                         "--dashboard-port=8265", "--include-dashboard=true"])
            deadline = time.monotonic() + 120
            while HEAD_IP not in alive_nodes(hosts):
                if time.monotonic() > deadline:
                    raise SystemExit("the head node did not start: " + (hosts.root / "head.log").read_text()[-2000:])
                time.sleep(0.5)
            if worker:
                join_worker_host(hosts, "worker", [f"--address={HEAD_IP}:6379", f"--node-ip-address={WORKER_IP}",
                                                   f"--num-cpus={args.cpus}"])
            run = build_on(hosts, layout, args.config, args.scale, work)
        finally:
            hosts.destroy()
            for log in hosts.root.glob("*.log"):
                shutil.copy(log, work / f"{layout.replace(' ', '')}-{log.name}")
            shutil.rmtree(hosts.root, ignore_errors=True)
        runs.append(run)
        print(run.line(), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({**asdict(run), "cpu": cpu_name(), "cpu_capability": cpu_capability()}) + "\n")
    return 1 if any(r.returncode for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
