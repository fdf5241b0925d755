"""The import layers of the project, written down once: a module imports its own package or a lower layer, never a
higher one, and no modules import each other in a circle. Every import counts, also those inside functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.serving.code import module_imports

ROOT = Path(__file__).resolve().parents[2]
# Bottom up. Packages of one layer do not import each other.
LAYERS = [
    ["hrm"],  # the model and the puzzles: pure PyTorch + NumPy
    ["pipeline.core"],  # foundations: configs, YAML, names, locks, storage, precision, progress, Ray start, export
    ["pipeline.serving"],  # the served model (MLflow pyfunc) and hrm serve's supervisor
    ["pipeline.tracking"],  # MLflow: runs, registry, buffered logging, code version
    ["pipeline.data"],
    ["pipeline.train"],
    ["pipeline.evaluate", "pipeline.tune", "pipeline.benchmark", "pipeline.demo"],  # jobs above training
    ["pipeline.explore"],  # the notebooks' helpers
    ["pipeline.cli"],
    ["bench"],  # benchmark scripts, run from a checkout
]
LAYER = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, this: str | None = None) -> set[str]:
    """Every module of ours that ``path`` (the module ``this``, by default the one its place names) imports: the
    parser that finds the code a served model ships (``from a import b`` gives ``a`` and, when a module, ``a.b``)."""
    return {name for name in module_imports(path, this or module_name(path)) if name in MODULES}


def package_of(module: str) -> str | None:
    """The layered package ``module`` belongs to: the longest entry of LAYER it starts with."""
    hits = [p for p in LAYER if module == p or module.startswith(p + ".")]
    return max(hits, key=len) if hits else None


FILES = sorted(p for top in ("hrm", "pipeline", "bench") for p in (ROOT / top).rglob("*.py"))
MODULES = {module_name(p): p for p in FILES}
GRAPH = {name: imported(path) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    assert [m for m in MODULES if package_of(m) is None and m != "pipeline"] == []


def wrong_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import from a package to another of its own layer or of a higher one, as a line naming both."""
    wrong = []
    for module, targets in sorted(graph.items()):
        mine = package_of(module)
        for theirs in sorted({package_of(target) for target in targets} - {None, mine}):
            if mine and LAYER[theirs] >= LAYER[mine]:
                wrong.append(f"{module} imports from {theirs}: layer {LAYER[mine]} ({mine}) may not reach "
                             f"layer {LAYER[theirs]} ({theirs})")
    return wrong


def test_no_import_runs_up_or_sideways():
    assert wrong_imports(GRAPH) == []


def circles_of(graph: dict[str, set[str]]) -> list[str]:
    """Each circle of imports found by a depth-first walk, as ``a -> b -> a`` (a module's import of its own
    package, as ``from pipeline.train import checkpoint`` in ``pipeline.train.worker``, is no circle)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if target == module or module.startswith(target + "."):
                continue
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return circles


def test_no_circles():
    assert circles_of(GRAPH) == []


@pytest.mark.parametrize(("source", "line", "problem"), [
    ("pipeline.core.fake", "from pipeline.train import checkpoint", "layer 1 (pipeline.core) may not reach layer 5"),
    ("pipeline.data.fake", "from pipeline.evaluate import curves", "layer 4 (pipeline.data) may not reach layer 6"),
    ("pipeline.tune.fake", "import pipeline.benchmark.report", "layer 6 (pipeline.tune) may not reach layer 6"),
    ("hrm.fake", "from pipeline.core.export import load_export", "layer 0 (hrm) may not reach layer 1"),
])
def test_the_check_names_a_wrong_import(tmp_path, source, line, problem):
    """The check itself: a module written with an import that runs up (or sideways) is named."""
    fake = tmp_path / "fake.py"
    fake.write_text(line + "\n")
    wrong = wrong_imports({source: imported(fake, source)})
    assert len(wrong) == 1 and problem in wrong[0], wrong


def test_the_check_finds_a_circle():
    """The check itself: the builder base importing a builder back (the circle that was) is found."""
    graph = dict(GRAPH, **{"pipeline.data.builder": GRAPH["pipeline.data.builder"] | {"pipeline.data.build_arc"}})
    assert circles_of(graph) == ["pipeline.data.builder -> pipeline.data.build_arc -> pipeline.data.builder"]
