"""The sweep's driver and its trial function: every trial is a full Ray Train run of the training job, reporting
each evaluation to Ray Tune (so ASHA can stop it early), with its own MLflow run nested under the sweep's run.
The sweep's folder is described in ``pipeline.tune.plan``; its end (report, best model) in ``pipeline.tune.finish``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.core import storage
from pipeline.core.config_io import from_dict, to_dict
from pipeline.core.ray_start import init_ray
from pipeline.train.batches import require_one_global_batch
from pipeline.train.config import (
    TrainConfig,
    load_train_config,
    resolve_data,
    resolve_tracking_uri,
    run_model_config,
)
from pipeline.tune.config import (
    SweepConfig,
    check_budget,
    check_metric,
    planned_reports,
    train_config_path,
)
from pipeline.tune.finish import finish_sweep, partial_report
from pipeline.tune.plan import (
    BASE_FILE,
    PARENT_FILE,
    SWEEP_FILE,
    Plan,
    SweepOutcome,
    planned_trials,
    sweep_folder,
    trial_name,
)
from pipeline.tune.rungs import restore_rungs
from pipeline.tune.space import check_space, to_tune, trial_config

log = logging.getLogger(__name__)
TRIAL_RESOURCES = {"CPU": 0, "memory": 10 * 2**20}  # the trial function only drives its Train run
LENGTH_KEYS = ("max_steps", "epochs", "eval_interval", "global_batch_size")
RESUME_MAY_CHANGE = ("time_budget_s",)  # a sweep run in parts may be given more time; nothing else may change


def prepare_sweep(sweep: SweepConfig, *, resume: bool = False, sweep_file: Path | None = None) -> Plan:
    """Every check that needs no cluster: the base config, the dataset, the space, the metric, the scheduler.
    A resume takes the sweep's saved configs (``sweep`` only names it); returns the Plan ``run_sweep`` follows."""
    from pipeline.data.loader import read_metadata

    folder = sweep_folder(sweep)
    if resume:
        sweep, base = _saved_configs(sweep, folder)
    else:
        base = _new_base(sweep, folder, sweep_file)
    meta = read_metadata(base.data)
    require_one_global_batch(meta.counts["train"], base.global_batch_size, base.data)
    run_model_config(base, meta)  # a model the dataset's sizes make invalid fails here
    check_metric(sweep, base, meta)
    max_t = _max_t(sweep, base, meta)
    if not resume:
        check_budget(sweep, base, planned_trials(sweep))
    return Plan(sweep=sweep, base=base, folder=folder, meta=meta, max_t=max_t)


def sweep_data(sweep: SweepConfig, sweep_file: Path | None) -> Path:
    """The sweep's ``data_config`` built (Ray Data), or found built by its fingerprint: its dataset's folder."""
    from pipeline.data.build import build_dataset
    from pipeline.data.config import load_config

    path = Path(sweep.data_config)
    if not path.is_absolute() and not path.is_file() and sweep_file is not None \
            and (Path(sweep_file).parent / path).is_file():
        path = Path(sweep_file).parent / path
    built = build_dataset(load_config(path))
    log.info("sweep %s trains on %s (fingerprint %s)", sweep.name, built.path, built.fingerprint)
    return Path(built.path)


def _saved_configs(sweep: SweepConfig, folder: Path) -> tuple[SweepConfig, TrainConfig]:
    """The (sweep config, base training config) a stopped sweep saved in ``folder``."""
    if not (folder / SWEEP_FILE).is_file() or not (folder / PARENT_FILE).is_file():
        raise FileNotFoundError(f"nothing to resume: no sweep {sweep.name!r} under {folder.parent}")
    saved = from_dict(SweepConfig, json.loads((folder / SWEEP_FILE).read_text()), where=str(folder / SWEEP_FILE))
    changed = changed_keys(to_dict(saved), to_dict(sweep))
    refused = {k: v for k, v in changed.items() if k not in RESUME_MAY_CHANGE}
    if refused:
        raise ValueError(f"not resuming sweep {sweep.name!r}: it was started with other settings ("
                         + "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in sorted(refused.items()))
                         + f"); a resume continues the trials Tune planned then. Undo the change, or start a new "
                           f"sweep under another name (only {', '.join(RESUME_MAY_CHANGE)} may change)")
    for key in changed:  # what a resume may change: taken, and saved for the next one
        setattr(saved, key, getattr(sweep, key))
    if changed:
        storage.write_text(folder / SWEEP_FILE, json.dumps(to_dict(saved), indent=2))
    base = from_dict(TrainConfig, json.loads((folder / BASE_FILE).read_text()), where=str(folder / BASE_FILE))
    return saved, base


