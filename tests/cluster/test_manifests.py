"""The cluster files: every manifest parses, runs a real `hrm` command on config files that exist and load, and uses
the Ray version pinned in pyproject.toml (image tags, rayVersion, pip pins); MLflow's image fits the pinned range."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
APP = "/home/ray/hrm-pipeline"  # where the image holds the repository (cluster/Dockerfile WORKDIR)
SHARED = "/mnt/shared"
MANIFESTS = sorted(KUBERAY.glob("*.yaml")) + [CLUSTER / "launcher-aws.yaml"]
RAYJOBS = {"rayjob-data.yaml": "data", "rayjob-train.yaml": "train", "rayjob-train-elastic.yaml": "train",
           "rayjob-tune.yaml": "tune"}


def pinned(name: str) -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if re.match(rf"{name}(\[|[=<>!~ ]|$)", d))
    return spec


def ray_version() -> str:
    match = re.search(r"==\s*([0-9][0-9.]*)", pinned("ray"))
    assert match, "pyproject.toml must pin ray exactly (ray[...]==X.Y.Z)"
    return match.group(1)


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def walk(node, key: str):
    """Every value stored under ``key`` anywhere in a nested YAML document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, key)


def containers(doc: dict) -> list[dict]:
    return [c for group in walk(doc, "containers") for c in group]


def hrm_command(shell: str) -> list[str]:
    """The ``hrm ...`` part of an entrypoint such as ``cd /home/ray/hrm-pipeline && hrm train --config ...``."""
    parts = shlex.split(shell.replace("$APP", APP).replace("$SHARED", SHARED))
    segments, current = [], []
    for token in parts:
        if token in ("&&", ";"):
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    commands = [s for s in segments if s and s[0] == "hrm"]
    assert len(commands) == 1, f"expected one hrm command in {shell!r}"
    for s in segments:
        if s and s[0] == "cd":
            assert s[1] == APP, f"jobs run in the image's repository folder {APP}, not {s[1]}"
    return commands[0]


def check_hrm_command(argv: list[str]) -> str:
    """Parse ``argv`` with the real CLI and load its config files with their overrides; return the subcommand."""
    from pipeline.cli import main
    from pipeline.cli.sets import parse_sets

    args = [str(ROOT / a) if a.startswith("pipeline/configs/") else a for a in argv[1:]]
    config = next(Path(a) for prev, a in zip(args, args[1:]) if prev == "--config")
    assert config.is_file(), f"{argv}: config file {config} is not in the repository"
    sub = args[0]
    command = main.commands[sub]
    rest = args[1:]
    if sub == "data":
        command = command.commands[rest[0]]
        rest = rest[1:]
    ctx = command.make_context(sub, list(rest))  # unknown options or bad values raise here
    params = ctx.params
    if sub == "data":
        from pipeline.data.config import load_config

        cfg = load_config(config, task=params["task"])
        assert params["out"].startswith(SHARED + "/data/"), "a dataset must land on the shared volume"
        assert Path(params["out"]).name == cfg.name
    elif sub == "train":
        from pipeline.train.config import load_train_config

        cfg = load_train_config(config, parse_sets(params["sets"]))
        assert cfg.data.startswith(SHARED + "/") and cfg.storage_path.startswith(SHARED + "/")
    elif sub == "tune":
        from pipeline.tune.config import load_sweep_config

        cfg = load_sweep_config(config, parse_sets(params["sets"]))
        assert cfg.storage_path.startswith(SHARED + "/")
        assert cfg.overrides.get("data", "").startswith(SHARED + "/")
    else:
        raise AssertionError(f"unexpected hrm subcommand {sub}")
    return sub


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_parses(path):
    assert docs(path), f"{path} holds no YAML document"


