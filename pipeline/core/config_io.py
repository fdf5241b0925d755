"""Pipeline configs from plain mappings (YAML files, ``--set`` values, JSON, MLflow params), checked by pydantic.

The typed ``@dataclass(kw_only=True)`` classes (``TrainConfig``, ``DataConfig``, ``SweepConfig``, hrm's
``ModelConfig``, ...) stay the single source of defaults; :func:`from_dict` validates a mapping against one of them
with pydantic in strict mode, as for a JSON document:

- types are strict: ``"64"`` is not an integer, ``1`` is not a boolean, ``2.5`` is not an integer; an integer is a
  fine float, a list a fine tuple, ``null`` a fine value of an optional key;
- unknown keys are refused, naming them and the keys allowed;
- every error names the file (``where``) and the dotted key: ``run.yaml: optim.lr: expected a number, got str 'abc'``;
- the classes' ``__post_init__`` checks run as in plain Python.

The mapping is handed to pydantic as JSON text: its strict mode for Python objects wants dataclass instances and
tuples, which a YAML file cannot hold; its strict JSON mode takes objects and arrays. So a config holds what JSON does:
strings, numbers, booleans, null, lists and mappings with string keys (a YAML date such as 2026-12-01 is refused,
naming its key: quote it to keep a string).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, TypeAdapter, ValidationError

CONFIGS = Path(__file__).parent.parent / "configs"  # the YAML files shipped with the package, naming runs
QUOTE_LIMIT = 200  # characters of a value quoted in an error message

# Strict, as for JSON: a stdlib dataclass takes no TypeAdapter config of its own, so the config is given to a mapping
# around it and applies to it and to every dataclass it nests.
_STRICT = ConfigDict(strict=True, extra="forbid")
_EXPECTED = {"int": "an integer", "float": "a number", "string": "str", "bool": "bool", "dataclass": "a mapping",
             "dict": "a mapping", "list": "a list", "tuple": "a list"}  # pydantic's "<kind>_type" errors
_UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden")


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error message stays short whatever a file holds."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def from_dict(cls: type, data: Any, *, where: str = "config") -> Any:
    """Dataclass ``cls`` built from mapping ``data`` (an instance of ``cls`` is returned as it is).

    ``where`` names the source (a file, ``--set``) in errors: a ``TypeError`` when every problem is a value of the
    wrong type, else a ``ValueError``; each problem names its dotted key."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    text = json.dumps({"": _plain(data, where, ())}, allow_nan=True)
    try:
        return _adapter(cls).validate_json(text)[""]
    except ValidationError as err:
        raise _config_error(cls, err, where) from None


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(dict[str, cls], config=_STRICT)


def _plain(value: Any, where: str, path: tuple) -> Any:
    """``value`` as JSON data (nested dataclass instances as mappings); a date, a set or a key that is not a string
    raises, naming its key (a config holds strings, numbers, booleans, null, lists and mappings only)."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item, where, (*path, i)) for i, item in enumerate(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"{_at(where, path)}expected str keys, got {type(key).__name__} {quote(key)}")
        return {key: _plain(item, where, (*path, key)) for key, item in value.items()}
    raise TypeError(f"{_at(where, path)}expected a string, number, boolean, list or mapping, got "
                    f"{type(value).__name__} {quote(value)} (quote a date to keep it as a string)")


def _at(where: str, path: tuple) -> str:
    """``where: dotted.key[0]: `` (``where: `` for the top level)."""
    dotted = "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in path).lstrip(".")
    return f"{where}: {dotted}: " if dotted else f"{where}: "


def _config_error(cls: type, err: ValidationError, where: str) -> Exception:
    """One ValueError (TypeError when every problem is a wrong type) listing pydantic's errors, one a line."""
    problems, unknown, wrong_types = [], {}, True
    for e in err.errors(include_url=False):
        path = e["loc"][1:]  # [0] is the mapping around the dataclass (see _STRICT)
        union = _union_at(cls, path)
        if union is not None:  # one line for a key of several types (``int | tuple[int, int]``), not one a type
            path, tp = path[:union], _type_at(cls, path[:union])
            if len(e["loc"]) == union + 2:  # the branch that failed on the whole value: its input is the value
                kinds = " or ".join(_words(arg) for arg in typing.get_args(tp) if arg is not type(None))
                problems.append(_at(where, path) + f"expected {kinds}, got {type(e['input']).__name__} "
                                                   f"{quote(e['input'])}")
            continue
        if e["type"] in _UNKNOWN:
            unknown.setdefault(path[:-1], []).append(path[-1])
            wrong_types = False
            continue
        if e["type"] == "missing" and path and isinstance(path[-1], int):  # a fixed-length tuple given too few
            path = path[:-1]
            e = {**e, "type": "too_short", "ctx": {"min_length": len(typing.get_args(_type_at(cls, path))),
                                                   "actual_length": len(e["input"])}}
        kind = e["type"].removesuffix("_type")
        wrong_types &= kind in _EXPECTED
        problems.append(_at(where, path) + _describe(e, kind, _type_at(cls, path)))
    for path, keys in unknown.items():
        tp = _type_at(cls, path)
        allowed = sorted(f.name for f in dataclasses.fields(tp) if f.init) if dataclasses.is_dataclass(tp) else []
        problems.append(_at(where, path) + f"unknown key(s) {sorted(keys)}"
                        + (f"; allowed: {allowed}" if allowed else ""))
    return (TypeError if wrong_types else ValueError)("\n".join(dict.fromkeys(problems)))


