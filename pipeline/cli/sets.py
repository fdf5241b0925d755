"""``--set KEY=VALUE`` options, shared by ``hrm train`` and ``hrm tune``."""

from __future__ import annotations

import click


def parse_sets(pairs: tuple[str, ...]) -> dict:
    """``--set a.b=value`` pairs -> {dotted key: value}, values read as YAML (numbers as Python writes them,
    booleans, null, lists); a malformed pair is a click usage error naming ``--set``."""
    from pipeline.core.yaml_io import parse

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--set")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = parse(value, f"--set {key.strip()}")
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--set") from None
    return out
