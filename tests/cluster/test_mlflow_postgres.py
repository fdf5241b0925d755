"""The MLflow server the cluster guide deploys (cluster/kuberay/mlflow.yaml), on a real PostgreSQL: the manifest's own
`mlflow server` command and environment, with its `postgresql+psycopg2://` store on a PostgreSQL started here
(Debian's package, a temporary cluster on 127.0.0.1 with password auth) and artifacts served through the server.
The server requires a login (MLflow's basic-auth app, its users in the same PostgreSQL): a request without the
password, or with a wrong one, is refused; a tiny `hrm train` with the admin login the Ray pods get logs and
registers its model through it; the registry rows are in PostgreSQL.

Changed from the manifest only where a pod differs from this machine: host 127.0.0.1 and a free port instead of
0.0.0.0:5000, one worker instead of two, no `pip install` (the venv has psycopg2-binary), the auth config file in a
temporary folder, and the Secrets' files (as the pod mounts them) written here with values made up here. Skipped, saying why, where PostgreSQL is not installed
(`make test` installs it when it runs as root with apt-get).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests
import yaml

from tests.processes import free_port, stop_group, wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MANIFEST = ROOT / "cluster/kuberay/mlflow.yaml"
MODEL = "hrm-pg-test"


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    return versions[-1] if versions else None


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster in a temporary folder on 127.0.0.1:<free port>, user `mlflow` with a password and a
    database `mlflow` (as the manifest's mlflow-db Deployment makes); run as the `postgres` user when we are root
    (PostgreSQL refuses to run as root)."""
    initdb, server = pg_bin("initdb"), pg_bin("postgres")
    if not (initdb and server):
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; `make test` does it as root)")
    pytest.importorskip("psycopg2", reason="psycopg2-binary (a project dependency) is not installed")
    as_user = None
    if os.geteuid() == 0:
        try:
            as_user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as")
    root = Path(tempfile.mkdtemp(prefix="hrm-pg-"))  # not under pytest's root-only folder: postgres must reach it
    password = secrets.token_hex(8)
    (root / "pw").write_text(password)
    if as_user:
        for path in (root, root / "pw"):
            os.chown(path, as_user.pw_uid, as_user.pw_gid)
    user = {"user": as_user.pw_uid, "group": as_user.pw_gid, "extra_groups": []} if as_user else {}
    env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "HOME": str(root)}
    init = subprocess.run([initdb, "-D", str(root / "data"), "-U", "mlflow", f"--pwfile={root / 'pw'}",
                           "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=root, **user)
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    port = free_port()
    log = root / "postgres.log"
    with open(log, "w") as out:
        if as_user:
            os.chown(log, as_user.pw_uid, as_user.pw_gid)
        proc = subprocess.Popen([server, "-D", str(root / "data"), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                                 "-c", f"unix_socket_directories={root}", "-c", "fsync=off"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True,
                                **user)
    import psycopg2

    def connect(db: str):
        return psycopg2.connect(host="127.0.0.1", port=port, user="mlflow", password=password, dbname=db,
                                connect_timeout=3)

    def ready() -> bool:
        try:
            connect("postgres").close()
            return True
        except psycopg2.OperationalError:
            return False

    try:
        wait_until("postgres", ready, proc, log.read_text, poll=0.5)
        conn = connect("postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE mlflow")
        conn.close()
        yield {"port": port, "password": password, "connect": lambda: connect("mlflow")}
    finally:
        # SIGINT: PostgreSQL's fast shutdown. SIGTERM, its smart shutdown, waits for every client to leave (this
        # process's pooled connections never do): 20 s of grace, then a kill, at every run.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        stop_group(proc, grace=10)
        shutil.rmtree(root, ignore_errors=True)


def manifest_server() -> tuple[dict[str, str], str]:
    """The mlflow container of the manifest: its literal env values and its shell command (args)."""
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    (deploy,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow"]
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}, " ".join(container["args"])


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow-pg")
    env_values, shell = manifest_server()
    pip, command = shell.split(" && ", 1)  # the pip install first is the image's business
    assert pip.startswith("pip install") and "exec mlflow server" in command
    port = free_port()
    command = (command.replace("--host 0.0.0.0", "--host 127.0.0.1").replace("--port 5000", f"--port {port}")
               .replace("--workers 2", "--workers 1"))
    login = {"username": "admin", "password": secrets.token_hex(8)}  # the mlflow-auth Secret
    mounted = tmp / "secrets"  # the Secrets as the pod mounts them: one file per key
    for name, value in {"mlflow-db/password": postgres["password"], "mlflow-auth/username": login["username"],
                        "mlflow-auth/password": login["password"], "mlflow-auth/secret-key": secrets.token_hex(16)}.items():
        (mounted / name).parent.mkdir(parents=True, exist_ok=True)
        (mounted / name).write_text(value)
    (tmp / "auth").mkdir()
    env = {**os.environ, **env_values, "DB_ADDRESS": f"127.0.0.1:{postgres['port']}",
           "DB_PASSWORD_FILE": str(mounted / "mlflow-db/password"), "AUTH_SECRETS": str(mounted / "mlflow-auth"),
           "ARTIFACTS_DESTINATION": str(tmp / "artifacts"), "MLFLOW_AUTH_CONFIG_PATH": str(tmp / "auth/basic_auth.ini"),
           "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    log = tmp / "mlflow.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["sh", "-c", command], env=env, cwd=tmp, stdout=out,  # the pod's /bin/sh -c
                                stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return requests.get(f"{uri}/health", timeout=2).status_code in (200, 401)
        except requests.ConnectionError:
            return False

    try:
        wait_until("mlflow server", ready, proc, log.read_text, timeout=120, poll=0.5)
        yield {"uri": uri, "tmp": tmp, "log": log, "command": shlex.split(command.split("exec ", 1)[1]),
               "login": login, "proc": proc, "secrets": [postgres["password"], login["password"]]}
    finally:
        stop_group(proc)


def test_the_manifest_pins_its_packages_and_keeps_secrets_out_of_command_lines(mlflow_server):
    """#31: the pod installs pinned versions only; no process of the server shows a password in its command line
    (``ps`` shows every process's to every user of the pod) and the auth config holding the store URI is private."""
    import psutil

    _, shell = manifest_server()
    packages = shell.split(" && ", 1)[0].split()[2:]
    assert [p for p in packages if not p.startswith("-") and "==" not in p] == []
    assert {p.split("==")[0] for p in packages if "==" in p} == {"psycopg2-binary", "boto3", "Flask-WTF"}
    group = [psutil.Process(mlflow_server["proc"].pid)]
    group += group[0].children(recursive=True)
    assert len(group) >= 2  # the shell's exec'd mlflow server and its workers
    for process in group:
        line = " ".join(process.cmdline())
        assert not any(secret in line for secret in mlflow_server["secrets"]), line
    config = mlflow_server["tmp"] / "auth/basic_auth.ini"
    assert config.stat().st_mode & 0o077 == 0, oct(config.stat().st_mode)
    assert mlflow_server["secrets"][0] in config.read_text()  # the store URI it needs is there, for its owner only


def hrm(*args: str, cwd: Path, env: dict, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "hrm"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_server_refuses_requests_without_its_login(mlflow_server):
    search = f"{mlflow_server['uri']}/api/2.0/mlflow/experiments/search?max_results=5"
    assert requests.get(search, timeout=10).status_code == 401
    assert requests.get(search, auth=("admin", "wrong"), timeout=10).status_code == 401
    login = mlflow_server["login"]
    assert requests.get(search, auth=(login["username"], login["password"]), timeout=10).status_code == 200


def sudoku_dataset(folder: Path) -> None:
    """A dataset in the build's format (parts listed with sizes and checksums) of 56 generated 4×4 Sudoku puzzles, 48
    to train on (6 steps an epoch at batch 8) and 8 to test, written in this process."""
    import numpy as np

    from hrm.tasks.sudoku import SudokuTask
    from pipeline.data.meta import write_metadata
    from pipeline.data.write import index_parts, write_part

    task = SudokuTask((2, 2))
    puzzles, solutions, _, _ = task.generate_many(5, 56)
    inputs, labels = (np.stack(x) for x in zip(*(task.encode((p, q)) for p, q in zip(puzzles, solutions))))
    counts, files = {"train": 48, "test": 8}, {}
    for split, rows in (("train", slice(0, 48)), ("test", slice(48, 56))):
        (folder / split).mkdir(parents=True)
        n = rows.stop - rows.start
        write_part(folder / split / "part-00000.parquet", inputs[rows], labels[rows], np.zeros(n, np.int32),
                   np.arange(n), 0)
        files[split] = index_parts(str(folder / split), split, n)
    write_metadata(folder, {"task": "sudoku", "task_args": {"box": [2, 2]}, "vocab_size": task.vocab_size,
                            "seq_len": task.seq_len, "num_puzzle_identifiers": 1, "counts": counts,
                            "groups": counts, "config": {}, "seed": 5, "fingerprint": "tiny-pg",
                            "checksums": "sha256", "files": files})


def test_train_registers_through_the_manifest_server_on_postgres(mlflow_server, postgres, monkeypatch):
    tmp, uri = mlflow_server["tmp"], mlflow_server["uri"]
    assert "--serve-artifacts" in mlflow_server["command"] and "basic-auth" in mlflow_server["command"]
    login = {"MLFLOW_TRACKING_USERNAME": mlflow_server["login"]["username"],
             "MLFLOW_TRACKING_PASSWORD": mlflow_server["login"]["password"]}  # what the Ray pods get
    for name, value in login.items():
        monkeypatch.setenv(name, value)  # this process's MlflowClient below, and the hrm commands
    sudoku_dataset(tmp / "data" / "tiny")  # written here without Ray: the data job never talks to MLflow
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HRM_PROGRESS": "lines"}
    env.pop("RAY_ADDRESS", None)
    sets = ["name=pg", "data=data/tiny", "flavour=debug", "max_steps=6", "eval_interval=3", "eval_limit=8",
            "global_batch_size=8", "log_interval=1", "storage_path=runs", f"tracking.model_name={MODEL}",
            "tracking.experiment=pg"]
    trained = hrm("train", *[a for s in sets for a in ("--set", s)], cwd=tmp, env=env)
    assert trained.returncode == 0, trained.stderr[-4000:]
    assert not (tmp / "mlflow.db").exists() and not (tmp / "mlruns").exists()  # everything went to the server

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    version = client.get_model_version_by_alias(MODEL, "champion")
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # uploaded through the server
    assert {m.step for m in client.get_metric_history(run.info.run_id, "eval/exact_accuracy")} == {3, 6}
    stored = list((tmp / "artifacts").rglob("MLmodel"))
    assert stored, "the model's files are not in the server's artifact destination"
    with postgres["connect"]() as conn, conn.cursor() as cur:  # the registry lives in PostgreSQL
        cur.execute("select version from model_versions where name = %s", (MODEL,))
        assert [int(v) for (v,) in cur.fetchall()] == [int(version.version)]
        cur.execute("select status from runs where run_uuid = %s", (run.info.run_id,))
        assert cur.fetchone() == ("FINISHED",)
        cur.execute("select username, is_admin from users")  # ... and so do the logins
        assert cur.fetchall() == [("admin", True)]
