"""What losing a node costs an elastic run (#26): steps and training seconds lost against the checkpoint interval,
and the time to resume, on a real Ray cluster of separate raylets on this machine.

    python bench/elastic.py --every 4 32 --start-timeout 60 30 [--json FILE]

Each run: a head (1 CPU) and two worker nodes (3 CPUs, one Train worker of 2 CPUs each; tests/cluster/nodes.py, each
node in its own PID namespace), a tiny Sudoku, `hrm train` with `num_workers: [1, 2]` and a checkpoint every
``--every`` steps. Rank 0 pauses once, one step before its second checkpoint — the worst moment: ``every - 1`` steps
since the last one — and its node is SIGKILLed there; the run goes on on the other node. Measured from MLflow: the
steps trained again (the restart event's checkpoint against the step reached), their training seconds (at the pace
before the kill), the time from the kill to the new group's start (the restart event: Ray noticing the node gone,
Train's decision, the workers started and their shares read) and to the first step past the one reached (the steps
trained again included). ``--start-timeout`` is ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S``: when Train restarts on a
view of the cluster where the killed node is not yet declared dead, its first try waits that long for a node that is
gone (60 s: Ray's default; 30 s: what `hrm train` sets for an elastic run unless told). The figures depend on the
machine (say which) and on Ray's health-check settings (here: a node declared dead after 5 missed checks 1 s apart).
"""

from __future__ import annotations

import argparse
import calendar
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.core.precision import cpu_capability, cpu_name  # noqa: E402
from tests.cluster.nodes import (  # noqa: E402
    FAST_HEALTH_CHECKS,
    LocalCluster,
    ended,
    make_root,
    pid_namespaces_problem,
    wait_for,
)

NODES = {"a": "127.0.0.2", "b": "127.0.0.3"}


@dataclass
class Loss:
    every: int  # steps between checkpoints
    start_timeout_s: float
    killed_after_step: int
    restored_step: int
    steps_lost: int
    step_seconds: float  # the pace before the kill
    seconds_lost: float  # steps_lost × step_seconds
    to_new_group_s: float  # kill → the new worker group's start (its restart event)
    to_new_step_s: float  # kill → the first step past the one reached
    workers_after: int
    returncode: int


def write_configs(folder: Path, every: int) -> int:
    (folder / "data.yaml").write_text(yaml.safe_dump({
        "name": "tiny", "task": "sudoku", "seed": 3,
        "sudoku": {"box": [2, 2], "count": 60, "min_rating": 0, "test_fraction": 0.2, "augmentations": 4,
                   "chunk_size": 20}}))
    max_steps = 2 * every + 4
    (folder / "elastic.yaml").write_text(yaml.safe_dump({
        "name": "elastic", "data": "data/tiny", "flavour": "debug",
        "model": {"halt_max_steps": 2, "halt_exploration_prob": 0.0, "forward_dtype": "float32"},
        "global_batch_size": 6, "epochs": 100, "max_steps": max_steps, "eval_interval": every, "log_interval": 1,
        "eval_limit": 6, "eval_samples": 1, "optim": {"lr": 1e-3, "lr_warmup_steps": 2}, "max_failures": 4,
        "storage_path": str(folder / "runs"),
        "scaling": {"num_workers": [1, 2], "cpus_per_worker": 2, "resize_check_seconds": 600},
        "tracking": {"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", "experiment": "elastic",
                     "register": False}}))
    return max_steps


