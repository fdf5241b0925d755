"""Names that become folders (a run under storage_path, a dataset under data/): one plain path component."""

from __future__ import annotations

from pipeline.core.config_io import quote

MAX_NAME_BYTES = 200  # filesystems allow 255 bytes a name; the jobs add suffixes (.lock, .tmp-<token>, trial ids)


def name_problems(name: str, what: str = "name") -> list[str]:
    """A run or dataset name is one plain folder name: not empty, not . or .., no separator or control character,
    at most MAX_NAME_BYTES bytes (UTF-8)."""
    bad = [c for c in name if c in "/\\" or not c.isprintable()]
    if not name or name in (".", "..") or bad:
        return [f"{what} must be a plain folder name (no '/', '\\', '..' or control characters), got {quote(name)}"]
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        return [f"{what} is {size} bytes long, at most {MAX_NAME_BYTES} (it names folders and files): got "
                f"{quote(name)}"]
    return []
