"""The sweep's driver and its trial function: every trial is a full Ray Train run of the training job, reporting
each evaluation to Ray Tune (so ASHA can stop it early), with its own MLflow run nested under the sweep's run.

Folder of a sweep (``<storage_path>/<name>/``): ``sweep_config.json`` and ``base_train_config.json`` (what a resume
uses), ``mlflow_parent_run_id.txt``, ``tune/`` (Ray Tune's experiment), ``trials/<name>-<trial id>/`` (each trial's
Train run and MLflow run id: a retried or resumed trial continues its own run), ``report/``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrm.config import from_dict, model_config, to_dict
from pipeline.ray_utils import init_ray
from pipeline.train.config import TrainConfig, load_train_config, resolve_data, resolve_tracking_uri
from pipeline.tune.config import SweepConfig, check_metric, planned_reports, train_config_path
from pipeline.tune.report import TrialRow
from pipeline.tune.space import check_space, grid_size, to_tune, trial_config

log = logging.getLogger(__name__)
SWEEP_FILE, BASE_FILE, PARENT_FILE = "sweep_config.json", "base_train_config.json", "mlflow_parent_run_id.txt"
TRIAL_RESOURCES = {"CPU": 0, "memory": 10 * 2**20}  # the trial function only drives its Train run
LENGTH_KEYS = ("max_steps", "epochs", "eval_interval", "global_batch_size")


@dataclass
class Plan:
    sweep: SweepConfig
    base: TrainConfig  # data, storage_path (the trials' folder) and tracking_uri made absolute
    folder: Path
    meta: Any
    max_t: int


@dataclass
class SweepOutcome:
    parent_run_id: str
    interrupted: bool
    rows: list[TrialRow] = field(default_factory=list)
    best: TrialRow | None = None
    report: list[Path] = field(default_factory=list)
    model_uri: str | None = None
    champion: bool = False


def sweep_folder(sweep: SweepConfig) -> Path:
    return Path(sweep.storage_path).resolve() / sweep.name


def prepare_sweep(sweep: SweepConfig, *, resume: bool = False, sweep_file: Path | None = None) -> Plan:
    """Every check that needs no cluster: the base config, the dataset, the space, the metric, the scheduler."""
    from pipeline.data.loader import read_metadata

    folder = sweep_folder(sweep)
    if resume:
        if not (folder / SWEEP_FILE).is_file() or not (folder / PARENT_FILE).is_file():
            raise FileNotFoundError(f"nothing to resume: no sweep {sweep.name!r} under {folder.parent}")
        saved = from_dict(SweepConfig, json.loads((folder / SWEEP_FILE).read_text()), where=str(folder / SWEEP_FILE))
        if to_dict(saved) != to_dict(sweep):
            log.warning("resuming %s with its saved config; changes in the sweep file or --set are ignored",
                        sweep.name)
        sweep = saved
        base = from_dict(TrainConfig, json.loads((folder / BASE_FILE).read_text()), where=str(folder / BASE_FILE))
    else:
        if folder.exists():
            raise FileExistsError(f"sweep {sweep.name!r} already exists under {folder.parent}: use --resume to "
                                  f"continue it, or choose another name")
        base = load_train_config(train_config_path(sweep, sweep_file), sweep.overrides)
        check_space(sweep.space, searcher=sweep.searcher, base=base, fixed=sweep.overrides)  # before the data
        base.data = str(resolve_data(base))
        base.storage_path = str(folder / "trials")
        base.tracking.tracking_uri = resolve_tracking_uri(base)
        base.name = sweep.name
    meta = read_metadata(base.data)
    if meta.counts["train"] < base.global_batch_size:
        raise ValueError(f"{base.data}: {meta.counts['train']} training examples, fewer than one global batch "
                         f"({base.global_batch_size})")
    model_config(base.flavour, vocab_size=meta.vocab_size, seq_len=meta.seq_len,
                 num_puzzle_identifiers=meta.num_puzzle_identifiers, **base.model)
    check_metric(sweep, base, meta)
    max_t = sweep.scheduler.max_t
    if max_t is None:
        varied = sorted(set(sweep.space) & set(LENGTH_KEYS))
        if varied and sweep.scheduler.kind == "asha":
            raise ValueError(f"the space varies {varied}, so trials differ in length: set scheduler.max_t")
        max_t = planned_reports(base, meta)
    if sweep.scheduler.kind == "asha" and sweep.scheduler.grace_period > max_t:
        raise ValueError(f"scheduler.grace_period {sweep.scheduler.grace_period} exceeds the {max_t} evaluations "
                         f"of a trial")
    return Plan(sweep=sweep, base=base, folder=folder, meta=meta, max_t=max_t)


def check_cluster(plan: Plan) -> int:
    """Fail when one trial can never be placed; return how many trials can run at once."""
    import ray

    from pipeline.train.run import check_resources

    check_resources(plan.base)
    total = ray.cluster_resources()
    s = plan.base.scaling
    fits = int((total.get("CPU", 0) - 0.5) // (s.num_workers * s.cpus_per_worker))
    if s.use_gpu:
        fits = min(fits, int(total.get("GPU", 0) // (s.num_workers * s.gpus_per_worker)))
    concurrent = max(1, min(plan.sweep.max_concurrent, fits))
    if concurrent < plan.sweep.max_concurrent:
        log.warning("max_concurrent %d lowered to %d: the cluster fits %d trials of %d worker(s) at once",
                    plan.sweep.max_concurrent, concurrent, fits, s.num_workers)
    return concurrent


def trial_name(sweep: str, trial_id: str) -> str:
    return f"{sweep}-{trial_id}"


def run_trial(params: dict[str, Any], setup: dict[str, Any]) -> None:
    """One trial: the training job with the trial's values, its evaluations reported to Tune."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipeline import tracking
    from pipeline.train.run import RUN_ID_FILE, make_trainer, prepare, open_run, run_folder

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = trial_config(setup["base"], params, trial_name(setup["sweep"], trial_id))
    resume = run_folder(cfg).read(RUN_ID_FILE) is not None  # a retried or resumed trial continues its own run
    data_path, meta, _ = prepare(cfg, resume)
    uri = cfg.tracking.tracking_uri
    tags = {"mlflow.parentRunId": setup["parent_run_id"], "sweep": setup["sweep"], "trial_id": trial_id}
    run_id = open_run(cfg, resume=resume, uri=uri, data_path=data_path, meta=meta, tags=tags)
    log.info("trial %s (%s): MLflow run %s", trial_id, params, run_id)
    trainer = make_trainer(cfg, data_path, uri, run_id, callbacks=[TuneReportCallback()])
    try:
        trainer.fit()
    except Exception:
        tracking.end_run(uri, run_id, status="FAILED")
        raise


