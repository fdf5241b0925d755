"""One report from several runs of the same benchmark: ``hrm bench merge``.

Four variants of an hour each do not fit in one sitting, or are run on several machines of the same kind at once:
run ``hrm bench reasoning --variants …`` once per part, then merge the parts' report folders. The merge is
refused when the parts cannot be compared: a different budget, evaluation, depth or votes, a different dataset, a
different machine (CPU, torch's kernels, cores), or a variant in two parts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.benchmark.reasoning import Point, VariantResult

log = logging.getLogger(__name__)

# what must be the same in every part for the minutes and accuracies to be comparable
SAME_BENCH = ("name", "data_config", "minutes", "eval_minutes", "eval_limit", "deeper", "votes", "seed")
SAME_MACHINE = ("cpu", "cpu_capability", "auto_dtype_here", "cpu_count", "gpu", "torch")
SPEED_TOLERANCE = 0.15  # matmul speeds further apart than this are noted in the report: its minutes do not compare


def read_part(folder: Path) -> dict[str, Any]:
    """A report folder's curves.json, with its variants as :class:`VariantResult`; ValueError naming the folder
    when it is not a benchmark report."""
    path = Path(folder) / "curves.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no curves.json (not a report folder of hrm bench reasoning)")
    try:
        part = json.loads(path.read_text())
        missing = [k for k in ("bench", "dataset", "machine", "variants", "failed") if k not in part]
        if missing:
            raise KeyError(f"no {', '.join(missing)}")
        part["variants"] = [result_from(v) for v in part["variants"]]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a benchmark report's curves.json ({type(err).__name__}: {err})") from err
    return part


def result_from(data: dict[str, Any]) -> VariantResult:
    points = [Point(**p) for p in data.pop("points")]
    return VariantResult(**data, points=points)


def differences(parts: dict[str, dict[str, Any]]) -> list[str]:
    """What differs between the parts (each described by what it is not the same in), empty when they compare."""
    (first_name, first), *others = parts.items()
    problems = []
    for name, part in others:
        for section, keys in (("bench", SAME_BENCH), ("machine", SAME_MACHINE)):
            for key in keys:
                if part[section].get(key) != first[section].get(key):
                    problems.append(f"{section} {key}: {first[section].get(key)!r} in {first_name}, "
                                    f"{part[section].get(key)!r} in {name}")
        a, b = first["dataset"], part["dataset"]
        if Path(a["path"]).name != Path(b["path"]).name or a["counts"] != b["counts"]:
            problems.append(f"dataset: {Path(a['path']).name} {a['counts']} in {first_name}, "
                            f"{Path(b['path']).name} {b['counts']} in {name}")
    seen: dict[str, str] = {}
    for name, part in parts.items():
        for label in [r.label for r in part["variants"]] + list(part["failed"]):
            if label in seen:
                problems.append(f"variant {label} is in {seen[label]} and in {name}")
            seen.setdefault(label, name)
    return problems


def speed_notes(parts: dict[str, dict[str, Any]]) -> list[str]:
    """What the report must say about the machines' speed (``matmul_gflops``, measured when each part ran): nothing
    when they agree within SPEED_TOLERANCE; else each part's speed, since its minutes then do not compare."""
    speeds = {name: part["machine"].get("matmul_gflops") for name, part in parts.items()}
    known = [v for v in speeds.values() if v]
    if len(known) == len(speeds) and max(known) <= min(known) * (1 + SPEED_TOLERANCE):
        return []
    each = ", ".join(f"{name}: {f'{v:g} GFLOP/s' if v else 'not measured'}" for name, v in speeds.items())
    labels = {name: ", ".join(r.label for r in part["variants"]) for name, part in parts.items()}
    return [f"the parts ran on machines whose float32 matmul speed differs or is unknown ({each}); variants of "
            f"different parts ({'; '.join(labels.values())}) compare by steps, not by minutes"]


def merge_reports(sources: list[Path], out: Path) -> Path:
    """Merge the report folders ``sources`` (in that order: the report's variant order) into the new folder
    ``out``; ValueError listing every difference when they do not compare."""
    from pipeline.benchmark.report import write_files

    if len(sources) < 2:
        raise ValueError(f"merge needs two report folders or more, got {len(sources)}")
    parts = {str(folder): read_part(folder) for folder in sources}
    problems = differences(parts)
    if problems:
        raise ValueError("these reports do not compare: " + "; ".join(problems))
    first = next(iter(parts.values()))
    results = [r for part in parts.values() for r in part["variants"]]
    failed = {k: v for part in parts.values() for k, v in part["failed"].items()}
    notes = speed_notes(parts)
    for note in notes:
        log.warning("%s", note)
    folder = write_files(Path(out), results, failed, first["bench"], first["dataset"], first["machine"],
                         sources=list(parts), notes=notes)
    log.info("merged %d reports (%d variants) into %s", len(parts), len(results), folder)
    return folder
