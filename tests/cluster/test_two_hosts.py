"""A real two-host Ray cluster on one machine: two network namespaces with their own addresses (10.231.0.1 head,
10.231.0.2 worker) joined by a veth pair, a Ray node in each (each in its own PID namespace, so tearing a host down
ends exactly its processes). `hrm train` is submitted as a Ray job with a working directory holding the config and
the dataset; its two Train workers must run one per host (node ranks 0 and 1). Mid-run the worker host is cut off
(its link goes down and the host dies); a replacement host joins at the same address, as an autoscaler would bring
one, and the job must still succeed: Train restarts from the last checkpoint and the run is FINISHED in MLflow.

Traffic goes only to the two namespaces' own addresses. Skipped where network namespaces are not permitted.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.processes import stop_group

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
HEAD_IP, WORKER_IP, PREFIX = "10.231.0.1", "10.231.0.2", 24
DASHBOARD = f"http://{HEAD_IP}:8265"
# 112 training rows at global batch 8: 14 steps an epoch. A checkpoint is kept every EVERY steps; the worker host is
# cut off once MLflow shows step CUT_AT, one past the first checkpoint, which leaves the cut the 7 steps before the
# next checkpoint (the steps take ~0.25 s here, polled every 0.2 s): the run restarts from the checkpoint of step 8,
# trains the steps it had logged again (logged once), and crosses into its second epoch.
MAX_STEPS, EVERY, CUT_AT = 16, 8, 9
# Quicker than Ray's defaults, so that a cut-off host is declared dead in seconds, but not so quick that a loaded
# 2-core machine misses them: with a 1 s timeout and 3 misses, the replacement host, busy starting its workers, was
# once declared dead too (the job then waited out its 600 s).
FAST_HEALTH_CHECKS = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
                      "RAY_health_check_timeout_ms": "3000", "RAY_health_check_failure_threshold": "5"}


def sh(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=check)


class Hosts:
    """Two namespaces and a veth pair between them; Ray nodes started in fresh PID namespaces."""

    def __init__(self, root: Path):
        tag = secrets.token_hex(3)
        self.ns = (f"hrm2h-{tag}-0", f"hrm2h-{tag}-1")
        self.veth = (f"h2h{tag}a", f"h2h{tag}b")
        self.root = root
        self.nodes: dict[str, tuple[subprocess.Popen, object]] = {}
        self.env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "disabled",
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
        self.env.pop("RAY_ADDRESS", None)

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

    def start_node(self, name: str, host: int, args: list[str], env: dict | None = None) -> None:
        """``ray start --block`` as PID 1 of a new PID namespace on ``host``: killing it ends the whole node."""
        log = open(self.root / f"{name}.log", "w")
        # Gloo (torch.distributed on CPU) finds peers through this interface, not through the hostname (which both
        # hosts share here and which resolves to loopback).
        env = {"GLOO_SOCKET_IFNAME": self.veth[host], **(env or {})}
        temp = self.root / f"t{name}"  # short: Ray's socket paths must stay under 108 characters
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[host], "unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
             str(BIN / "ray"), "start", "--block", "--disable-usage-stats", f"--temp-dir={temp}", *args],
            env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes[name] = (proc, log)

    def stop_node(self, name: str, grace: float = 10) -> None:
        proc, log = self.nodes.pop(name)
        stop_group(proc, grace=grace)
        log.close()

    def destroy(self) -> None:
        """Tear both hosts down. Nothing of theirs is kept, so no graceful ``ray stop``: a node is PID 1 of its PID
        namespace, and killing it ends every process of the node at once (about 20 s saved against SIGTERM)."""
        for name in list(self.nodes):
            self.stop_node(name, grace=0.5)
        for ns in self.ns:
            sh("ip", "netns", "del", ns, check=False)


def wait_for(what: str, check, timeout: float, every: float = 1.0, explain=lambda: ""):
    """Poll ``check`` until it returns something true (bounded); ``explain`` adds context to a time-out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{explain()}")


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