def run_sweep(sweep: SweepConfig, *, resume: bool = False, sweep_file: Path | None = None,
              callbacks: list | None = None, plan: Plan | None = None) -> SweepOutcome:
    """Run (or resume) the sweep; ``callbacks`` are extra Ray Tune callbacks; ``plan``: what ``prepare_sweep``
    already made of it (else made here)."""
    from ray import tune

    from pipeline import tracking
    from pipeline.train.run import ephemeral_outputs

    plan = plan or prepare_sweep(sweep, resume=resume, sweep_file=sweep_file)
    sweep, base, folder = plan.sweep, plan.base, plan.folder
    init_ray(dashboard=True)
    concurrent = check_cluster(plan)
    uri = base.tracking.tracking_uri
    for warning in ephemeral_outputs(Path.cwd(), sweep.storage_path, uri):
        log.warning(warning)
    if resume:
        parent = (folder / PARENT_FILE).read_text().strip()
    else:
        folder.mkdir(parents=True)
        (folder / SWEEP_FILE).write_text(json.dumps(to_dict(sweep), indent=2))
        (folder / BASE_FILE).write_text(json.dumps(to_dict(base), indent=2))
        params = {"searcher": sweep.searcher, "metric": sweep.metric, "mode": sweep.mode,
                  "num_samples": sweep.num_samples, "scheduler": sweep.scheduler.kind, "max_t": plan.max_t,
                  **{f"space.{k}": json.dumps(v) for k, v in sweep.space.items()},
                  **{f"overrides.{k}": v for k, v in sweep.overrides.items()}}
        artifacts = [folder / SWEEP_FILE, folder / BASE_FILE] + ([sweep_file] if sweep_file else [])
        parent = tracking.start_run(uri, base.tracking.experiment, sweep.name, params,
                                    {"sweep": sweep.name, "kind": "sweep"}, artifacts)
        (folder / PARENT_FILE).write_text(parent)
    setup = {"sweep": sweep.name, "base": to_dict(base), "parent_run_id": parent}
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), TRIAL_RESOURCES)
    tune_path = folder / "tune"
    if resume and tune.Tuner.can_restore(str(tune_path)):
        log.info("resuming sweep %s from %s", sweep.name, tune_path)
        tuner = tune.Tuner.restore(str(tune_path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        run_config = tune.RunConfig(name="tune", storage_path=str(folder), callbacks=callbacks,
                                    failure_config=tune.FailureConfig(max_failures=sweep.max_failures))
        tuner = tune.Tuner(trainable, param_space=to_tune(sweep.space), tune_config=_tune_config(plan, concurrent),
                           run_config=run_config)
    results = tuner.fit()
    # An interrupted fit (Ctrl-C) returns too, its running trials marked stopped in memory; the state it saved
    # for a resume tells what is unfinished, and the searcher may not have created every trial yet.
    saved = tune.ExperimentAnalysis(str(tune_path)).trials
    unfinished = sum(t.status not in ("TERMINATED", "ERROR") for t in saved) + grid_size(sweep.space) * \
        sweep.num_samples - len(saved)
    if unfinished > 0:
        log.warning("sweep %s stopped with %d trial(s) unfinished; continue it with --resume", sweep.name, unfinished)
        return SweepOutcome(parent_run_id=parent, interrupted=True)
    trials = results._experiment_analysis.trials  # in the order of results
    return finish_sweep(plan, parent, list(zip(trials, results)))


def _tune_config(plan: Plan, concurrent: int):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sweep, s = plan.sweep, plan.sweep.scheduler
    scheduler = FIFOScheduler() if s.kind == "fifo" else ASHAScheduler(
        time_attr="training_iteration", max_t=plan.max_t, grace_period=s.grace_period,
        reduction_factor=s.reduction_factor, brackets=s.brackets)
    if sweep.searcher == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        search_alg, limit = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=sweep.seed)), concurrent
    else:  # grid and random; it ignores TuneConfig's max_concurrent_trials, so it limits itself
        from ray.tune.search.basic_variant import BasicVariantGenerator

        search_alg, limit = BasicVariantGenerator(random_state=sweep.seed, max_concurrent=concurrent), None
    return tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, search_alg=search_alg, scheduler=scheduler,
                           num_samples=sweep.num_samples, max_concurrent_trials=limit)


