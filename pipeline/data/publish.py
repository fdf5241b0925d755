"""Publishing a built dataset, and only over what a build may replace. Nothing a build did not write is deleted,
moved or renamed.

- The marker: a build writes ``.hrm-build`` (its output's name and its token) into its staging folder
  ``<out>.tmp-<token>``, and into a dataset of ours right before replacing it. A folder beside ``<out>`` is a
  leftover only when it holds the marker of a build of ``<out>`` with the token its name ends in: a name alone
  (``<out>.old-2025backup``, ``<out>.tmp-mine``) marks nothing.
- ``clean_leftovers``: marked leftovers of builds that died are removed by the next build of the same output, which
  holds its lock (pipeline.core.locks): no live build can own them. Where a system cannot swap two folders at once
  and a build died between ``install``'s two renames, its marked ``<out>.old-<token>`` is put back, not removed.
- ``foreign_files``: ``--overwrite`` replaces only a dataset of ours (a readable metadata.json) holding nothing but
  its own files (metadata.json, the parts it lists, parts of dead builds under ``parts-*/`` on an object store);
  ``Publish.check`` looks again right before the new dataset is installed.
- ``Publish``: what a build saw of ``<out>`` when it started (the digest of its metadata.json); ``install`` and
  the object-store commit refuse to replace anything else, and a build that lost its lock stops.
- ``install``: the new dataset takes ``<out>``'s place in one step where Linux can swap two folders
  (``renameat2(RENAME_EXCHANGE)``), so ``<out>`` is never missing; elsewhere in two renames.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import storage
from pipeline.data.meta import METADATA, SPLITS

log = logging.getLogger(__name__)

PARTS_PREFIX = "parts-"  # object stores: <out>/parts-<random>/<split>/part-….parquet
LEFTOVERS = (".tmp-", ".old-")  # local: <out>.tmp-<token> (staging), <out>.old-<token> (being replaced)
MARKER = ".hrm-build"  # what makes a folder beside <out> a build's own (see the module's docstring)


class DatasetExistsError(ValueError):
    """``<out>`` holds something other than the dataset asked for (or changed while this build ran)."""


def metadata_digest(out: str) -> str | None:
    """SHA-256 of ``<out>/metadata.json``; None when there is none."""
    location = storage.join(out, METADATA)
    if not storage.is_file(location):
        return None
    return hashlib.sha256(storage.read_bytes(location)).hexdigest()


@dataclass
class Publish:
    """A build's right to publish: its lock (``check()`` raises once lost) and ``<out>``'s metadata digest when the
    build started."""

    lock: Any
    before: str | None

    def check(self, out: str) -> None:
        """Raise unless the lock is still held, ``<out>`` is still what the build started from, and it holds no file
        a build did not write (one the user put there while this build ran)."""
        self.lock.check()
        now = metadata_digest(out)
        if now != self.before:
            raise DatasetExistsError(f"{out} changed while this build ran (its metadata.json is not the one the "
                                     "build started from): nothing was replaced, this build is discarded")
        if storage.is_dir(out):
            meta = json.loads(storage.read_bytes(storage.join(out, METADATA))) if now else None
            foreign = foreign_files(out, meta)
            if foreign:
                raise DatasetExistsError(f"{out} holds files no dataset build wrote ({shown(foreign)}), put there "
                                         "while this build ran: nothing was replaced, this build is discarded")


def mark(folder: str, out: str, token: str) -> None:
    """Write the marker of a build of ``out`` with ``token`` into ``folder``."""
    body = {"out": os.path.basename(out), "token": token, "host": socket.gethostname(), "pid": os.getpid()}
    Path(folder, MARKER).write_text(json.dumps(body))


def unmark(folder: str) -> None:
    Path(folder, MARKER).unlink(missing_ok=True)


def marked(path: str, out: str) -> bool:
    """Whether ``path`` (``<out>.tmp-<token>`` or ``<out>.old-<token>``) holds the marker of a build of ``out`` with
    that very token: a folder a build wrote, not one of the user's whose name looks alike."""
    try:
        found = json.loads(Path(path, MARKER).read_text())
    except (OSError, ValueError):
        return False
    name = os.path.basename(out)
    suffix = os.path.basename(path)[len(name):]
    return (isinstance(found, dict) and found.get("out") == name and isinstance(found.get("token"), str)
            and suffix in (f".tmp-{found['token']}", f".old-{found['token']}"))


