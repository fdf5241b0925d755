"""A sweep's search space: YAML entries like ``{grid: [2, 4, 8]}`` on dotted training-config keys, checked against
the training config and turned into Ray Tune domains.

Keys are dotted ``TrainConfig`` paths (``optim.lr``, ``global_batch_size``, ``model.halt_max_steps``); a model field
may also be named alone (``halt_max_steps``, ``H_cycles``, ``L_cycles``), which means ``model.<field>``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import typing
from typing import Any

from hrm.config import ModelConfig
from pipeline.core.config_io import flatten
from pipeline.train.config import TrainConfig, load_train_config

log = logging.getLogger(__name__)

DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")
FIXED = ("name", "data", "storage_path", "tracking", "scaling")  # set by the sweep, not searched
# Not searched: set from the dataset, or (forward_dtype) resolved for each trial's device (pipeline.core.precision)
# unless the base config fixes it.
DATA_SIZED = ("vocab_size", "seq_len", "num_puzzle_identifiers", "forward_dtype")
MAX_COMBINATIONS = 512  # combinations of discrete values checked together (contradictions between keys)

_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


def normalize_key(key: str) -> str:
    """``H_cycles`` → ``model.h_cycles``; ``model.L_cycles`` → ``model.l_cycles``; other keys unchanged."""
    parts = str(key).split(".")
    if len(parts) == 1 and parts[0] not in _fields(TrainConfig) and parts[0].lower() in _MODEL_FIELDS:
        return f"model.{parts[0].lower()}"
    if len(parts) == 2 and parts[0] == "model" and parts[1].lower() in _MODEL_FIELDS:
        return f"model.{parts[1].lower()}"
    return str(key)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def flatten_entries(node: dict[str, Any], where: str, *, is_leaf) -> dict[str, Any]:
    """A mapping that may nest (``model: {h_cycles: ...}``) or use dotted keys, as normalized dotted keys."""
    if not isinstance(node, dict):
        raise TypeError(f"{where}: expected a mapping, got {type(node).__name__} {node!r}")
    out: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict) and not is_leaf(value):
            for key, child in value.items():
                walk(child, f"{prefix}.{key}" if prefix else str(key))
            return
        key = normalize_key(prefix)
        if key in out:
            raise ValueError(f"{where}: {key!r} is given twice")
        out[key] = value

    for key, value in node.items():
        walk(value, str(key))
    return out


def is_distribution(value: Any) -> bool:
    """Whether ``value`` is one space entry such as ``{grid: [...]}`` or ``{loguniform: [lo, hi]}``."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS


