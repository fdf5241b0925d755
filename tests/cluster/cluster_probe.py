"""Run inside the fresh shell of tests/cluster/test_commands.py, after the README's jobs and before its `ray stop`:
writes what the test checks to ``<out>/probe.json`` — every job's status and log (``ray job logs``) and what the
dashboard's Train API (``/api/train/v2/runs/v1``) answers. Uses only what a user has: the Jobs API and the token."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

DASHBOARD = "http://127.0.0.1:8265"


def main(out: Path) -> None:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(DASHBOARD)
    jobs = []
    for job in client.list_jobs():
        jobs.append({"entrypoint": job.entrypoint, "status": job.status.value,
                     "logs": client.get_job_logs(job.submission_id)})
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    request = urllib.request.Request(f"{DASHBOARD}/api/train/v2/runs/v1",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        train_runs = json.loads(answer.read())
    (out / "probe.json").write_text(json.dumps({"jobs": jobs, "train_runs": train_runs}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