def _describe(e: dict[str, Any], kind: str, tp: Any) -> str:
    """A pydantic error in the words of a config file; ``tp`` is the key's type (None where unknown)."""
    value, ctx = e.get("input"), e.get("ctx") or {}
    got = f"got {type(value).__name__} {quote(value)}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, {got}"
    if kind == "literal_error":
        return f"must be one of {_choices(tp) or ctx['expected']}, got {quote(value)}"
    if kind in ("too_long", "too_short"):
        return f"expected {ctx.get('max_length', ctx.get('min_length'))} items, got {ctx['actual_length']}"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])  # a __post_init__ check: its own message
    return f"{e['msg']}, {got}"


def _union_at(cls: type, path: tuple) -> int | None:
    """Where ``path`` names a member of a union of types (pydantic adds it after the key: ``('num_workers', 'int')``),
    the length of the key's own path; else None."""
    for depth in range(1, len(path)):
        tp = _type_at(cls, path[:depth])
        union = typing.get_origin(tp) in (typing.Union, types.UnionType)
        if union and isinstance(path[depth], str) and len([a for a in typing.get_args(tp) if a is not type(None)]) > 1:
            return depth
    return None


def _words(tp: Any) -> str:
    """A type in a config file's words: ``an integer``, ``a list of 2 integers``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple and args and Ellipsis not in args:
        return f"a list of {len(args)} " + ("integers" if set(args) == {int} else "items")
    return _EXPECTED.get({"str": "string"}.get(getattr(tp, "__name__", ""), getattr(tp, "__name__", "")), str(tp))


def _type_at(cls: type, path: tuple) -> Any:
    """The type of the key at ``path`` under dataclass ``cls`` (None where no dataclass field leads there)."""
    for key in path:
        if not dataclasses.is_dataclass(cls):
            return None
        cls = typing.get_type_hints(cls).get(key)
    return cls


def _choices(tp: Any) -> list[Any]:
    """The values of a ``Literal[...]`` (or of ``Literal[...] | None``)."""
    if typing.get_origin(tp) is Literal:
        return list(typing.get_args(tp))
    return [value for arg in typing.get_args(tp) if typing.get_origin(arg) is Literal for value in typing.get_args(arg)]


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data["a"]["b"]["c"] = value`` for ``dotted`` ``"a.b.c"`` (a ``--set`` value), making the mappings on
    the way (a null one too); a value on the way that is not a mapping raises, naming it."""
    node = data
    *parents, leaf = dotted.split(".")
    for depth, key in enumerate(parents):
        if node.get(key) is None:
            node[key] = {}
        node = node[key]
        if not isinstance(node, dict):
            raise ValueError(f"--set {dotted}: {'.'.join(parents[:depth + 1])} is {quote(node)}, not a mapping")
    node[leaf] = value


def to_dict(obj: Any) -> dict[str, Any]:
    """A config dataclass as nested plain dicts (tuples stay tuples)."""
    return dataclasses.asdict(obj)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config (a dataclass or a mapping) as flat dotted keys (MLflow params, ``--set`` pairs)."""
    out: dict[str, Any] = {}
    for key, value in (to_dict(obj) if dataclasses.is_dataclass(obj) else obj).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, prefix=name + "."))
        else:
            out[name] = value
    return out


__all__ = ["from_dict", "to_dict", "flatten", "quote", "set_dotted", "QUOTE_LIMIT"]
