"""What every task's dataset builder implements: the task-specific half of ``hrm data build``.

``pipeline.data.build.build_dataset`` runs the same four stages for every task and asks the builder at each:

1. originals (``pipeline.data.make_originals``): ``first_chunks`` → ``make_chunk`` on Ray workers → ``originals``,
   then ``top_up`` for more chunks while duplicates left a generated stream short;
2. split: ``split(originals)`` → the originals of each split;
3. plan: ``jobs(splits)`` → Parquet parts of whole originals (each job: ``split``, ``rows`` and its data);
4. augment and write (``pipeline.data.write``): ``encode_job`` on Ray workers → the rows of one part.

Chunks, summaries and jobs are plain dicts that travel pickled between the driver and the workers. A builder is
rebuilt from ``(cfg, skip_invalid)`` on every worker, so worker-side methods use nothing the driver computed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

Chunk = dict[str, Any]  # one unit of stage-1 work (generate a fixed chunk, check an imported slice, ...)
Summary = dict[str, Any]  # a chunk's result: its originals and what the driver needs to keep or reject them
Job = dict[str, Any]  # one Parquet part to write: "split", "rows", "example_start" and the task's data


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integer parts (e.g. ``seed, stream, chunk``): independent streams per chunk."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class Builder(ABC):
    """The task-specific steps of a dataset build; ``task`` is the ``hrm.tasks`` object that encodes the rows."""

    task: Any

    @abstractmethod
    def task_args(self) -> dict[str, Any]:
        """The task's constructor arguments, stored in metadata.json (``hrm.tasks.make_task``)."""

    @abstractmethod
    def first_chunks(self) -> list[Chunk]:
        """Driver: the first round of stage-1 chunks."""

    @abstractmethod
    def make_chunk(self, chunk: Chunk) -> Summary:
        """Worker: one chunk → its summary (the originals it made or checked)."""

    @abstractmethod
    def originals(self, summaries: list[Summary]) -> Any:
        """Driver: the originals kept from all summaries so far (de-duplicated; invalid ones raised or dropped)."""

    def top_up(self, originals: Any) -> list[Chunk]:
        """Driver: more stage-1 chunks when ``originals`` fall short of the target; [] when done (the default)."""
        return []

    @abstractmethod
    def split(self, originals: Any) -> Any:
        """Driver: ``originals`` divided into the train and test splits."""

    @abstractmethod
    def jobs(self, splits: Any) -> list[Job]:
        """Driver: the stage-2 jobs, in ``example_id`` order within each split (``example_start`` not yet set)."""

    @abstractmethod
    def encode_job(self, job: Job) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Worker: one job → ``(inputs, labels, puzzle_id, group_id)``, ``job["rows"]`` rows, augmentations
        included."""

    @abstractmethod
    def metadata(self) -> dict[str, Any]:
        """Driver, after ``jobs``: ``num_puzzle_identifiers``, ``groups`` (originals per split), ``stats`` and any
        task-specific metadata.json entries."""