@pytest.mark.parametrize("path", MANIFESTS + [CLUSTER / "Dockerfile"], ids=lambda p: p.name)
def test_ray_images_and_pins_match_pyproject(path):
    version = ray_version()
    text = path.read_text()
    images = re.findall(r"(?:image:|FROM)\s+(\S+)", text)
    ray_images = [i for i in images if "ray" in i.split("/")[-1] or "hrm-pipeline" in i]
    if path.name not in ("mlflow.yaml", "network-policy.yaml"):
        assert ray_images, f"{path}: no Ray image"
    for image in ray_images:
        tag = image.rsplit(":", 1)[-1]
        found = re.search(r"(\d+\.\d+\.\d+)", tag)
        assert found and found.group(1) == version, f"{path}: image {image} is not Ray {version}"
    for pin in re.findall(r"ray\[[^\]]*\]==([0-9.]+)", text):
        assert pin == version, f"{path}: pins ray {pin}, pyproject.toml {version}"
    for doc in (docs(path) if path.suffix == ".yaml" else []):
        for value in walk(doc, "rayVersion"):
            assert str(value) == version, f"{path}: rayVersion {value} != {version}"


@pytest.mark.parametrize("name", sorted(RAYJOBS))
def test_rayjob_runs_a_real_command_and_cleans_up(name):
    (job,) = [d for d in docs(KUBERAY / name) if d["kind"] == "RayJob"]
    spec = job["spec"]
    assert job["apiVersion"] == "ray.io/v1"
    assert spec["shutdownAfterJobFinishes"] is True
    assert check_hrm_command(hrm_command(spec["entrypoint"])) == RAYJOBS[name]
    cluster = spec["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    for container in containers(cluster):
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert SHARED in mounts, f"{name}: {container['name']} does not mount the shared volume"
    claims = set(walk(cluster, "claimName"))
    assert claims == {"hrm-shared"}, claims
    if RAYJOBS[name] != "data":  # Train checks the cluster's GPUs before fit(): keep the GPU workers up
        groups = cluster["workerGroupSpecs"]
        gpus = sum(int(g["minReplicas"]) for g in groups
                   for c in containers(g) if "nvidia.com/gpu" in c["resources"]["limits"])
        assert gpus >= 1


def test_raycluster_has_cpu_head_and_gpu_workers():
    by_kind = {d["kind"]: d for d in docs(KUBERAY / "raycluster.yaml")}
    pvc, cluster = by_kind["PersistentVolumeClaim"], by_kind["RayCluster"]["spec"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"] and pvc["metadata"]["name"] == "hrm-shared"
    (head,) = containers(cluster["headGroupSpec"])
    assert "nvidia.com/gpu" not in head["resources"].get("limits", {})
    assert {p["containerPort"] for p in head["ports"]} >= {6379, 8265}
    (group,) = cluster["workerGroupSpecs"]
    assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    (worker,) = containers(group)
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == worker["resources"]["limits"]["nvidia.com/gpu"]
    for c in (head, worker):
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.hrm.svc.cluster.local:5000"


def test_the_elastic_rayjob_fits_its_worker_range_to_its_spot_group():
    """The run's [min, max] workers within what the spot GPU group can hold (one GPU a pod): Train can start on the
    group's minimum and the autoscaler may grow it to the range's maximum; a lost node is restarted from."""
    from pipeline.cli.sets import parse_sets
    from pipeline.train.config import load_train_config

    (job,) = [d for d in docs(KUBERAY / "rayjob-train-elastic.yaml") if d["kind"] == "RayJob"]
    argv = hrm_command(job["spec"]["entrypoint"])
    sets = parse_sets(tuple(a for prev, a in zip(argv, argv[1:]) if prev == "--set"))
    cfg = load_train_config(ROOT / argv[argv.index("--config") + 1], sets)
    assert cfg.scaling.elastic and cfg.max_failures != 0 and cfg.checkpoint_minutes is not None
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    (group,) = cluster["workerGroupSpecs"]
    (worker,) = containers(group)
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) == 1 and cfg.scaling.gpus_per_worker == 1
    assert group["minReplicas"] <= cfg.scaling.min_workers and cfg.scaling.max_workers <= group["maxReplicas"]
    assert "SPOT" in group["template"]["spec"]["nodeSelector"].values()


def test_mlflow_server_has_database_and_artifact_store():
    from packaging.specifiers import SpecifierSet

    items = {(d["kind"], d["metadata"]["name"]): d for d in docs(KUBERAY / "mlflow.yaml")}
    server = items[("Deployment", "mlflow")]
    assert ("Service", "mlflow") in items and ("Service", "mlflow-db") in items
    (container,) = containers(server)
    env = {e["name"]: e.get("value") for e in container["env"]}
    command = " ".join(container["args"])
    assert 'MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://mlflow:$(cat "$DB_PASSWORD_FILE")@$DB_ADDRESS/mlflow"' \
        in command  # the driver installed: psycopg2-binary; the password from the mounted Secret
    assert env["DB_ADDRESS"] == "mlflow-db:5432"
    for flag in ("--artifacts-destination", "--serve-artifacts", "--host 0.0.0.0"):
        assert flag in command
    assert "--backend-store-uri" not in command  # it holds the password: MLflow reads it from its environment
    version = container["image"].rsplit(":v", 1)[-1]
    assert version in SpecifierSet(pinned("mlflow").removeprefix("mlflow")), f"MLflow image {version}"
    assert "mlflow.hrm.svc*" in env["MLFLOW_SERVER_ALLOWED_HOSTS"]
    (db,) = containers(items[("Deployment", "mlflow-db")])
    assert db["image"].startswith("postgres:")


def test_launcher_config_is_valid_for_the_ray_autoscaler():
    import jsonschema
    import ray.autoscaler

    config = docs(CLUSTER / "launcher-aws.yaml")[0]
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    assert config["head_node_type"] in types and any("gpu" in t for t in types)
    spot = types["gpu_spot_worker"]  # for elastic runs: may be reclaimed, so none is required
    assert spot["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot" and spot["min_workers"] == 0
    assert config["file_mounts"][APP] == "."
    setup = " ".join(config["setup_commands"])
    assert f"pip install --quiet -e {APP}" in setup and f"ray[default,data,train,tune]=={ray_version()}" in setup
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])


