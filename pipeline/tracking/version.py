"""The code version recorded with datasets and runs: the package version and the git commit of a checkout.

A job submitted with ``ray job submit --working-dir .`` runs in a copy without ``.git``: its commit then comes from
$HRM_GIT_COMMIT, which the submitter sets (``--runtime-env-json '{"env_vars": {"HRM_GIT_COMMIT": "<sha>"}}'``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

COMMIT_ENV = "HRM_GIT_COMMIT"  # the commit of a job whose working dir has no .git


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
    return out


def code_version_string(v: dict[str, Any] | None = None) -> str:
    """``<package>+<commit>[.dirty]`` for tags and logs, of ``v`` (a :func:`code_version`, found when not given)."""
    v = v if v is not None else code_version()
    if "git_commit" not in v:
        return v["package"]
    return f"{v['package']}+{v['git_commit'][:10]}{'.dirty' if v.get('git_dirty') else ''}"
