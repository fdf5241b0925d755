"""Publishing a built dataset, and only over what a build may replace.

- ``clean_leftovers``: staging folders (``<out>.tmp-*``) and replaced datasets (``<out>.old-*``) of builds that
  died are removed by the next build of the same output, which holds its lock (pipeline.core.locks): no live build can
  own them. A build killed between the two renames of ``install`` left its dataset only in ``<out>.old-*``: that
  one is put back, not removed.
- ``foreign_files``: ``--overwrite`` replaces a dataset's own files (metadata.json and the parts under train/,
  test/, parts-*/), never a folder that also holds files of the user's.
- ``Publish``: what a build saw of ``<out>`` when it started (the digest of its metadata.json); ``install`` and
  the object-store commit refuse to replace anything else, and a build that lost its lock stops.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import storage
from pipeline.data.meta import METADATA, SPLITS

log = logging.getLogger(__name__)

PARTS_PREFIX = "parts-"  # object stores: <out>/parts-<random>/<split>/part-….parquet
LEFTOVERS = (".tmp-", ".old-")  # local: <out>.tmp-<random> (staging), <out>.old-<random> (being replaced)


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
        """Raise unless the lock is still held and ``<out>`` is still what the build started from."""
        self.lock.check()
        now = metadata_digest(out)
        if now != self.before:
            raise DatasetExistsError(f"{out} changed while this build ran (its metadata.json is not the one the "
                                     "build started from): nothing was replaced, this build is discarded")


def clean_leftovers(out: str) -> None:
    """Remove what builds of ``out`` that died left beside it (local disk; on an object store, parts of dead builds
    are dropped after the next publish). Call it holding ``out``'s lock."""
    if storage.is_remote(out):
        return
    parent, name = os.path.split(out)
    if not os.path.isdir(parent):
        return
    found = sorted(e for e in os.listdir(parent) if any(e.startswith(name + mark) for mark in LEFTOVERS))
    for entry in found:
        path = os.path.join(parent, entry)
        if entry.startswith(name + ".old-") and not os.path.exists(out):
            os.rename(path, out)  # the build died between install's two renames: its old dataset goes back
            log.warning("%s: put back the dataset a build that died had moved to %s", out, path)
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.info("%s: removed %s, left by a build that died", out, path)


def own_file(name: str, listed: set[str]) -> bool:
    """A file a build writes in a dataset folder: metadata.json, a part metadata.json lists, or (a build that died
    before writing metadata.json) a Parquet part under a split or ``parts-*`` folder."""
    if name == METADATA or name in listed:
        return True
    top = name.split("/", 1)[0]
    return name.endswith(".parquet") and (top in SPLITS or top.startswith(PARTS_PREFIX))


def foreign_files(out: str, meta: dict[str, Any] | None) -> list[str]:
    """Files under ``out`` (relative paths) that no build wrote: ``--overwrite`` leaves such a folder alone."""
    listed = {p["path"] for parts in (meta or {}).get("files", {}).values() for p in parts}
    return [name for name in storage.list_files(out) if not own_file(name, listed)]


def install(tmp: str, out: str, publish: Publish) -> None:
    """Rename the finished temp folder to ``out``, replacing an old dataset only after the new one is complete and
    only when ``out`` is still the one the build started from."""
    publish.check(out)
    old = None
    if os.path.exists(out):
        old = f"{out}.old-{secrets.token_hex(4)}"
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
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
    return "", work, work


__all__ = ["DatasetExistsError", "Publish", "metadata_digest", "clean_leftovers", "foreign_files", "install",
           "discard", "drop_old_parts", "staging", "PARTS_PREFIX"]
