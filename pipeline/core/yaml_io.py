"""Reading the YAML of every config (data, train, sweep files and ``--set`` values) the same way.

- Numbers as people and Python write them: ``1e-4``, ``3E5``, ``-2.5e+3`` are floats (PyYAML follows YAML 1.1,
  where a float needs a dot, so ``1e-4`` would be the string '1e-4').
- Aliases stay cheap: a document whose aliases expand past ``MAX_NODES`` values (a "billion laughs" file of a few
  hundred bytes) is refused before anything walks it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.config_io import quote

MAX_NODES = 100_000  # values in a config once its aliases are expanded; real configs have a few hundred


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader whose floats follow YAML 1.2 / Python: an exponent alone makes a float."""


_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?
                        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                        |[-+]?\.(?:inf|Inf|INF)
                        |\.(?:nan|NaN|NAN))$""", re.X)
ConfigLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "-+0123456789.":
    ConfigLoader.yaml_implicit_resolvers[_first] = [
        (tag, rx) for tag, rx in ConfigLoader.yaml_implicit_resolvers.get(_first, []) if tag != "tag:yaml.org,2002:float"]
    ConfigLoader.yaml_implicit_resolvers[_first].append(("tag:yaml.org,2002:float", _FLOAT))
# integers keep their own resolver, tried first: "12" stays an int, "1e3" and "1.0" become floats
for _first in list(ConfigLoader.yaml_implicit_resolvers):
    rules = ConfigLoader.yaml_implicit_resolvers[_first]
    rules.sort(key=lambda rule: rule[0] != "tag:yaml.org,2002:int")


def _count_expanded(node: yaml.Node, budget: int) -> int:
    """Values under ``node`` with every alias expanded (an alias counts each time it is used); stops at ``budget``."""
    count, stack = 0, [node]
    while stack:
        current = stack.pop()
        count += 1
        if count > budget:
            return count
        if isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
        elif isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                stack.extend((key, value))
    return count


def parse(text: str, where: str) -> Any:
    """A YAML document as plain data; ``where`` names it in errors (a file, or ``--set key``)."""
    loader = ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _count_expanded(node, MAX_NODES) > MAX_NODES:
            raise ValueError(f"{where}: more than {MAX_NODES:,} values once its aliases (*name) are expanded: "
                             "refused (a config needs far fewer; write the values out)")
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ValueError(f"{where}: not valid YAML: {err}") from None
    except RecursionError:  # PyYAML composes and builds nested collections recursively
        raise ValueError(f"{where}: lists or mappings nested hundreds deep: refused (a config is a few levels "
                         "deep)") from None
    finally:
        loader.dispose()


def read_mapping(path: str | Path | None, kind: str) -> dict[str, Any]:
    """A YAML file's top-level mapping ({} for no file or an empty one); a missing file or another top level
    raises, naming the file."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file not found: {path}")
    data = parse(path.read_text(encoding="utf-8"), str(path)) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


__all__ = ["ConfigLoader", "parse", "read_mapping", "quote", "MAX_NODES"]
