"""`hrm demo`, the README's first command, end to end at tiny scale through the real CLI in its own process:
Ray Data → Ray Train → MLflow run and registry → a new puzzle solved; everything under --workdir. Its output goes
to pipes, not a terminal: it must read as a log (pipeline.core.progress), as in CI or `make demo > log 2>&1`."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def test_demo_runs_every_stage_inside_its_workdir(tmp_path):
    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    data_cfg, train_cfg = tmp_path / "data.yaml", tmp_path / "train.yaml"
    data_cfg.write_text(yaml.safe_dump({"name": "tiny-demo", "task": "sudoku", "seed": 1, "sudoku": {
        "box": [2, 2], "count": 40, "min_rating": 0, "test_fraction": 0.25, "augmentations": 2, "chunk_size": 20}}))
    train_cfg.write_text(yaml.safe_dump({
        "flavour": "debug", "model": {"halt_max_steps": 2}, "global_batch_size": 4, "epochs": 2, "max_steps": 20,
        "eval_interval": 10, "eval_limit": 8, "log_interval": 1, "optim": {"lr": 3e-3, "lr_warmup_steps": 1},
        "scaling": {"torch_threads": 1}, "tracking": {"model_name": "hrm-tiny-demo"}}))
    workdir, cwd = tmp_path / "work", tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "HRM_PROGRESS")}
    hrm = Path(sys.executable).with_name("hrm")
    done = subprocess.run([str(hrm), "demo", "--workdir", str(workdir), "--data-config", str(data_cfg),
                           "--train-config", str(train_cfg)], cwd=cwd, env=env, capture_output=True,
                          timeout=900)  # bytes: text mode would turn the carriage returns of bar redraws into newlines
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    assert done.returncode == 0, out[-3000:] + err[-3000:]
    for stage in ("1/4 building the dataset", "2/4 training HRM", "3/4 held-out puzzles: exact accuracy",
                  "4/4 a new puzzle", "models:/hrm-tiny-demo@champion answers", "done in"):
        assert stage in out, (stage, out[-2000:])
    assert "correct!" in out or "not quite; the solution is:" in out
    store = workdir / "mlflow.db"
    assert f"--backend-store-uri sqlite:///{store}" in out
    assert list(cwd.iterdir()) == [], "the demo wrote outside its workdir"
    check_log_output(out + err)
    assert (workdir / "data" / "tiny-demo" / "metadata.json").is_file()
    assert any((workdir / "runs").iterdir()) and (workdir / "mlruns").is_dir()
    client = MlflowClient(f"sqlite:///{store}")
    version = client.get_model_version_by_alias("hrm-tiny-demo", "champion")
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED" and "eval/exact_accuracy" in run.data.metrics

    # `hrm eval`, run where the demo ran, scores the registered model on the demo's held-out split exactly as the
    # training job's evaluation of that checkpoint did
    done = subprocess.run([str(hrm), "eval", "--model", "models:/hrm-tiny-demo@champion", "--data",
                           "data/tiny-demo", "--limit", "8"], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    printed = {k: float(v) for k, v in (line.split() for line in done.stdout.splitlines() if line.startswith("eval/"))}
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    recorded = mlflow.pyfunc.load_model("models:/hrm-tiny-demo@champion").unwrap_python_model().info["metrics"]
    assert printed["eval/count"] == 8 and printed["eval/accuracy"] > 0
    for key in ("eval/accuracy", "eval/exact_accuracy", "eval/steps"):
        assert printed[key] == pytest.approx(recorded[key], abs=1e-4), (key, printed, recorded)


# Lines of the whole output (stdout and stderr) of the tiny demo above: 80 measured, 28 of them the puzzle and the
# result, plus Ray's own lines that vary (a 31-line traceback of Train's placement-group cleaner while other Ray
# instances run on the machine: 111). Before pipeline.core.progress: 173 lines and 58 bar redraws (carriage returns).
MAX_DEMO_LINES = 150
# Ray's C++ log lines at ERROR level: "[2026-12-06 16:23:54,912 E 14865 14898] core_worker.cc:2465: ...".
RAY_ERROR_LINE = re.compile(r"\[\d{4}-\d\d-\d\d [\d:,.]+ E \d+ \d+\]")


def check_log_output(text: str) -> None:
    """Readable as a log: the stage headlines, one progress line per ~10% of training (20 steps: 10), the
    evaluations, and no progress bars, Ray Data progress reports or Ray Train metric dumps."""
    lines = text.splitlines()
    assert "\r" not in text, "progress bar redraws (carriage returns) in non-terminal output"
    for headline in ("1/4 building the dataset", "2/4 training HRM", "3/4 held-out puzzles", "4/4 a new puzzle"):
        assert sum(headline in line for line in lines) == 1, (headline, text[-3000:])
    progress = [line for line in lines if re.search(r"train step \d+/20 \(\d+%\) \| .* elapsed \| .* \| ETA ", line)]
    assert [int(re.search(r"train step (\d+)/", line).group(1)) for line in progress] == list(range(2, 21, 2)), \
        "\n".join(progress)
    assert all(re.search(r"\| loss \S+ \| acc [\d.]+ \| exact [\d.]+$", line) for line in progress), progress
    evals = r"step (10|20) \([\d.]+ min of training\): eval exact [\d.]+, token [\d.]+"
    assert sum(bool(re.search(evals, line)) for line in lines) == 2, \
        text[-3000:]
    for noise in ("Running Dataset", "Total Progress", "Reporting training result", "Checkpoint successfully created",
                  "Downloading artifacts", "train steps", "DeprecationWarning"):
        assert noise not in text, (noise, text[-3000:])
    assert "\x1b" not in text, "ANSI escape codes (Ray's coloured prefixes) in non-terminal output"
    alarms = [line for line in lines if RAY_ERROR_LINE.search(line)]
    assert alarms == [], "\n".join(alarms)  # a healthy run logs no error: Ray's benign ones are dropped at the source
    assert len(lines) <= MAX_DEMO_LINES, f"{len(lines)} lines of output:\n{text[-5000:]}"