@pytest.fixture
def hosts(tmp_path):
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        pytest.skip("needs iproute2 (ip netns) and util-linux (unshare)")
    probe = f"hrm2h-probe-{secrets.token_hex(3)}"
    try:
        added = sh("ip", "netns", "add", probe, check=False)
        if added.returncode != 0:
            pytest.skip(f"network namespaces are not permitted here: {added.stderr.strip()}")
        pid_ns = subprocess.run(["ip", "netns", "exec", probe, "unshare", "--pid", "--fork", "--mount-proc", "true"],
                                capture_output=True, text=True, timeout=30)
        if pid_ns.returncode != 0:
            pytest.skip(f"PID namespaces are not permitted here: {pid_ns.stderr.strip()}")
    finally:
        sh("ip", "netns", "del", probe, check=False)
    root = Path(f"/tmp/h2h{secrets.token_hex(3)}")  # short paths for Ray's sockets
    root.mkdir()
    h = Hosts(root)
    try:
        h.create()
        yield h
    finally:
        h.destroy()
        for log in root.glob("*.log"):  # the nodes' own output, kept with the test's tmp folder
            shutil.copy(log, tmp_path / log.name)
        shutil.rmtree(root, ignore_errors=True)


def write_job_folder(folder: Path, shared: Path) -> None:
    """The job's working directory: a tiny dataset config, the training config (storage and MLflow on the shared
    folder both hosts see)."""
    folder.mkdir(parents=True)
    (folder / "data.yaml").write_text(yaml.safe_dump({
        "name": "tiny", "task": "sudoku", "seed": 3,
        "sudoku": {"box": [2, 2], "count": 60, "min_rating": 0, "test_fraction": 0.2, "augmentations": 4,
                   "chunk_size": 20}}))
    (folder / "train.yaml").write_text(yaml.safe_dump({
        "name": "two-hosts", "data": "data/tiny", "flavour": "debug",
        "model": {"halt_max_steps": 2, "halt_exploration_prob": 0.0}, "global_batch_size": 8,
        "epochs": 20, "max_steps": MAX_STEPS, "eval_interval": EVERY, "log_interval": 1, "eval_limit": 8,
        "eval_samples": 1,
        "optim": {"lr": 1e-3, "lr_warmup_steps": 2}, "max_failures": 4, "storage_path": str(shared / "runs"),
        "scaling": {"num_workers": 2, "cpus_per_worker": 2},  # 3 CPUs a host: one worker each, 1 CPU for Ray Data
        "tracking": {"tracking_uri": f"sqlite:///{shared / 'mlflow.db'}", "experiment": "two-hosts",
                     "model_name": "hrm-two-hosts"}}))


