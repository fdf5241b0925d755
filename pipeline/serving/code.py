"""What the logged model ships: the package files serving imports, and the pip requirements they need, pinned.

Found by reading the imports (every ``import``, also those inside functions) of the serving entry points and,
from there, of every module of ``hrm``/``pipeline`` they reach. Nothing is imported or run to find them."""

from __future__ import annotations

import ast
import shutil
import sys
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
OURS = ("hrm", "pipeline")
# What MLflow's copy of model_file.py (at the model's root, not in code/) imports; it reaches the rest.
ENTRY_POINTS = ("pipeline.serving.pyfunc",)


def module_file(name: str) -> Path | None:
    """The source file of one of our modules (a package's ``__init__.py``), or None when there is none."""
    base = PACKAGE_ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_imports(path: Path, name: str) -> set[str]:
    """Absolute module names ``path`` (module ``name``) imports, wherever in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # ``from pkg import module``
    return found


@lru_cache(maxsize=1)
def served_modules() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(our modules serving needs, sorted; top-level third-party modules they import, sorted)."""
    ours: set[str] = set()
    others: set[str] = set()
    todo = list(ENTRY_POINTS)
    while todo:
        name = todo.pop()
        if name in ours:
            continue
        path = module_file(name)
        if path is None:
            continue  # ``from package import name`` where name is not a module
        ours.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages' __init__
        for imported in module_imports(path, name):
            top = imported.split(".")[0]
            if top in OURS:
                todo.append(imported)
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                others.add(top)
    return tuple(sorted(ours)), tuple(sorted(others))


def code_files() -> list[Path]:
    """The files of ``served_modules``, relative to the package root (e.g. ``hrm/model.py``)."""
    return sorted(module_file(name).relative_to(PACKAGE_ROOT) for name in served_modules()[0])


def stage_code(folder: Path) -> list[str]:
    """Copy the served files into ``folder`` (its ``hrm/`` and ``pipeline/``); return those two folders for
    MLflow's ``code_paths``."""
    for rel in code_files():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PACKAGE_ROOT / rel, folder / rel)
    return [str(folder / top) for top in OURS if (folder / top).is_dir()]


def requirements() -> list[str]:
    """``dist==version`` for every distribution the served code imports, at the version installed now (a local
    build label such as ``+cpu`` is dropped: ``torch==2.13.0`` matches 2.13.0+cpu from a CPU wheel index too)."""
    return list(_requirements())


@lru_cache(maxsize=None)
def _requirements() -> tuple[str, ...]:
    """:func:`requirements`, found once a process: mapping modules to distributions reads every installed
    package's file list (1 s here), and what is installed does not change under a running process."""
    dists = packages_distributions()
    out = set()
    for top in served_modules()[1]:
        names = dists.get(top, [top])
        for dist in [top] if top in names else names:  # ``mlflow``, not also mlflow-skinny and mlflow-tracing
            try:
                out.add(f"{dist}=={version(dist).split('+')[0]}")
            except PackageNotFoundError:
                raise ValueError(f"the served code imports {top!r}, which is not installed here") from None
    return tuple(sorted(out))