def one(every: int, start_timeout: float, logs: Path) -> Loss:
    from mlflow.tracking import MlflowClient

    with ended(LocalCluster(make_root("hbe"), FAST_HEALTH_CHECKS), logs) as cluster:
        folder = cluster.root / "job"
        folder.mkdir()
        max_steps = write_configs(folder, every)
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        cluster.start_head(cpus=1)
        for name, ip in NODES.items():
            cluster.add_node(name, cpus=3, ip=ip)
        wait_for("3 nodes to start", cluster.started, timeout=120, every=0.5)
        wait_for("3 nodes", lambda: len(cluster.alive()) == 3, timeout=60, every=2)
        env = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": str(start_timeout)}
        built = cluster.hrm(folder, ["data", "build", "sudoku", "--config", "data.yaml", "--out", "data/tiny"],
                            logs / "build.log", env)
        assert built.wait(timeout=240) == 0, (logs / "build.log").read_text()[-2000:]
        client = MlflowClient(uri)
        client.search_experiments()
        at = 2 * every - 1
        pause = {"rank": 0, "step": at, "kind": "pause", "marker": str(folder / "paused"),
                 "until": str(folder / "never")}
        log = logs / f"elastic-{every}-{start_timeout:g}.log"
        driver = cluster.hrm(folder, ["train", "--config", "elastic.yaml"], log,
                             {**env, "HRM_TEST_FAULTS": json.dumps([pause])})

        def history(key: str) -> list:
            exp = client.get_experiment_by_name("elastic")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            return client.get_metric_history(runs[0].info.run_id, key) if runs else []

        wait_for(f"rank 0 to pause after step {at}", lambda: (folder / "paused").exists()
                 and any(m.step == at for m in history("train/lm_loss")), timeout=300, every=0.5)
        from pipeline.train.run_folder import RunFolder
        from pipeline.train.run_state import last_report

        # the checkpoint before the kill registered by Train first: a report is taken ~2 s after it is made, and a
        # kill sooner restarts from the one before (every more steps lost; measured apart, see bench/NOTES.md)
        wait_for(f"the checkpoint of step {every}", lambda: (last_report(RunFolder(str(folder / "runs"), "elastic"))
                                                             or {}).get("step") == every, timeout=120, every=0.5)
        run_id = client.search_runs([client.get_experiment_by_name("elastic").experiment_id])[0].info.run_id
        rank0 = client.get_run(run_id).data.tags["hrm.workers"].split(", ")[0]
        (lost,) = [name for name, ip in NODES.items() if rank0.startswith(f"{ip} ")]
        killed = time.time()
        cluster.kill_node(lost)
        code = driver.wait(timeout=600)
        losses = {m.step: m.timestamp / 1000 for m in history("train/lm_loss")}
        before = sorted(t for s, t in losses.items() if 2 <= s <= at)
        pace = (before[-1] - before[0]) / (len(before) - 1)
        tags = client.get_run(run_id).data.tags
        event = tags.get("hrm.restart.1", "")
        restored = int(event.split("the checkpoint of step ")[1].split(";")[0]) if "checkpoint of step" in event \
            else 0
        started = calendar.timegm(time.strptime(event[:23], "%Y-%m-%d %H:%M:%S UTC")) if event else killed
        workers = {m.step: m.value for m in history("train/workers")}
        return Loss(every=every, start_timeout_s=start_timeout, killed_after_step=at, restored_step=restored,
                    steps_lost=at - restored, step_seconds=pace, seconds_lost=(at - restored) * pace,
                    to_new_group_s=started - killed, to_new_step_s=losses.get(at + 1, killed) - killed,
                    workers_after=int(workers.get(max_steps, 0)), returncode=code)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, nargs="+", default=[4, 32], help="checkpoint intervals (steps)")
    ap.add_argument("--start-timeout", type=float, nargs="+", default=[60.0, 30.0],
                    help="RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S values (60: Ray's default; 30: hrm train's for an "
                         "elastic run)")
    ap.add_argument("--logs", type=Path, default=None, help="where the runs' logs go (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None, help="append one JSON object a run here")
    args = ap.parse_args(argv)
    problem = pid_namespaces_problem()
    if problem:
        ap.error(problem)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="hrm-elastic-"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f"on {cpu_name()} ({cpu_capability()}); logs under {logs}\n"
          "| every | start timeout | killed after step | restored | steps lost | s a step | training s lost | "
          "kill → new group | kill → next new step | workers after |\n|---|---|---|---|---|---|---|---|---|---|",
          flush=True)
    failed = 0
    for every in args.every:
        for timeout in args.start_timeout:
            r = one(every, timeout, logs)
            failed += r.returncode != 0
            print(f"| {r.every} | {r.start_timeout_s:g} s | {r.killed_after_step} | {r.restored_step} | "
                  f"{r.steps_lost} | {r.step_seconds:.3f} | {r.seconds_lost:.1f} | {r.to_new_group_s:.0f} s | "
                  f"{r.to_new_step_s:.0f} s | {r.workers_after} |", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({**asdict(r), "cpu": cpu_name(), "cpu_capability": cpu_capability()}) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