def changed_keys(saved: dict[str, Any], new: dict[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two config dicts, with (saved, new) values; a changed searched or
    fixed entry is named whole (``space.model.h_cycles``)."""
    out: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(saved) | set(new)):
        a, b, name = saved.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict) and key not in ("space", "overrides"):
            out.update(changed_keys(a, b, f"{name}."))
        elif isinstance(a, dict) and isinstance(b, dict):
            for entry in sorted(set(a) | set(b)):
                if a.get(entry) != b.get(entry):
                    out[f"{name}.{entry}"] = (json.dumps(a.get(entry)), json.dumps(b.get(entry)))
        elif a != b:
            out[name] = (a, b)
    return out


def _new_base(sweep: SweepConfig, folder: Path, sweep_file: Path | None) -> TrainConfig:
    """A new sweep's base training config, its space checked against it; data, storage_path (the trials' folder)
    and tracking_uri made absolute, named after the sweep."""
    if folder.exists():
        raise FileExistsError(f"sweep {sweep.name!r} already exists under {folder.parent}: use --resume to "
                              f"continue it, or choose another name")
    base = load_train_config(train_config_path(sweep, sweep_file), sweep.overrides)
    check_space(sweep.space, searcher=sweep.searcher, base=base, fixed=sweep.overrides)  # before the data
    if sweep.data_config is not None:
        base.data = str(sweep_data(sweep, sweep_file))
    base.data = str(resolve_data(base))
    base.storage_path = str(folder / "trials")
    base.tracking.tracking_uri = resolve_tracking_uri(base)
    base.name = sweep.name
    return base


def _max_t(sweep: SweepConfig, base: TrainConfig, meta) -> float:
    """ASHA's max_t: training minutes of a full trial (time_attr train_minutes: the scheduler's, else max_minutes),
    or its evaluations (the scheduler's, else what the base config plans)."""
    s = sweep.scheduler
    if s.kind == "asha" and s.time_attr == "train_minutes":  # rungs in minutes of training
        max_t = s.max_t if s.max_t is not None else base.max_minutes
        if max_t is None:
            raise ValueError("scheduler.time_attr train_minutes needs the trials' training budget: set "
                             "overrides.max_minutes (or scheduler.max_t, in training minutes)")
        if "max_minutes" in sweep.space and s.max_t is None:
            raise ValueError("the space varies max_minutes, so trials differ in length: set scheduler.max_t")
        if s.grace_period > max_t:
            raise ValueError(f"scheduler.grace_period {s.grace_period:g} training minutes exceeds a trial's "
                             f"{max_t:g}")
        return max_t
    max_t = sweep.scheduler.max_t
    if max_t is None:
        varied = sorted(set(sweep.space) & set(LENGTH_KEYS))
        if varied and sweep.scheduler.kind == "asha":
            raise ValueError(f"the space varies {varied}, so trials differ in length: set scheduler.max_t")
        max_t = planned_reports(base, meta)
    if sweep.scheduler.kind == "asha" and sweep.scheduler.grace_period > max_t:
        raise ValueError(f"scheduler.grace_period {sweep.scheduler.grace_period} exceeds the {max_t} evaluations "
                         f"of a trial")
    return max_t


def check_cluster(plan: Plan) -> int:
    """Fail when one trial can never be placed; return how many trials can run at once."""
    import ray

    from pipeline.train.run import check_resources

    check_resources(plan.base)
    total = ray.cluster_resources()
    s = plan.base.scaling
    fits = int((total.get("CPU", 0) - 0.5) // (s.max_workers * s.cpus_per_worker))
    if s.use_gpu:
        fits = min(fits, int(total.get("GPU", 0) // (s.max_workers * s.gpus_per_worker)))
    concurrent = max(1, min(plan.sweep.max_concurrent, fits))
    if concurrent < plan.sweep.max_concurrent:
        log.warning("max_concurrent %d lowered to %d: the cluster fits %d trials of %d worker(s) at once",
                    plan.sweep.max_concurrent, concurrent, fits, s.max_workers)
    return concurrent


def run_trial(params: dict[str, Any], setup: dict[str, Any]) -> None:
    """One trial: the training job with the trial's values, its evaluations reported to Tune."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipeline.train.run import (
        RUN_ID_FILE,
        end_quietly,
        make_trainer,
        open_run,
        prepare,
        run_folder,
    )

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
    except BaseException as err:
        end_quietly(uri, run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise


def run_sweep(sweep: SweepConfig, *, resume: bool = False, sweep_file: Path | None = None,
              callbacks: list | None = None, plan: Plan | None = None, trust_state: bool = False,
              stop_after_s: float | None = None) -> SweepOutcome:
    """Run (or resume) the sweep; ``callbacks`` are extra Ray Tune callbacks; ``plan``: what ``prepare_sweep``
    already made of it (else made here). A resume first checks Tune's saved state against the seal the sweep's last
    stop left (``pipeline.tune.seal``; ``trust_state``: a warning instead of a refusal); every stop seals it again.
    ``stop_after_s``: this part's wall-clock limit (``time_budget_s`` limits the whole sweep: pipeline.tune.budget).
    Returns the outcome, ``interrupted`` when trials are left to run."""
    from ray import tune

    from pipeline.train.run import end_quietly, ephemeral_outputs
    from pipeline.tune import seal
    from pipeline.tune.budget import SweepClock
    from pipeline.tune.curves import ParentCurves
    from pipeline.tune.trial_lines import TrialLines

    plan = plan or prepare_sweep(sweep, resume=resume, sweep_file=sweep_file)
    sweep, folder = plan.sweep, plan.folder
    init_ray(dashboard=True)
    concurrent = check_cluster(plan)
    for warning in ephemeral_outputs(Path.cwd(), sweep.storage_path, plan.base.tracking.tracking_uri):
        log.warning(warning)
    uri = plan.base.tracking.tracking_uri
    if resume:
        parent = (folder / PARENT_FILE).read_text().strip()
        seal.check(folder, uri, parent, trust=trust_state)  # before Tune unpickles anything of it
    else:
        parent = _start_parent_run(plan, sweep_file)
    setup = {"sweep": sweep.name, "base": to_dict(plan.base), "parent_run_id": parent}
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), TRIAL_RESOURCES)
    clock = SweepClock(folder, sweep.time_budget_s, stop_after_s)
    try:  # every way out ends the sweep's MLflow run: FINISHED, KILLED (stopped: --resume continues it) or FAILED
        try:
            lines = TrialLines(sweep.metric, planned_trials(sweep))
            curves = ParentCurves(uri, parent, list(sweep.space))
            tuner = _tuner(plan, trainable, resume=resume, concurrent=concurrent,
                           callbacks=[lines, curves, *(callbacks or [])])
            clock.start()
            results = tuner.fit()
        finally:
            clock.stop()
            seal.seal_quietly(folder, uri, parent)  # what --resume will accept
        if clock.reason == "budget":  # the whole sweep's time is spent: what it has is its result
            return finish_sweep(plan, parent, list(results), budget_spent=True)
        unfinished = _unfinished(plan, trainable)
        if unfinished > 0:
            log.warning("sweep %s stopped with %d trial(s) unfinished; continue it with --resume", sweep.name,
                        unfinished)
            report = partial_report(plan, parent, list(results))
            end_quietly(uri, parent, "KILLED")
            return SweepOutcome(parent_run_id=parent, interrupted=True, report=report)
        return finish_sweep(plan, parent, list(results))
    except BaseException as err:
        end_quietly(uri, parent, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise


def _start_parent_run(plan: Plan, sweep_file: Path | None) -> str:
    """Make the sweep's folder, save its configs there (what a resume reads) and open its MLflow run; its id."""
    from pipeline.tracking import runs

    sweep, base, folder = plan.sweep, plan.base, plan.folder
    folder.mkdir(parents=True)
    (folder / SWEEP_FILE).write_text(json.dumps(to_dict(sweep), indent=2))
    (folder / BASE_FILE).write_text(json.dumps(to_dict(base), indent=2))
    params = {"searcher": sweep.searcher, "metric": sweep.metric, "mode": sweep.mode,
              "num_samples": sweep.num_samples, "scheduler": sweep.scheduler.kind, "max_t": plan.max_t,
              **{f"space.{k}": json.dumps(v) for k, v in sweep.space.items()},
              **{f"overrides.{k}": v for k, v in sweep.overrides.items()}}
    artifacts = [folder / SWEEP_FILE, folder / BASE_FILE] + ([sweep_file] if sweep_file else [])
    parent = runs.start_run(base.tracking.tracking_uri, base.tracking.experiment, sweep.name, params,
                                {"sweep": sweep.name, "kind": "sweep"}, artifacts)
    (folder / PARENT_FILE).write_text(parent)
    return parent


def _tuner(plan: Plan, trainable, *, resume: bool, concurrent: int, callbacks: list | None):
    """The sweep's Tuner: restored from ``<folder>/tune`` on a resume (when Tune saved any state), else new."""
    from ray import tune

    tune_path = plan.folder / "tune"
    if resume and tune.Tuner.can_restore(str(tune_path)):
        log.info("resuming sweep %s from %s", plan.sweep.name, tune_path)
        tuner = tune.Tuner.restore(str(tune_path), trainable, resume_unfinished=True, resume_errored=True)
        s = plan.sweep.scheduler
        if s.kind == "asha":  # Tune restores ASHA blank: its rungs from the trials' reports (pipeline.tune.rungs)
            restore_rungs(tuner, tune_path, _asha_clock(s), s.metric or plan.sweep.metric)
        return tuner
    run_config = tune.RunConfig(name="tune", storage_path=str(plan.folder), callbacks=callbacks,
                                failure_config=tune.FailureConfig(max_failures=plan.sweep.max_failures))
    return tune.Tuner(trainable, param_space=to_tune(plan.sweep.space), tune_config=_tune_config(plan, concurrent),
                      run_config=run_config)


def _unfinished(plan: Plan, trainable) -> int:
    """Trials of the sweep not finished (neither terminated nor errored), per the state Tune saved for a resume.

    An interrupted fit (Ctrl-C) returns too, its running trials marked stopped in memory; the saved state tells
    what is unfinished, and the searcher may not have created every trial yet."""
    from ray import tune

    saved = tune.Tuner.restore(str(plan.folder / "tune"), trainable).get_results()
    return planned_trials(plan.sweep) - saved.num_terminated - saved.num_errors


def _asha_clock(s) -> str:
    """The result key ASHA's rungs are counted in: training minutes, or Tune's reports (its training_iteration)."""
    return "train_minutes" if s.time_attr == "train_minutes" else "training_iteration"


def _tune_config(plan: Plan, concurrent: int):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sweep, s = plan.sweep, plan.sweep.scheduler
    # Each part of Tune gets its metric itself: ASHA may compare another (scheduler.metric) than the sweep's
    scheduler = FIFOScheduler() if s.kind == "fifo" else ASHAScheduler(
        time_attr=_asha_clock(s),
        metric=s.metric or sweep.metric, mode=sweep.mode, max_t=plan.max_t, grace_period=s.grace_period,
        reduction_factor=s.reduction_factor, brackets=s.brackets)
    if sweep.searcher == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=sweep.seed), metric=sweep.metric,
                                  mode=sweep.mode)
        limit = concurrent
    else:  # grid and random; it ignores TuneConfig's max_concurrent_trials, so it limits itself
        from ray.tune.search.basic_variant import BasicVariantGenerator

        search_alg, limit = BasicVariantGenerator(random_state=sweep.seed, max_concurrent=concurrent), None
    return tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=sweep.num_samples,
                           max_concurrent_trials=limit)