def test_submit_script_commands_are_real():
    text = (CLUSTER / "submit.sh").read_text()
    shells = re.findall(r'submit "([^"]+)"', text)
    subs = {check_hrm_command(hrm_command(s)) for s in shells}
    assert subs == {"data", "train", "tune"}
    assert "ray job submit" in text


def test_dockerfile_installs_the_package():
    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(rf"^WORKDIR {APP}$", text, re.M)
    assert "pip install --no-cache-dir -e ." in text and "COPY --chown=ray:users pipeline pipeline" in text


def test_readme_names_every_file():
    readme = (CLUSTER / "README.md").read_text()
    for path in [*MANIFESTS, CLUSTER / "Dockerfile", CLUSTER / "submit.sh"]:
        assert path.relative_to(ROOT).as_posix() in readme, path


def test_every_cluster_recipe_turns_on_train_state_tracking():
    """Ray 2.60's dashboard lists Train runs and their workers only with RAY_TRAIN_ENABLE_STATE_TRACKING=1."""
    raycluster = {d["kind"]: d for d in docs(KUBERAY / "raycluster.yaml")}["RayCluster"]["spec"]
    for c in containers(raycluster):
        assert {e["name"]: e.get("value") for e in c["env"]}["RAY_TRAIN_ENABLE_STATE_TRACKING"] == "1", c["name"]
    for name in RAYJOBS:
        (job,) = [d for d in docs(KUBERAY / name) if d["kind"] == "RayJob"]
        assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]["RAY_TRAIN_ENABLE_STATE_TRACKING"] == "1"
    for path in (CLUSTER / "Dockerfile", CLUSTER / "launcher-aws.yaml", CLUSTER / "submit.sh"):
        assert re.search(r"RAY_TRAIN_ENABLE_STATE_TRACKING\W+1", path.read_text()), path.name


def test_mlflow_server_driver_is_a_project_dependency():
    """The server's store is postgresql+psycopg2:// (tests/cluster/test_mlflow_postgres.py runs it): the venv that
    runs that test, and any `mlflow server` started from it, need psycopg2."""
    items = {(d["kind"], d["metadata"]["name"]): d for d in docs(KUBERAY / "mlflow.yaml")}
    (container,) = containers(items[("Deployment", "mlflow")])
    install = " ".join(container["args"]).split(" && ", 1)[0].split()
    assert "postgresql+psycopg2://" in " ".join(container["args"])
    assert pinned("psycopg2-binary") and pinned("Flask-WTF") and pinned("boto3")
    # The stock MLflow image lacks them: installed first, each at one version (#31: no unpinned install at start).
    assert sorted(p.split("==")[0] for p in install if "==" in p) == ["Flask-WTF", "boto3", "psycopg2-binary"]
    assert [p for p in install[2:] if not p.startswith("-") and "==" not in p] == []


