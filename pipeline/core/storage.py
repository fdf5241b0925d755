"""Dataset locations as strings: a local path, or an object-store URI (``s3://bucket/prefix``, ``gs://…``).

Everything goes through ``pyarrow.fs``. For ``s3://`` the usual AWS environment applies (keys, region, profile);
an endpoint override comes from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` and is passed to pyarrow
explicitly, so a filesystem pickled to Ray workers keeps it. Keep such locations as ``str``: ``pathlib.Path``
turns ``s3://b/x`` into ``s3:/b/x``.

Object stores have no rename: ``write_text`` there is one PUT (an object appears whole or not at all); on a local
disk it writes a temp file and renames it.

An S3 server that stops answering is given up on within seconds, not minutes. pyarrow's client keeps its defaults:
a try ends after 3 s without a byte moving (curl's low-speed limit, which never cuts a slow but moving upload), 3
tries: a stalled server was given up on in 9.9 s (setting a 20-s request timeout made that 61 s). The boto3 client
of the S3 lock (``s3_client_config``) waits ``S3_READ_S`` (10 s; ``$HRM_S3_TIMEOUT_S``) for an answer and
``S3_CONNECT_S`` (5 s) for a connection (botocore's "standard" retries, ``max_attempts`` 2): a stalled server was
given up on in 30 s, where botocore's defaults (60 s a try) took 181 s. Measured against a socket that accepts and
never answers, on the 2-core machine of README's figures.
"""

from __future__ import annotations

import os
import posixpath
import secrets
from pathlib import Path
from typing import Any

_OBJECT_SCHEMES = ("s3", "gs", "gcs")
S3_CONNECT_S, S3_READ_S = 5.0, 10.0
TIMEOUT_ENV = "HRM_S3_TIMEOUT_S"


def s3_read_s() -> float:
    """Seconds a boto3 S3 call waits for an answer: ``$HRM_S3_TIMEOUT_S``, else S3_READ_S; a ValueError naming it."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return S3_READ_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return value


def s3_client_config():
    """botocore's Config for a boto3 S3 client with the timeouts above."""
    from botocore.config import Config

    return Config(connect_timeout=S3_CONNECT_S, read_timeout=s3_read_s(),
                  retries={"max_attempts": 2, "mode": "standard"})


def scheme(location: str | Path) -> str:
    """``"s3"``, ``"gs"``… for a URI, ``""`` for a local path (``file://`` included)."""
    text = str(location)
    if "://" not in text:
        return ""
    name = text.split("://", 1)[0].lower()
    return "" if name == "file" else name


def is_remote(location: str | Path) -> bool:
    return scheme(location) != ""


def normalize(location: str | Path) -> str:
    """An absolute local path (workers may run in another cwd) or the URI without a trailing slash."""
    text = str(location)
    if is_remote(text):
        if scheme(text) not in _OBJECT_SCHEMES:
            raise ValueError(f"{text}: unsupported storage scheme {scheme(text)!r}; use a local path, s3:// or gs://")
        if not text.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError(f"{text}: no bucket in the URI")
        return text.rstrip("/")
    if text.startswith("file://"):
        text = text[len("file://"):]
    return str(Path(text).expanduser().absolute())


def join(base: str | Path, *parts: str) -> str:
    """``base/part/…`` for a path or a URI (never through ``pathlib`` for URIs)."""
    base = str(base)
    if is_remote(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return os.path.join(base, *parts)


def endpoint_override() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def filesystem(location: str | Path) -> tuple[Any, str]:
    """``(pyarrow filesystem, path inside it)`` of a local path or a URI."""
    import pyarrow.fs as pafs

    location = normalize(location)
    if not is_remote(location):
        return pafs.LocalFileSystem(), location
    if scheme(location) == "s3":
        endpoint = endpoint_override()
        if endpoint:
            # pyarrow 25 honours AWS_ENDPOINT_URL by itself too; passing it keeps it in pickled copies
            options: dict[str, Any] = {"endpoint_override": endpoint}
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            if region:
                options["region"] = region
            return pafs.S3FileSystem(**options), location.split("://", 1)[1]
    return pafs.FileSystem.from_uri(location)


def _info(location: str):
    fs, path = filesystem(location)
    return fs, path, fs.get_file_info(path)


def exists(location: str | Path) -> bool:
    import pyarrow.fs as pafs

    return _info(str(location))[2].type != pafs.FileType.NotFound


def is_file(location: str | Path) -> bool:
    import pyarrow.fs as pafs

    return _info(str(location))[2].type == pafs.FileType.File


def is_dir(location: str | Path) -> bool:
    """A local folder, or a prefix with at least one object under it."""
    import pyarrow.fs as pafs

    return _info(str(location))[2].type == pafs.FileType.Directory


def read_bytes(location: str | Path) -> bytes:
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as f:
        return f.read()


def read_text(location: str | Path) -> str:
    return read_bytes(location).decode("utf-8")


def write_text(location: str | Path, text: str) -> None:
    """Write a small text file atomically: temp file + rename locally, one PUT on an object store."""
    location = normalize(location)
    data = text.encode("utf-8")
    if not is_remote(location):
        tmp = f"{location}.part-{secrets.token_hex(4)}"
        try:
            Path(tmp).write_bytes(data)
            os.replace(tmp, location)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    fs, path = filesystem(location)
    with fs.open_output_stream(path) as f:
        f.write(data)


def listdir(location: str | Path) -> list[str]:
    """Names directly under a folder/prefix (files and sub-folders), sorted; ``[]`` when it does not exist."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos)


def list_files(location: str | Path) -> list[str]:
    """Every file under a folder/prefix, as paths relative to it (``/``-separated), sorted."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=True))
    root = path.rstrip("/") + "/"
    return sorted(i.path[len(root):] for i in infos if i.type == pafs.FileType.File and i.path.startswith(root))


def delete(location: str | Path, *, missing_ok: bool = True) -> None:
    """Delete a file, or a folder/prefix with everything under it."""
    import pyarrow.fs as pafs

    fs, path, info = _info(str(location))
    if info.type == pafs.FileType.NotFound:
        if not missing_ok:
            raise FileNotFoundError(f"{location} does not exist")
        return
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    else:
        fs.delete_file(path)


def make_dirs(location: str | Path) -> None:
    """Create a local folder (and parents); nothing to do on an object store."""
    if not is_remote(location):
        Path(normalize(location)).mkdir(parents=True, exist_ok=True)


__all__ = ["scheme", "is_remote", "normalize", "join", "filesystem", "exists", "is_file", "is_dir", "read_bytes",
           "read_text", "write_text", "listdir", "list_files", "delete", "make_dirs", "endpoint_override"]