def clean_leftovers(out: str) -> None:
    """Remove what builds of ``out`` that died left beside it, recognised by their marker (local disk; on an object
    store, parts of dead builds are dropped after the next publish). Call it holding ``out``'s lock. Folders whose
    names look alike but hold no such marker are the user's: left as they are, a line says so."""
    if storage.is_remote(out):
        return
    parent, name = os.path.split(out)
    if not os.path.isdir(parent):
        return
    found = sorted(e for e in os.listdir(parent) if any(e.startswith(name + mark) for mark in LEFTOVERS))
    for entry in found:
        path = os.path.join(parent, entry)
        if not marked(path, out):
            log.info("%s: %s is not a build's leftover (no build marker in it): left alone", out, path)
            continue
        if entry.startswith(name + ".old-") and not os.path.exists(out):
            unmark(path)
            os.rename(path, out)  # the build died between install's two renames: its old dataset goes back
            log.warning("%s: put back the dataset a build that died had moved to %s", out, path)
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.info("%s: removed %s, left by a build that died", out, path)


def own_file(name: str, listed: set[str], unlisted_parts: bool = False) -> bool:
    """A file a build writes in a dataset folder: metadata.json, a part metadata.json lists, the build marker,
    (object stores: a build that died before publishing) a Parquet part under a ``parts-*`` prefix, or, in a dataset
    whose metadata.json predates part lists (``unlisted_parts``), a ``part-*.parquet`` under a split folder."""
    if name in (METADATA, MARKER) or name in listed:
        return True
    top, _, rest = name.partition("/")
    if unlisted_parts and top in SPLITS and rest.startswith("part-") and rest.endswith(".parquet"):
        return True
    return name.endswith(".parquet") and top.startswith(PARTS_PREFIX)


def foreign_files(out: str, meta: dict[str, Any] | None) -> list[str]:
    """Files under ``out`` (relative paths) that no build wrote: ``--overwrite`` leaves such a folder alone."""
    listed = {p["path"] for parts in ((meta or {}).get("files") or {}).values() for p in parts}
    legacy = meta is not None and meta.get("files") is None  # a build from before metadata listed its parts
    return [name for name in storage.list_files(out) if not own_file(name, listed, legacy)]


def shown(names: list[str], most: int = 5) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def exchange(a: str, b: str) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where the system or
    the filesystem cannot, and nothing moved."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_cwd, rename_exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), b)


def install(tmp: str, out: str, publish: Publish) -> None:
    """Put the finished staging folder ``tmp`` (``<out>.tmp-<token>``, marked) in ``out``'s place, replacing an old
    dataset only after the new one is complete and only when ``out`` is still the one the build started from and
    holds nothing else. The old dataset is marked before it moves, so that a build dying at any point leaves only
    marked leftovers."""
    publish.check(out)
    token = tmp.rsplit(".tmp-", 1)[1]
    if not os.path.exists(out):
        os.rename(tmp, out)
        unmark(out)
        return
    mark(out, out, token)  # the old dataset: ours (checked above), marked before it moves
    if exchange(tmp, out):  # out never missing: the new dataset in, the old one at tmp
        unmark(out)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = f"{out}.old-{token}"
    os.rename(out, old)
    os.rename(tmp, out)
    unmark(out)
    shutil.rmtree(old, ignore_errors=True)


def discard(work: str) -> None:
    """Delete a staging location; a failure is logged, not raised (the build's own error matters more)."""
    try:
        storage.delete(work)
    except OSError as e:
        log.warning("could not delete %s: %s", work, e)


def drop_old_parts(out: str, keep: str) -> None:
    """After a publish on an object store: delete parts of earlier builds (and of builds that died)."""
    for name in storage.listdir(out):
        if name.startswith(PARTS_PREFIX) and name != keep:
            discard(storage.join(out, name))


def staging(out: str) -> tuple[str, str, str]:
    """(parts prefix inside the dataset, staging location, root of the dataset being written) for a new build:
    ``("", "<out>.tmp-<random>", same)`` locally, ``("parts-<random>", "<out>/parts-<random>", "<out>")`` on an
    object store."""
    token = secrets.token_hex(4)
    if storage.is_remote(out):
        prefix = f"{PARTS_PREFIX}{token}"
        return prefix, storage.join(out, prefix), out
    work = f"{out}.tmp-{token}"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(work).mkdir()
    mark(work, out, token)
    return "", work, work


__all__ = ["DatasetExistsError", "Publish", "metadata_digest", "clean_leftovers", "foreign_files", "install",
           "discard", "drop_old_parts", "staging", "exchange", "marked", "PARTS_PREFIX", "MARKER"]