# ------------------------------------------------------------------------------------------------ who can reach what
RAY_TOKEN = {"name": "hrm-ray-token", "key": "auth_token"}


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def from_secret(entry: dict | None, secret: dict) -> bool:
    return bool(entry) and entry.get("valueFrom", {}).get("secretKeyRef") == secret


def ray_specs() -> list[tuple[str, dict]]:
    """(file, RayCluster spec) of every KubeRay manifest: the RayCluster and each RayJob's cluster."""
    found = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in docs(path):
            if doc["kind"] == "RayCluster":
                found.append((path.name, doc["spec"]))
            elif doc["kind"] == "RayJob":
                found.append((path.name, doc["spec"]["rayClusterSpec"]))
    return found


@pytest.mark.parametrize("name, spec", ray_specs(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_ray_container_requires_the_token_and_logs_in_to_mlflow(name, spec):
    """Ray's Jobs API runs whatever it is sent: every Ray pod enforces the token, and logs in to MLflow's
    basic-auth with the mlflow-auth Secret (no credentials written in the file)."""
    for c in containers(spec):
        env = env_of(c)
        assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{name}: {c['name']} without token auth"
        assert from_secret(env.get("RAY_AUTH_TOKEN"), RAY_TOKEN), f"{name}: {c['name']}: token not from the Secret"
        for key, field in (("MLFLOW_TRACKING_USERNAME", "username"), ("MLFLOW_TRACKING_PASSWORD", "password")):
            assert from_secret(env.get(key), {"name": "mlflow-auth", "key": field}), f"{name}: {c['name']}: {key}"


@pytest.mark.parametrize("name", sorted(RAYJOBS))
def test_rayjob_submitters_carry_the_token(name):
    """KubeRay's submitter pod runs `ray job submit` against the head: without the token it is refused."""
    (job,) = [d for d in docs(KUBERAY / name) if d["kind"] == "RayJob"]
    (submitter, *_) = job["spec"]["submitterPodTemplate"]["spec"]["containers"]  # the first one submits
    env = env_of(submitter)
    assert env["RAY_AUTH_MODE"]["value"] == "token" and from_secret(env["RAY_AUTH_TOKEN"], RAY_TOKEN)
    assert "command" not in submitter, "KubeRay supplies the submit command from the entrypoint"
    assert job["spec"]["submitterPodTemplate"]["spec"]["restartPolicy"] == "Never"


def test_mlflow_server_requires_a_login():
    items = {(d["kind"], d["metadata"]["name"]): d for d in docs(KUBERAY / "mlflow.yaml")}
    (container,) = containers(items[("Deployment", "mlflow")])
    command, env = " ".join(container["args"]), env_of(container)
    assert "--app-name basic-auth" in command
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in items[("Deployment", "mlflow")]["spec"]["template"]["spec"]["volumes"]}
    secrets_dir = env["AUTH_SECRETS"]["value"]
    assert volumes[next(n for n, p in mounts.items() if p == secrets_dir)]["secret"]["secretName"] == "mlflow-auth"
    db_file = env["DB_PASSWORD_FILE"]["value"]
    db_dir, _, key = db_file.rpartition("/")
    assert volumes[next(n for n, p in mounts.items() if p == db_dir)]["secret"]["secretName"] == "mlflow-db"
    assert key == "password"
    for name, key in (("MLFLOW_AUTH_ADMIN_USERNAME", "username"), ("MLFLOW_AUTH_ADMIN_PASSWORD", "password"),
                      ("MLFLOW_FLASK_SERVER_SECRET_KEY", "secret-key")):  # from the mounted files, not the pod spec
        assert f'{name}="$(cat "$AUTH_SECRETS/{key}")"' in command and name not in env
    assert command.index("umask 077") < command.index('> "$MLFLOW_AUTH_CONFIG_PATH"')  # written private
    config_dir = env["MLFLOW_AUTH_CONFIG_PATH"]["value"].rpartition("/")[0]
    assert "emptyDir" in volumes[next(n for n, p in mounts.items() if p == config_dir)]


def test_network_policies_admit_only_the_namespace():
    """Ray pods and MLflow take connections from pods of their namespace only, PostgreSQL from MLflow only."""
    policies = {d["metadata"]["name"]: d["spec"] for d in docs(KUBERAY / "network-policy.yaml")
                if d["kind"] == "NetworkPolicy"}
    selected = {name: spec["podSelector"]["matchLabels"] for name, spec in policies.items()}
    assert selected == {"hrm-ray": {"ray.io/is-ray-node": "yes"}, "mlflow": {"app": "mlflow"},
                        "mlflow-db": {"app": "mlflow-db"}}
    for name, spec in policies.items():
        assert spec["policyTypes"] == ["Ingress"]
        for rule in spec["ingress"]:
            assert rule.get("from"), f"{name}: an ingress rule without `from` admits everyone"
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, f"{name}: {peer} admits more than this namespace's pods"
    (db_rule,) = policies["mlflow-db"]["ingress"]
    assert db_rule["from"] == [{"podSelector": {"matchLabels": {"app": "mlflow"}}}]
    labels = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in docs(KUBERAY / "mlflow.yaml")
              if d["kind"] == "Deployment"}
    assert labels == {"mlflow-db": {"app": "mlflow-db"}, "mlflow": {"app": "mlflow"}}  # what the policies select


