"""`hrm bench reasoning` end to end, a 1-minute smoke version through the real CLI in its own process (on the suite's
local Ray, as on a cluster: a Ray of its own costs ~4 s to start here): a tiny minimal-6×6 dataset, a variant that
fails and one from the committed run files with a budget of seconds, then the report (table, plot, JSON) and the
MLflow runs (a parent, a child per variant that ran) checked."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core.config_io import CONFIGS

pytestmark = pytest.mark.slow
BUDGET, EVERY = 0.08, 0.025  # minutes of training per variant; an evaluation every EVERY minutes of it


@pytest.fixture(scope="module")
def benched(tmp_path_factory, ray_session):
    """One run of the CLI for the module: (its working folder, the finished process)."""
    tmp_path = tmp_path_factory.mktemp("bench")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"name": "tiny-minimal", "task": "sudoku", "sudoku": {
        "box": [2, 3], "count": 240, "min_rating": 0, "test_fraction": 0.1, "augmentations": 2, "chunk_size": 60}}))
    too_big = yaml.safe_load((CONFIGS / "bench-reasoning-hrm-fast.yaml").read_text())
    too_big["scaling"]["num_workers"] = 64  # refused once Ray is up: this machine has fewer CPUs
    (tmp_path / "too-big.yaml").write_text(yaml.safe_dump(too_big))
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump({
        "name": "smoke", "data_config": "data.yaml", "minutes": 5, "eval_minutes": 1, "votes": 2,
        "variants": {"too-big": "too-big.yaml", "hrm-fast": str(CONFIGS / "bench-reasoning-hrm-fast.yaml")}},
        sort_keys=False))  # a failing variant first: the one after it runs (the report of several: test_bench_merge)
    import ray

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HRM_PROGRESS")}
    env["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    hrm = Path(sys.executable).with_name("hrm")
    done = subprocess.run([str(hrm), "bench", "reasoning", "--config", "bench.yaml", "--minutes", str(BUDGET),
                           "--eval-minutes", str(EVERY), "--out", "reports"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # one variant failed, named at the end:
    assert "Error: variant too-big failed: ValueError: 64 workers" in done.stderr and "need 64 CPUs" in done.stderr
    return tmp_path, done


def test_each_variant_trains_for_its_budget_and_the_report_has_its_curve(benched):
    tmp_path, done = benched
    assert f"2 variant(s) × {BUDGET} min of training" in done.stdout
    (folder,) = (tmp_path / "reports").iterdir()
    assert folder.name.startswith("smoke-") and sorted(p.name for p in folder.iterdir()) == [
        "curves.json", "curves.png", "report.md"]
    report = json.loads((folder / "curves.json").read_text())
    assert report["dataset"]["counts"]["test"] == 24 and report["machine"]["cpu_capability"]
    assert [v["label"] for v in report["variants"]] == ["hrm-fast"]  # the one after a failure ran
    assert list(report["failed"]) == ["too-big"] and "need 64 CPUs" in report["failed"]["too-big"]
    for variant in report["variants"]:
        points = variant["points"]
        assert len(points) >= 3, points  # every EVERY min of training, and at the end
        minutes = [p["minutes"] for p in points]
        assert minutes == sorted(minutes) and BUDGET <= minutes[-1] < BUDGET + EVERY, minutes  # stopped on the budget
        assert all(0 <= p["exact"] <= 1 and 0 < p["cell"] <= 1 for p in points)
        M = variant["model"]["M_max"]  # and twice as deep, voted over 2 symmetries:
        assert set(variant["extra"]) == {f"exact_segments_{M}", f"exact_segments_{2 * M}",
                                         f"exact_segments_{2 * M}_votes_2"}
    text = (folder / "report.md").read_text()
    assert "| hrm-fast |" in text and report["machine"]["cpu"] in text
    assert "Failed:\n\n- `too-big`: ValueError: 64 workers" in text
    assert "report:" in done.stdout and "| variant |" in done.stdout


def test_mlflow_has_a_parent_run_with_the_report_and_a_child_per_variant(benched):
    from mlflow.tracking import MlflowClient

    tmp_path, _ = benched
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("hrm-bench")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("hrm.kind") == "bench"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FAILED" and len(children) == 1  # FAILED: a variant failed; no run of its own
    assert sorted(a.path for a in client.list_artifacts(parent.info.run_id)) == [
        "curves.json", "curves.png", "report.md"]
    for child in children:
        assert child.info.status == "FINISHED" and child.data.params["max_minutes"] == str(BUDGET)
        assert any(k.startswith("bench/exact_segments_") and k.endswith("_votes_2") for k in child.data.metrics)
    assert not client.search_registered_models(), "benchmark runs register no model"


def test_the_settings_search_script_runs_on_the_benchmark_dataset(benched):
    tmp_path, _ = benched
    script = Path(__file__).resolve().parents[3] / "bench" / "reasoning_search.py"
    done = subprocess.run([sys.executable, str(script), "--data", str(tmp_path / "data" / "tiny-minimal"),
                           "--minutes", "0.05", "--every", "0.02", "--batch", "16", "--threads", "1",
                           "--flavour", "debug"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0]["parameters"] > 0 and len(lines) >= 3
    evals = lines[1:]
    assert [e["step"] for e in evals] == sorted(e["step"] for e in evals)
    assert evals[-1]["minutes"] >= 0.05 and all(len(e["by_segment"]) == 4 for e in evals)


def test_every_puzzle_of_the_benchmark_dataset_is_minimal(benched):
    """Held out and trained on alike: a unique solution, and no clue can be removed (an independent check: the
    solver counts solutions with each clue taken out)."""
    from hrm.tasks.sudoku import SudokuTask
    from hrm.tasks.sudoku_solver import is_minimal
    from pipeline.data.loader import load_split

    tmp_path, _ = benched
    task = SudokuTask((2, 3))
    for split in ("train", "test"):
        inputs = load_split(tmp_path / "data" / "tiny-minimal", split)["inputs"]
        assert len(inputs) and all(is_minimal(task.decode(x), (2, 3)) for x in inputs), split