def train_steps(uri: str) -> tuple[str | None, list[int]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("two-hosts")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    if not runs:
        return None, []
    run_id = runs[0].info.run_id
    return run_id, [m.step for m in client.get_metric_history(run_id, "train/lm_loss")]


def test_train_job_spans_two_hosts_and_survives_losing_one(hosts, tmp_path):
    shared = hosts.root / "shared"
    work = shared / "job"
    write_job_folder(work, shared)
    uri = f"sqlite:///{shared / 'mlflow.db'}"

    hosts.start_node("head", 0, ["--head", f"--node-ip-address={HEAD_IP}", "--port=6379", "--num-cpus=3",
                                 f"--dashboard-host={HEAD_IP}", "--dashboard-port=8265", "--include-dashboard=true"],
                     env=FAST_HEALTH_CHECKS)
    worker_args = [f"--address={HEAD_IP}:6379", f"--node-ip-address={WORKER_IP}", "--num-cpus=3"]
    join_worker_host(hosts, "worker", worker_args)
    assert sorted(alive_nodes(hosts)) == [HEAD_IP, WORKER_IP]

    # The dataset, built by Ray Data on the cluster into the job folder (then uploaded with it).
    built = hosts.run(0, str(BIN / "hrm"), "data", "build", "sudoku", "--config", "data.yaml", "--out", "data/tiny",
                      cwd=work, timeout=240, env={"RAY_ADDRESS": f"{HEAD_IP}:6379"})
    assert built.returncode == 0, built.stdout + built.stderr

    from mlflow.tracking import MlflowClient

    MlflowClient(uri).search_experiments()  # create the store's tables now: the job and this test then only use it
    runtime_env = {"env_vars": {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "20", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}}
    submitted = job(hosts, "submit", "--no-wait", "--working-dir", str(work), "--runtime-env-json",
                    json.dumps(runtime_env), "--", "hrm", "train", "--config", "train.yaml", timeout=120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = re.search(r"raysubmit_\w+", submitted.stdout).group(0)

    def logs_tail() -> str:
        return job(hosts, "logs", job_id).stdout[-6000:]

    def progressed():
        status = job_status(hosts, job_id)
        if status in ("FAILED", "STOPPED", "SUCCEEDED"):
            raise AssertionError(f"job ended before the cut: {status}\n{logs_tail()}")
        steps = train_steps(uri)[1]
        return max(steps, default=0) >= CUT_AT and steps

    steps_at_cut = wait_for(f"training step {CUT_AT}", progressed, timeout=300, every=0.2, explain=logs_tail)
    assert max(steps_at_cut) < MAX_STEPS, "training finished before the worker host was cut off"

    # Cut the worker host off: its link goes down, then the host dies. A replacement host joins at its address.
    down = hosts.run(1, "ip", "link", "set", hosts.veth[1], "down", timeout=10)
    assert down.returncode == 0, down.stderr
    wait_for("the head to declare the worker host dead", lambda: alive_nodes(hosts) == [HEAD_IP], timeout=90, every=2,
             explain=logs_tail)
    hosts.stop_node("worker", grace=0.5)  # the host dies: no graceful stop of a node that is cut off
    assert hosts.run(1, "ip", "link", "set", hosts.veth[1], "up", timeout=10).returncode == 0
    join_worker_host(hosts, "replacement", worker_args)

    def finished():
        status = job_status(hosts, job_id)
        return status in ("SUCCEEDED", "FAILED", "STOPPED") and status

    status = wait_for("the job to end", finished, timeout=600, every=1, explain=logs_tail)
    logs = job(hosts, "logs", job_id, timeout=60).stdout
    (tmp_path / "job.log").write_text(logs)
    assert status == "SUCCEEDED", f"{status}\n{logs[-4000:]}"

    # One Train worker per host: node ranks 0 and 1 on the two addresses (Ray Train's worker group report, in the
    # job's logs or in the controller's log on the head).
    reports = logs + "".join(p.read_text(errors="replace") for p in
                             sorted((hosts.root / "thead").glob("session_*/logs/train/ray-train-app-controller-*.log")))
    found = re.findall(r"ip=([\d.]+), pid=(\d+)\) world_rank=(\d), local_rank=\d, node_rank=(\d)", reports)
    placed = list(dict.fromkeys((ip, rank, node, pid) for ip, pid, rank, node in found))  # each worker once
    assert len(placed) >= 2, f"no worker group report found:\n{logs[-4000:]}"
    first = [(ip, rank, node) for ip, rank, node, _ in placed[:2]]
    assert sorted(ip for ip, _, _ in first) == [HEAD_IP, WORKER_IP], first  # one worker per host
    assert sorted(node for _, _, node in first) == ["0", "1"], first  # so node ranks 0 and 1
    assert sorted(rank for _, rank, _ in first) == ["0", "1"], first
    assert len(placed) >= 4, "Train did not start a new worker group after losing the worker host"

    run_id, steps = train_steps(uri)
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and "eval/exact_accuracy" in run.data.metrics
    assert max(steps) == MAX_STEPS and set(steps) == set(range(1, MAX_STEPS + 1))
    assert len(steps) == len(set(steps)), "a step trained twice after the restart was logged twice"
    tags = MlflowClient(uri).get_run(run_id).data.tags
    replayed = [k for k in tags if k.startswith("hrm.replayed_from_step_")]
    assert replayed == [f"hrm.replayed_from_step_{EVERY}"], f"restarted from {replayed}, not the checkpoint of step " \
                                                           f"{EVERY} (cut at step {max(steps_at_cut)})"
    assert MlflowClient(uri).get_model_version_by_alias("hrm-two-hosts", "champion").run_id == run_id
