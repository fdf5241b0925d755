"""A lock held in the MLflow registry itself, so that moving an alias is a compare-and-set, not a read-then-write.

MLflow's registry has no conditional write: two runs that each read ``@champion``, find themselves better and set
the alias can leave the worse one champion. What it does have is a name that can exist only once: creating a
registered model whose name is taken fails (``RESOURCE_ALREADY_EXISTS``) in every store (SQLite, PostgreSQL, the
tracking server). So ``held(client, name)`` creates the registered model ``<name>.champion-lock`` (tagged with its
holder and the time), does the compare and the set while it exists, and deletes it. Whoever finds it taken waits;
a lock older than ``STALE_S`` (its holder died between create and delete) is removed and taken over.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)
SUFFIX = ".champion-lock"
STALE_S = 120.0  # a promotion takes well under a second: a lock this old was left by a holder that died
WAIT_S = 60.0


def lock_name(model_name: str) -> str:
    return model_name + SUFFIX


@contextmanager
def held(client, model_name: str, *, wait_s: float = WAIT_S, stale_s: float = STALE_S) -> Iterator[None]:
    """Hold the registry lock of ``model_name`` (see the module docstring); a TimeoutError after ``wait_s``."""
    from mlflow.exceptions import MlflowException

    name = lock_name(model_name)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + wait_s
    pause = 0.05
    while True:
        try:
            client.create_registered_model(name, tags={"hrm.lock_holder": holder, "hrm.lock_since": f"{time.time():.3f}"},
                                           description=f"held while hrm moves an alias of {model_name}; deleted after")
            break
        except MlflowException as err:
            # A taken name fails with RESOURCE_ALREADY_EXISTS; but MLflow's store looks the taken model up to word
            # that error, and a holder that released it in between makes it RESOURCE_DOES_NOT_EXIST: free again
            if err.error_code == "RESOURCE_DOES_NOT_EXIST" and time.monotonic() <= deadline:
                continue
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        _remove_if_stale(client, name, stale_s)
        if time.monotonic() > deadline:
            raise TimeoutError(f"the registry lock {name!r} is held by another run for over {wait_s:g} s")
        time.sleep(pause)
        pause = min(pause * 2, 1.0)
    try:
        yield
    finally:
        try:
            client.delete_registered_model(name)
        except MlflowException as err:  # taken over as stale meanwhile, or the store is gone: it goes stale
            log.warning("could not release the registry lock %s (%s)", name, err.message)


def _remove_if_stale(client, name: str, stale_s: float) -> None:
    from mlflow.exceptions import MlflowException

    try:
        since = float(client.get_registered_model(name).tags.get("hrm.lock_since", "0"))
    except MlflowException:
        return  # released meanwhile
    if time.time() - since > stale_s:
        log.warning("removing the registry lock %s left %.0f s ago by a holder that is gone", name, time.time() - since)
        try:
            client.delete_registered_model(name)
        except MlflowException:
            pass  # another waiter removed it first
