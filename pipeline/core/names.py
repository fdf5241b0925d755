"""Names that become folders (a run under storage_path, a dataset under data/): one plain path component."""

from __future__ import annotations

from pipeline.core.config_io import quote


def name_problems(name: str, what: str = "name") -> list[str]:
    """A run or dataset name is one plain folder name: not empty, not . or .., no separator or control character."""
    bad = [c for c in name if c in "/\\" or not c.isprintable()]
    if not name or name in (".", "..") or bad:
        return [f"{what} must be a plain folder name (no '/', '\\', '..' or control characters), got {quote(name)}"]
    return []
