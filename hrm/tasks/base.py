"""The interface every puzzle task implements.

A task turns puzzles into fixed-length token arrays for the model and back:

- ``vocab_size`` / ``seq_len``: token 0 is always PAD; a label token 0 is ignored by the loss.
- ``encode(instance) -> (inputs, labels)``: two ``uint8`` arrays of shape ``(seq_len,)``.
- ``decode(tokens) -> grid``: a NumPy grid in the task's own alphabet (inverse of ``encode`` on the inputs side).
- ``generate(rng) -> instance | None``: one fresh instance from a NumPy ``Generator`` (``None`` when rejected).
- ``augment(instance, rng) -> instance``: a random validity-preserving transform.
- ``score(pred, labels, inputs) -> dict[str, bool]``: per-example scorers, always including ``"exact"``.
- ``render(tokens) -> str``: a human-readable grid (``hrm data show``, ``hrm solve``).
- ``parse(text) -> inputs``: a puzzle typed by a user, validated, as model inputs (``hrm solve``).

Each module registers its task class in ``hrm.tasks.TASKS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

PAD = 0


class Task(ABC):
    name: ClassVar[str]
    vocab_size: int
    seq_len: int

    @abstractmethod
    def encode(self, instance: Any) -> tuple[np.ndarray, np.ndarray]: ...

    @abstractmethod
    def decode(self, tokens: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def generate(self, rng: np.random.Generator) -> Any | None: ...

    @abstractmethod
    def augment(self, instance: Any, rng: np.random.Generator) -> Any: ...

    @abstractmethod
    def score(self, pred: np.ndarray, labels: np.ndarray, inputs: np.ndarray) -> dict[str, bool]: ...

    @abstractmethod
    def render(self, tokens: np.ndarray) -> str: ...

    @abstractmethod
    def parse(self, text: str) -> np.ndarray: ...
