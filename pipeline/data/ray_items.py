"""Work items as a Ray Data dataset, one item per block, read back in order: shared by both stages of a build.

Items (chunks, jobs) travel pickled in one ``bytes`` column ``spec`` beside their index ``i``.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
from collections.abc import Sequence
from typing import Any


def items_dataset(name: str, items: Sequence[Any]):
    """A Ray Dataset named ``name`` of rows ``{"i": index, "spec": pickled item}``, one row per block."""
    import ray

    rows = [{"i": i, "spec": pickle.dumps(item, protocol=5)} for i, item in enumerate(items)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))  # one item per block: a unit of parallel work
    ds.set_name(name)
    return ds


def worker_pool(workers: int):
    """The compute strategy of both stages: a pool of ``workers`` Ray tasks."""
    from ray.data import TaskPoolStrategy

    return TaskPoolStrategy(size=max(1, int(workers)))


@contextlib.contextmanager
def ordered():
    """Ray Data keeps block order while this is open (restored afterwards)."""
    from ray.data import DataContext

    options = DataContext.get_current().execution_options
    previous, options.preserve_order = options.preserve_order, True
    warnings.filterwarnings("ignore", message=".*operator only received.*", category=UserWarning)
    try:
        yield
    finally:
        options.preserve_order = previous


# Ray Data retries a failed write on these pyarrow errors up to 10 times, backing off up to 32 s between tries. For
# a server that is gone (connection refused or stalled: pyarrow already tried 3 times) that is minutes of waiting
# before the same error; a build with its object store gone ends at once instead, saying so (pipeline.cli).
GONE = ("AWS Error NETWORK_CONNECTION",)


@contextlib.contextmanager
def no_retries_when_the_store_is_gone():
    """While this is open Ray Data does not retry a write whose object store is unreachable (:data:`GONE`); other
    retried errors (throttling, 503) are retried as before."""
    from ray.data import DataContext

    context = DataContext.get_current()
    previous = list(context.retried_io_errors)
    context.retried_io_errors = [e for e in previous if e not in GONE]
    try:
        yield
    finally:
        context.retried_io_errors = previous