def check_key(key: str, where: str = "space") -> None:
    """The key must name one TrainConfig field (or ModelConfig field under ``model.``) the sweep may vary."""
    parts = key.split(".")
    if parts[0] in FIXED:
        raise ValueError(f"{where}: {key!r} cannot be searched ({', '.join(FIXED)} are set by the sweep)")
    if parts[0] == "model":
        if len(parts) != 2 or parts[1] not in _MODEL_FIELDS:
            raise ValueError(f"{where}: {key!r} is not a model field; allowed: {sorted(_MODEL_FIELDS)}")
        if parts[1] == "forward_dtype":
            raise ValueError(f"{where}: {key!r} is resolved for each trial's device (auto), not searched; set it in "
                             "the base config to fix it")
        if parts[1] in DATA_SIZED:
            raise ValueError(f"{where}: {key!r} is set from the dataset, not searched")
        return
    cls: Any = TrainConfig
    for i, part in enumerate(parts):
        fields = _fields(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in fields:
            parent = ".".join(parts[:i]) or "the training config"
            raise ValueError(f"{where}: {key!r} is not a training config key ({part!r} is not a field of {parent}; "
                             f"allowed: {sorted(fields)})")
        cls = typing.get_type_hints(cls)[part]
    if dataclasses.is_dataclass(cls):
        raise ValueError(f"{where}: {key!r} is a section; name one of its fields")


def check_entry(key: str, entry: Any) -> None:
    """The entry's own shape: one known distribution with sensible arguments."""
    where = f"space.{key}"
    if not is_distribution(entry):
        raise ValueError(f"{where}: expected one of {{{', '.join(f'{d}: ...' for d in DISTRIBUTIONS)}}}, got "
                         f"{entry!r} (fixed values belong in overrides)")
    kind, args = next(iter(entry.items()))
    if kind in ("grid", "choice"):
        if not isinstance(args, list) or not args:
            raise ValueError(f"{where}: {kind} needs a non-empty list of values, got {args!r}")
        return
    if not isinstance(args, list) or len(args) != 2 or not all(_number(a) for a in args):
        raise ValueError(f"{where}: {kind} needs [low, high] numbers, got {args!r}")
    low, high = args
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise ValueError(f"{where}: randint needs integer bounds, got {args!r}")
    if low > high or (kind != "randint" and low == high):
        raise ValueError(f"{where}: low {low} must be below high {high}")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"{where}: loguniform needs a positive low bound, got {low}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def candidates(entry: dict[str, Any]) -> list[Any]:
    """Values that stand for the entry when checking configs: every listed value, or both ends of a range
    (as floats for continuous ranges, so an integer field is caught)."""
    kind, args = next(iter(entry.items()))
    if kind in ("grid", "choice"):
        return list(args)
    if kind == "randint":
        return [args[0], args[1]]
    return [float(args[0]), float(args[1])]


def check_space(space: dict[str, Any], *, searcher: str, base: TrainConfig, fixed: dict[str, Any]) -> None:
    """Every problem a trial would only meet after the cluster started: unknown keys, bad entries, keys also
    fixed in the overrides, searcher/entry mismatches, and values (or combinations) the training config rejects."""
    if not space:
        raise ValueError("space is empty: name at least one key to search, e.g. "
                         "space: {model.halt_max_steps: {grid: [2, 4, 8]}}")
    for key, entry in space.items():
        check_key(key)
        check_entry(key, entry)
        if key in fixed:
            raise ValueError(f"space.{key} is also fixed in overrides ({key}: {fixed[key]!r}); keep one of them")
    kinds = {key: next(iter(entry)) for key, entry in space.items()}
    if searcher == "grid" and any(k != "grid" for k in kinds.values()):
        odd = sorted(key for key, k in kinds.items() if k != "grid")
        raise ValueError(f"searcher grid needs grid entries only; {odd} are distributions (use searcher: random "
                         f"or optuna)")
    if searcher == "optuna" and any(k == "grid" for k in kinds.values()):
        odd = sorted(key for key, k in kinds.items() if k == "grid")
        raise ValueError(f"searcher optuna samples its own points; use choice instead of grid for {odd}")
    base_flat = flatten(base)
    for key, entry in space.items():  # each value alone: the clearest message
        for value in candidates(entry):
            _try(base_flat, {key: value}, f"space.{key} value {value!r}")
    lists = {key: candidates(entry) for key, entry in space.items()}
    if math.prod(len(v) for v in lists.values()) <= MAX_COMBINATIONS:
        for combo in itertools.product(*lists.values()):
            params = dict(zip(lists, combo))
            _try(base_flat, params, f"space combination {params}")


def _try(base_flat: dict[str, Any], params: dict[str, Any], what: str) -> None:
    try:
        load_train_config(None, {**base_flat, **params})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what}: {err}") from err


def trial_config(base: dict[str, Any], params: dict[str, Any], name: str) -> TrainConfig:
    """A trial's training config: the sweep's base config (a dict) with the trial's dotted values."""
    plain = {key: value.item() if hasattr(value, "item") else value for key, value in params.items()}  # numpy
    return load_train_config(None, {**flatten(base), **plain, "name": name})


def to_tune(space: dict[str, Any]) -> dict[str, Any]:
    """Ray Tune domains for the entries (``randint`` includes its high bound)."""
    from ray import tune

    out = {}
    for key, entry in space.items():
        kind, args = next(iter(entry.items()))
        out[key] = {"grid": tune.grid_search, "choice": tune.choice}[kind](list(args)) if kind in ("grid", "choice") \
            else tune.randint(args[0], args[1] + 1) if kind == "randint" \
            else {"uniform": tune.uniform, "loguniform": tune.loguniform}[kind](*args)
    return out


def grid_size(space: dict[str, Any]) -> int:
    """Points of the space's grid entries (1 when it has none): the trials of one sample."""
    return math.prod(len(e["grid"]) for e in space.values() if "grid" in e)
