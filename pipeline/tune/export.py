"""A sweep's MLflow parent run as files, to keep beside a write-up (docs/tune-reasoning.md keeps its parts so):

    python -m pipeline.tune.export runs/sweeps/reasoning-depth docs/tune-reasoning/part-1

writes ``parent_run.json`` (the run's status, times, params, tags and latest metrics), ``curves.json`` (every
``curves/*`` metric's points: seconds of training, eval exact accuracy) and a copy of the sweep's ``report/``."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def export_sweep(folder: Path, out: Path) -> list[Path]:
    """Write the sweep in ``folder`` (its parent run, curves and report) to ``out``; returns the files written."""
    from mlflow.tracking import MlflowClient

    from pipeline.tune.curves import PREFIX
    from pipeline.tune.plan import BASE_FILE, PARENT_FILE

    folder, out = Path(folder), Path(out)
    if not (folder / PARENT_FILE).is_file():
        raise FileNotFoundError(f"{folder} holds no sweep (no {PARENT_FILE})")
    uri = json.loads((folder / BASE_FILE).read_text())["tracking"]["tracking_uri"]
    client = MlflowClient(uri)
    run = client.get_run((folder / PARENT_FILE).read_text().strip())
    out.mkdir(parents=True, exist_ok=True)
    summary = {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
               "start_time_ms": run.info.start_time, "end_time_ms": run.info.end_time, "tracking_uri": uri,
               "params": dict(sorted(run.data.params.items())), "tags": dict(sorted(run.data.tags.items())),
               "metrics": {k: v for k, v in sorted(run.data.metrics.items()) if not k.startswith(PREFIX)}}
    written = [out / "parent_run.json", out / "curves.json"]
    written[0].write_text(json.dumps(summary, indent=2) + "\n")
    curves = {key.removeprefix(PREFIX): sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id,
                                                                                                     key))
              for key in sorted(run.data.metrics) if key.startswith(PREFIX)}
    written[1].write_text(json.dumps(curves, indent=1) + "\n")
    for path in sorted((folder / "report").glob("*")):
        shutil.copy2(path, out / path.name)
        written.append(out / path.name)
    log.info("sweep %s: %d files in %s", folder.name, len(written), out)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="the sweep's folder (<storage_path>/<name>)")
    parser.add_argument("out", type=Path, help="where the files go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in export_sweep(args.sweep, args.out):
        log.info("%s", path)


if __name__ == "__main__":
    main()