def finish_sweep(plan: Plan, parent: str, trials: list) -> SweepOutcome:
    """Summarize the trials, close their MLflow runs, log the report to the sweep's run, register the best model."""
    from mlflow.tracking import MlflowClient

    from pipeline import tracking
    from pipeline.tune.report import log_report, sort_rows, write_report

    sweep, uri = plan.sweep, plan.base.tracking.tracking_uri
    client = MlflowClient(uri)
    rows = [_row(plan, trial, result) for trial, result in trials]
    for row in rows:
        if row.run_id:
            client.set_tag(row.run_id, "tune.status", row.status)
            client.set_terminated(row.run_id, status="FAILED" if row.status == "error" else "FINISHED")
    paths = write_report(rows, plan.folder / "report", sweep.metric, sweep.mode)
    log_report(uri, parent, paths)
    ranked = [r for r in sort_rows(rows, sweep.metric, sweep.mode) if sweep.metric in r.best]
    best = ranked[0] if ranked else None
    outcome = SweepOutcome(parent_run_id=parent, interrupted=False, rows=rows, best=best, report=paths)
    counts = {status: sum(r.status == status for r in rows) for status in ("completed", "early_stopped", "error")}
    for status, count in counts.items():
        client.log_metric(parent, f"trials_{status}", count)
    if best is not None:
        client.log_metric(parent, f"best_{sweep.metric.replace('/', '_')}", best.best[sweep.metric])
        client.set_tag(parent, "best_trial_id", best.trial_id)
        client.set_tag(parent, "best_run_id", best.run_id or "")
        _register_best(plan, parent, best, outcome)
    tracking.end_run(uri, parent)
    log.info("sweep %s: %s; best trial %s", sweep.name, counts, best.trial_id if best else "-")
    return outcome


def _row(plan: Plan, trial, result) -> TrialRow:
    from pipeline.train.run import RUN_ID_FILE, run_folder
    from pipeline.tune.report import trial_row

    params = {key: trial.config[key] for key in plan.sweep.space}
    cfg = trial_config(to_dict(plan.base), params, trial_name(plan.sweep.name, trial.trial_id))
    run_id = run_folder(cfg).read(RUN_ID_FILE)
    return trial_row(trial, result, cfg, params, plan.meta, plan.sweep.metric, plan.sweep.mode,
                     run_id.strip() if run_id is not None else None)


def best_checkpoint(folder: Path, metric: str) -> Path | None:
    """The trial's kept checkpoint with the best ``metric`` (the latest on ties), read from each model.json."""
    found = []
    for info in folder.glob("**/model.json"):
        metrics = json.loads(info.read_text()).get("metrics", {})
        found.append((metrics.get(metric, -math.inf), metrics.get("step", 0), info.parent))
    return max(found, key=lambda f: (f[0], f[1]))[2] if found else None


def _register_best(plan: Plan, parent: str, best: TrialRow, outcome: SweepOutcome) -> None:
    """Log the best trial's model to its run and register it (the champion alias moves only when it is better)."""
    from mlflow.tracking import MlflowClient

    from pipeline.train.run import finish, run_folder

    client = MlflowClient(plan.base.tracking.tracking_uri)
    tags = client.get_run(parent).data.tags
    if "best_model_uri" in tags:  # a resumed sweep that had registered already
        outcome.model_uri, outcome.champion = tags["best_model_uri"], tags.get("champion") == "true"
        return
    if not (plan.sweep.register_best and plan.base.tracking.register) or best.run_id is None:
        return
    cfg = trial_config(to_dict(plan.base), best.params, trial_name(plan.sweep.name, best.trial_id))
    folder = best_checkpoint(Path(run_folder(cfg).uri), cfg.checkpoint_metric)  # sweeps are local
    if folder is None:
        log.warning("best trial %s kept no checkpoint: nothing to register", best.trial_id)
        return
    done = finish(cfg, plan.base.tracking.tracking_uri, best.run_id, folder, plan.meta)
    outcome.model_uri, outcome.champion = done.model_uri, done.champion
    client.set_tag(parent, "best_model_uri", done.model_uri or "")
    client.set_tag(parent, "champion", str(done.champion).lower())