def test_launcher_nodes_require_the_token_and_keep_the_dashboard_local():
    config = docs(CLUSTER / "launcher-aws.yaml")[0]
    token = "/home/ray/.ray/auth_token"
    assert config["file_mounts"][token] == "~/.ray/auth_token"
    assert config["file_mounts"]["/home/ray/.mlflow/credentials"] == "~/.mlflow/credentials"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(config[key])
        assert "RAY_AUTH_MODE=token" in start and f"RAY_AUTH_TOKEN_PATH={token}" in start, key
        assert "0.0.0.0" not in start, key


def test_the_guide_creates_every_secret_the_manifests_use():
    """A Secret named in a manifest but created nowhere in the guide leaves pods in CreateContainerConfigError."""
    refs = [ref for path in KUBERAY.glob("*.yaml") for doc in docs(path) for ref in walk(doc, "secretKeyRef")]
    mounted = [v["secretName"] for path in KUBERAY.glob("*.yaml") for doc in docs(path) for v in walk(doc, "secret")
               if isinstance(v, dict)]  # Secrets mounted as files (the MLflow and PostgreSQL pods)
    used = {ref["name"] for ref in refs} | set(mounted)
    assert used == {"hrm-ray-token", "mlflow-db", "mlflow-auth"} and set(mounted) == {"mlflow-db", "mlflow-auth"}
    (server,) = [d for d in docs(KUBERAY / "mlflow.yaml") if d["kind"] == "Deployment" and d["metadata"]["name"] ==
                 "mlflow"]
    read = " ".join(containers(server)[0]["args"])
    keys = {(ref["name"], ref["key"]) for ref in refs} | {("mlflow-db", "password")} | {
        ("mlflow-auth", key) for key in re.findall(r'"\$AUTH_SECRETS/([\w-]+)"', read)}
    assert {k for n, k in keys if n == "mlflow-auth"} == {"username", "password", "secret-key"}
    guide = (CLUSTER / "README.md").read_text()
    for secret in used:
        assert f"create secret generic {secret} " in guide, secret
        created = guide.split(f"create secret generic {secret} ", 1)[1].split("\n\n", 1)[0].split("kubectl", 1)[0]
        for name, key in keys:
            if name == secret:
                assert f"--from-literal={key}=" in created, f"the guide's {secret} has no {key}"
    assert "kubectl -n hrm apply -f cluster/kuberay/network-policy.yaml" in guide
