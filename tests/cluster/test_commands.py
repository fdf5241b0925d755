"""The README's cluster commands, run as written from a fresh shell: no venv on PATH, an empty HOME, a copy of the
checkout (what a clone holds). The block "Jobs on a cluster" starts a one-machine Ray cluster (`ray start --head`),
submits `hrm data build` and `hrm train` as Ray jobs, asks the dashboard's Train API and stops the cluster.

It runs in its own PID, network and mount namespaces (`unshare`): the README's default ports (6379, 8265) and its
`ray stop` reach nothing of the machine's other Ray instances, and /tmp/ray is a private folder. At tiny scale: the
data config is swapped for a tiny one and `hrm train` gets `--set` overrides (TINY_TRAIN); nothing else changes.
Skipped where namespaces are not permitted.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
FRESH_PATH = "/usr/local/bin:/usr/bin:/bin"
TINY_TRAIN = ["flavour=debug", "max_steps=12", "eval_interval=6", "eval_limit=16", "global_batch_size=16",
              "log_interval=1"]
MAX_LOG_LINES = 60


def readme_block(readme: Path, heading: str, must_hold: str) -> list[str]:
    """The commands of the first ```bash block under ``heading`` that holds ``must_hold``, continuation lines
    joined."""
    text = readme.read_text()
    section = text[text.index(heading):]
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        if must_hold in block:
            return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    raise AssertionError(f"{readme}: no bash block under {heading!r} holds {must_hold!r}")


def tiny(line: str, data_config: Path) -> str:
    line = line.replace("pipeline/configs/data-sudoku-demo.yaml", str(data_config))
    if re.search(r"\bhrm train\b", line):
        line += "".join(f" --set {s}" for s in TINY_TRAIN)
    return line


def copy_checkout(dest: Path) -> None:
    """The files a clone has (tracked, and new files not ignored), and the venv as `make setup` leaves it."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:
        pytest.skip(f"needs a git checkout to copy what a clone holds: {listed.stderr.decode().strip()}")
    files = listed.stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / ".venv").symlink_to(VENV)


def fresh_env(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "PATH": FRESH_PATH, "LANG": "C.UTF-8", "TERM": "dumb"}


def namespaces_work() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs util-linux (unshare) and iproute2 (ip)"
    probe = subprocess.run(["unshare", "--pid", "--net", "--mount", "--fork", "--mount-proc", "true"],
                           capture_output=True, text=True, timeout=30)
    return None if probe.returncode == 0 else f"namespaces not permitted here: {probe.stderr.strip()}"


@pytest.fixture(scope="module")
def cluster_block(tmp_path_factory):
    reason = namespaces_work()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("fresh")
    repo, home, out, rayroot = root / "repo", root / "home", root / "out", root / "ray"
    for d in (repo, home, out, rayroot):
        d.mkdir()
    copy_checkout(repo)
    data_config = root / "data-tiny.yaml"
    data_config.write_text(yaml.safe_dump({
        "name": "sudoku-demo", "task": "sudoku", "seed": 3,
        "sudoku": {"box": [2, 3], "count": 60, "min_rating": 0, "givens": 22, "test_fraction": 0.2,
                   "augmentations": 2, "chunk_size": 30}}))
    lines = [tiny(line, data_config) for line in readme_block(ROOT / "README.md", "### Jobs on a cluster",
                                                              "ray start --head")]
    stop = next(i for i, line in enumerate(lines) if line.startswith("ray stop"))
    probe = f"python {shlex.quote(str(ROOT / 'tests/cluster/cluster_probe.py'))} {shlex.quote(str(out))}"
    script = root / "block.sh"
    script.write_text("set -ex\n" + "\n".join(lines[:stop] + [probe] + lines[stop:]) + "\n")
    inner = (f"ip link set lo up && mkdir -p /tmp/ray && mount --bind {shlex.quote(str(rayroot))} /tmp/ray && "
             f"cd {shlex.quote(str(repo))} && exec bash {shlex.quote(str(script))}")
    run = subprocess.run(["unshare", "--pid", "--net", "--mount", "--fork", "--kill-child", "--mount-proc",
                          "bash", "-c", inner], env=fresh_env(home), capture_output=True, text=True, timeout=600)
    (root / "block.log").write_text(run.stdout + run.stderr)
    found = json.loads((out / "probe.json").read_text()) if (out / "probe.json").exists() else None
    return {"run": run, "repo": repo, "probe": found, "log": root / "block.log"}


def job_of(probe: dict, command: str) -> dict:
    (job,) = [j for j in probe["jobs"] if f"hrm {command}" in j["entrypoint"]]
    return job


def test_readme_cluster_block_runs_from_a_fresh_shell(cluster_block):
    run, probe = cluster_block["run"], cluster_block["probe"]
    assert run.returncode == 0 and probe, f"see {cluster_block['log']}:\n{(run.stdout + run.stderr)[-4000:]}"
    for command in ("data build", "train"):
        job = job_of(probe, command)
        assert job["status"] == "SUCCEEDED", job["logs"][-3000:]
    repo = cluster_block["repo"]
    assert (repo / "data/sudoku-demo/metadata.json").is_file()  # absolute --out: the checkout, not the job's copy
    with sqlite3.connect(repo / "mlflow.db") as db:  # MLFLOW_TRACKING_URI exported before `ray start`
        versions = db.execute("select count(*) from model_versions where name = 'hrm-sudoku-demo'").fetchone()[0]
        digests = db.execute("select value from tags where key = 'hrm.source_sha256'").fetchall()
    assert versions == 1
    from pipeline.tracking.version import source_sha256

    # the job ran in Ray's copy of its --working-dir, without .git: its run still names its code, by digest
    assert digests and {d for (d,) in digests} == {source_sha256(repo)}
    assert "Stopped all" in run.stdout + run.stderr  # the block's own `ray stop`


@pytest.mark.parametrize("command", ["data build", "train"])
def test_job_logs_are_short(cluster_block, command):
    probe = cluster_block["probe"] or pytest.fail("the block did not run: see the first test")
    logs = job_of(probe, command)["logs"]
    lines = logs.splitlines()
    print(f"ray job logs of hrm {command}: {len(lines)} lines")
    (cluster_block["log"].parent / f"job-{command.replace(' ', '-')}.log").write_text(logs)
    assert len(lines) <= MAX_LOG_LINES, f"{len(lines)} lines:\n{logs}"
    if command == "train":
        assert re.search(r"train step 12/12 \(100%\)", logs)
        assert "step 12 (" in logs and "min of training): eval exact" in logs
        assert "MLflow run:" in logs and "models:/hrm-sudoku-demo/1" in logs
        assert not re.search(r"Running \d|Dataset .* execution|\bop\b.*\d+/\d+", logs), "Ray Data progress lines"
    else:
        assert "built " in logs


def test_dashboard_api_lists_the_train_run(cluster_block):
    """Ray 2.60's dashboard UI has no Train page; its API lists the run, with its workers, because
    RAY_TRAIN_ENABLE_STATE_TRACKING=1."""
    probe = cluster_block["probe"] or pytest.fail("the block did not run: see the first test")
    (run,) = probe["train_runs"]["train_runs"]
    assert run["status"] == "FINISHED", run.get("status_detail")
    assert run["name"] == "demo"  # the run's `name` (pipeline/configs/train-demo.yaml)
    workers = [w for attempt in run["attempts"] for w in attempt["workers"]]
    assert [(w["world_rank"], w["node_rank"]) for w in workers] == [(0, 0)]
    assert run["job_details"]["status"] == "SUCCEEDED"


def test_readme_solve_line_reads_the_jobs_registry(cluster_block):
    """README's `hrm solve` line (under "Then look at it all"), from a fresh shell in the checkout the jobs ran in:
    it reads ./mlflow.db, where the train job registered `hrm-sudoku-demo` (a 6×6 model, like the line's puzzle)."""
    probe = cluster_block["probe"] or pytest.fail("the block did not run: see the first test")
    assert probe
    lines = [c for c in readme_block(ROOT / "README.md", "Then look at it all", "hrm solve") if "hrm solve" in c]
    assert len(lines) == 2  # one puzzle the demo's model solves, one it does not (README quotes both answers)
    home = cluster_block["repo"].parent / "home"
    for line in lines:
        solved = subprocess.run(["bash", "-c", line], cwd=cluster_block["repo"], env=fresh_env(home),
                                capture_output=True, text=True, timeout=300)
        assert solved.returncode == 0, solved.stdout + solved.stderr[-3000:]
        assert re.search(r"^valid: (yes|NO), ", solved.stdout, re.M), solved.stdout  # the answer's verdict


def in_private_network(cluster_block, name: str, lines: list[str]) -> subprocess.CompletedProcess:
    """``lines`` as a bash script from a fresh shell in the checkout the jobs ran in, in a private network namespace
    (the README's ports 5000 and 8080 are free there); a server they start in the background is stopped after."""
    script = cluster_block["repo"].parent / f"{name}.sh"
    script.write_text("set -e\n" + "\n".join(lines) + "\nkill %1\nwait\n")
    inner = f"ip link set lo up && cd {shlex.quote(str(cluster_block['repo']))} && exec bash {shlex.quote(str(script))}"
    home = cluster_block["repo"].parent / "home"
    return subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "bash", "-c",
                           inner], env=fresh_env(home), capture_output=True, text=True, timeout=300)


def test_readme_serving_block_answers(cluster_block):
    """README's serving block, as written (its registry holds the 6×6 model the block's puzzle needs)."""
    assert cluster_block["probe"], "the block did not run: see the first test"
    run = in_private_network(cluster_block, "serve", readme_block(ROOT / "README.md", "**Serving**", "hrm serve"))
    answer = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("{")))
    (prediction,) = answer["predictions"]
    assert set(prediction) == {"solution", "grid", "steps", "confidence", "valid"}
    assert isinstance(prediction["valid"], bool)  # a Sudoku's rules can tell: true or false, never null
    assert len(prediction["solution"]) == 36 and len(json.loads(prediction["grid"])) == 6  # compact text, JSON rows
    assert "Downloading artifacts" not in run.stdout + run.stderr


def test_readme_mlflow_ui_line_serves(cluster_block):
    """README's `mlflow ui` line (under "Then look at it all"), started in the background: the UI answers."""
    assert cluster_block["probe"], "the block did not run: see the first test"
    lines = readme_block(ROOT / "README.md", "Then look at it all", "mlflow ui")
    (ui,) = [line.split("#")[0].strip() for line in lines if "mlflow ui" in line]
    run = in_private_network(cluster_block, "ui", [f"{ui} &",
                                                   "until curl -sf 127.0.0.1:5000/health > /dev/null; do sleep 1; done",
                                                   "echo; echo UI-READY"])
    # /health answered (the server's own output interleaves with the script's)
    assert run.returncode == 0 and "UI-READY" in run.stdout.splitlines(), run.stdout + run.stderr[-3000:]


def test_submit_script_from_a_fresh_shell(tmp_path):
    """cluster/submit.sh needs a cluster to do its work; what runs here: its usage, and a clear word when the
    `ray` CLI is not on PATH (the venv not active)."""
    script = str(ROOT / "cluster/submit.sh")
    bare = subprocess.run(["bash", script, "train"], env=fresh_env(tmp_path), capture_output=True, text=True,
                          timeout=60)
    assert bare.returncode == 2 and "source .venv/bin/activate" in bare.stderr, bare.stderr
    env = {**fresh_env(tmp_path), "PATH": f"{VENV / 'bin'}:{FRESH_PATH}"}
    usage = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr
