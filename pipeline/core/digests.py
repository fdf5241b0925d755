"""What a folder's files are: the SHA-256 of each, and in words how two such listings differ. Used to check that
files which run code when read (a logged model, a sweep's Tune state) are the ones this project wrote."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_digests(folder: Path, *, base: Path | None = None, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """``{path relative to base (default folder): SHA-256}`` of every file under ``folder``, less the relative paths
    in ``skip``; empty when ``folder`` is not a directory."""
    folder = Path(folder)
    base = folder if base is None else Path(base)
    if not folder.is_dir():
        return {}
    found = {p.relative_to(base).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    return {name: file_sha256(p) for name, p in found.items() if name not in skip}


def differences(expected: dict[str, str], found: dict[str, str]) -> str | None:
    """How ``found`` differs from ``expected`` (``changed: a, b; added: c; missing: d``, five paths a kind at most),
    or None when they are the same."""
    changed = sorted(p for p in expected.keys() & found.keys() if expected[p] != found[p])
    added, missing = sorted(found.keys() - expected.keys()), sorted(expected.keys() - found.keys())
    parts = [f"{what}: {', '.join(paths[:5])}{' …' if len(paths) > 5 else ''}"
             for what, paths in (("changed", changed), ("added", added), ("missing", missing)) if paths]
    return "; ".join(parts) or None
