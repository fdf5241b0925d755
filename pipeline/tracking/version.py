"""The code version recorded with datasets and runs: the package version, the git commit of a checkout, and always the
SHA-256 of the package's source (``source_sha256``).

A job submitted with ``ray job submit --working-dir .`` runs in a copy without ``.git``: its commit then comes from
$HRM_GIT_COMMIT when the submitter sets it (``cluster/submit.sh`` does); without it the run still carries the source's
digest, which ``hrm info`` prints for any checkout, so the run can be matched to the code it ran."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

COMMIT_ENV = "HRM_GIT_COMMIT"  # the commit of a job whose working dir has no .git
ROOT = Path(__file__).resolve().parents[2]
SOURCE = ("hrm", "pipeline")  # the package's code: every .py file and the shipped configs (*.yaml) under these


def source_sha256(root: Path = ROOT) -> str:
    """SHA-256 over the package's source files under ``root`` — each one's relative path and bytes, in path order —
    the same for a checkout and for a job's uploaded copy of it (caches and bytecode left out)."""
    digest = hashlib.sha256()
    files = sorted(p for top in SOURCE for pattern in ("*.py", "*.yaml") for p in (root / top).rglob(pattern)
                   if "__pycache__" not in p.parts)
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def code_version() -> dict[str, Any]:
    """Package version and, when the package lives in a git checkout, its commit (``dirty`` if modified)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        out: dict[str, Any] = {"package": version("hrm-pipeline")}
    except PackageNotFoundError:
        out = {"package": "unknown"}
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10)
            out["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    if "git_commit" not in out and os.environ.get(COMMIT_ENV, "").strip():
        out["git_commit"] = os.environ[COMMIT_ENV].strip()
    out["source_sha256"] = source_sha256()
    return out


def code_version_string(v: dict[str, Any] | None = None) -> str:
    """``<package>+<commit>[.dirty]`` for tags and logs — ``<package>+src.<source digest>`` without a commit — of
    ``v`` (a :func:`code_version`, found when not given)."""
    v = v if v is not None else code_version()
    if "git_commit" not in v:
        return f"{v['package']}+src.{v['source_sha256'][:12]}" if "source_sha256" in v else v["package"]
    return f"{v['package']}+{v['git_commit'][:10]}{'.dirty' if v.get('git_dirty') else ''}"
