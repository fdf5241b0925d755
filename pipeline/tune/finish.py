"""A sweep's end: its trials' report rows (from Ray Tune's Results and each trial's run folder), their MLflow runs
closed, the report logged to the sweep's run, the best trial's model registered; and the report of a sweep stopped
to be resumed."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.core.config_io import to_dict
from pipeline.train.config import TrainConfig
from pipeline.tune.plan import Plan, SweepOutcome, planned_trials, trial_name
from pipeline.tune.report import TrialRow
from pipeline.tune.space import trial_config

log = logging.getLogger(__name__)


def partial_report(plan: Plan, parent: str, results: list) -> list[Path]:
    """The report of a sweep stopped to be resumed: the trials so far, those it stopped ``unfinished``; written to
    ``report/`` and logged to the sweep's run (a resume's report replaces it). Best effort: [] when it fails."""
    from pipeline.tune.report import log_report, write_report

    try:
        stopped = unfinished_trials(plan)
        rows = [_row(plan, result) for result in results if result.metrics]
        for row in rows:
            if row.trial_id in stopped and row.status != "error":
                row.status = "unfinished"
        paths = write_report(rows, plan.folder / "report", plan.sweep.metric, plan.sweep.mode,
                             full=full_trial(plan), not_run=planned_trials(plan.sweep) - len(rows),
                             cores=trial_cores(plan), partial=True)
        log_report(plan.base.tracking.tracking_uri, parent, paths)
        return paths
    except Exception as err:  # noqa: BLE001 -- the sweep's state is saved; a report is a convenience
        log.warning("no report of the stopped sweep: %s", err)
        return []


def finish_sweep(plan: Plan, parent: str, results: list, budget_spent: bool = False) -> SweepOutcome:
    """Summarize the trials (their Ray Tune Results), close their MLflow runs, log the report to the sweep's run,
    register the best model; returns the outcome. ``budget_spent``: the sweep's time budget stopped the trials
    still running (they are reported ``budget_stopped``)."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import runs
    from pipeline.tune.report import log_report, sort_rows, write_report

    sweep, uri = plan.sweep, plan.base.tracking.tracking_uri
    client = MlflowClient(uri)
    rows = [_row(plan, result) for result in results]
    unfinished = unfinished_trials(plan) if budget_spent else set()
    for row in rows:
        if row.trial_id in unfinished and row.status != "error":
            row.status = "budget_stopped"
    for row in rows:
        if row.run_id:
            client.set_tag(row.run_id, "tune.status", row.status)
            client.set_terminated(row.run_id, status="FAILED" if row.status == "error" else "FINISHED")
    paths = write_report(rows, plan.folder / "report", sweep.metric, sweep.mode,
                         full=full_trial(plan), not_run=planned_trials(sweep) - len(rows), cores=trial_cores(plan))
    log_report(uri, parent, paths)
    ranked = [r for r in sort_rows(rows, sweep.metric, sweep.mode) if sweep.metric in r.best]
    best = ranked[0] if ranked else None
    outcome = SweepOutcome(parent_run_id=parent, interrupted=False, rows=rows, best=best, report=paths)
    counts = {status: sum(r.status == status for r in rows)
              for status in ("completed", "early_stopped", "budget_stopped", "error")}
    for status, count in counts.items():
        client.log_metric(parent, f"trials_{status}", count)
    if best is not None:
        client.log_metric(parent, f"best_{sweep.metric.replace('/', '_')}", best.best[sweep.metric])
        client.set_tag(parent, "best_trial_id", best.trial_id)
        client.set_tag(parent, "best_run_id", best.run_id or "")
        _register_best(plan, parent, best, outcome)
    runs.end_run(uri, parent)
    log.info("sweep %s: %s; best trial %s", sweep.name, counts, best.trial_id if best else "-")
    return outcome


def unfinished_trials(plan: Plan) -> set[str]:
    """The trials Tune had started but not ended (neither terminated nor errored) when the sweep stopped."""
    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(str(plan.folder / "tune")).trials
    return {t.trial_id for t in trials if t.status not in ("TERMINATED", "ERROR")}


def trial_cores(plan: Plan) -> float:
    """The cores one trial computes on: its workers × each one's torch threads (else its CPUs)."""
    s = plan.base.scaling
    return s.max_workers * (s.torch_threads or s.cpus_per_worker)


def full_trial(plan: Plan) -> float | None:
    """A full trial's training minutes (what ASHA's savings are counted against); None when not in minutes."""
    s = plan.sweep.scheduler
    if s.kind == "asha" and s.time_attr == "train_minutes":
        return plan.max_t
    return plan.base.max_minutes


def _row(plan: Plan, result) -> TrialRow:
    """One trial's report row from its Ray Tune Result (its config, metrics history, error) and its run folder."""
    from pipeline.train.run import RUN_ID_FILE, run_folder
    from pipeline.tune.report import trial_row

    config = result.config or {}  # None only for a trial that never started
    params = {key: config[key] for key in plan.sweep.space if key in config}
    cfg = trial_config(to_dict(plan.base), params, trial_name(plan.sweep.name, result.metrics["trial_id"]))
    run_id = run_folder(cfg).read(RUN_ID_FILE)
    return trial_row(result, cfg, params, plan.meta, plan.sweep.metric, plan.sweep.mode,
                     run_id.strip() if run_id is not None else None)


def best_checkpoint(cfg: TrainConfig):
    """The trial's kept checkpoint (a ray.train.Checkpoint) with the best ``cfg.checkpoint_metric``, from its Ray
    Train run's saved state (Result.from_path): the earliest on ties, as for ``hrm train``; None when it kept none."""
    from ray.train import Result

    from pipeline.train.run import run_folder

    try:
        result = Result.from_path(run_folder(cfg).uri)
        return result.get_best_checkpoint(cfg.checkpoint_metric, "max") or result.checkpoint
    except RuntimeError as err:  # no run folder, no saved state, no checkpoint, no checkpoint with the metric
        log.debug("trial %s: no checkpoint (%s)", cfg.name, err)
        return None


def _register_best(plan: Plan, parent: str, best: TrialRow, outcome: SweepOutcome) -> None:
    """Log the best trial's model to its run and register it (the champion alias moves only when it is better)."""
    from mlflow.tracking import MlflowClient

    from pipeline.train.run import finish

    client = MlflowClient(plan.base.tracking.tracking_uri)
    tags = client.get_run(parent).data.tags
    if "best_model_uri" in tags:  # a resumed sweep that had registered already
        outcome.model_uri, outcome.champion = tags["best_model_uri"], tags.get("champion") == "true"
        return
    if not (plan.sweep.register_best and plan.base.tracking.register) or best.run_id is None:
        return
    cfg = trial_config(to_dict(plan.base), best.params, trial_name(plan.sweep.name, best.trial_id))
    checkpoint = best_checkpoint(cfg)
    if checkpoint is None:
        log.warning("best trial %s kept no checkpoint: nothing to register", best.trial_id)
        return
    with checkpoint.as_directory() as folder:  # sweeps are local: the folder itself
        done = finish(cfg, plan.base.tracking.tracking_uri, best.run_id, Path(folder), plan.meta)
    outcome.model_uri, outcome.champion = done.model_uri, done.champion
    client.set_tag(parent, "best_model_uri", done.model_uri or "")
    client.set_tag(parent, "champion", str(done.champion).lower())
