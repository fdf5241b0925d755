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
- ``symmetries(count, rng) -> [Symmetry]``: transforms to vote over at inference (``hrm.vote``), the identity first;
  ``valid_answer(pred, inputs)``: whether a mapped-back answer may vote; ``canonical_answer(pred, inputs)``: the one
  answer that stands for all equally right ones (a vote counts for it).

Each module registers its task class in ``hrm.tasks.TASKS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

PAD = 0


def _same(tokens: np.ndarray) -> np.ndarray:
    return np.asarray(tokens, np.uint8)


@dataclass(frozen=True)
class Symmetry:
    """A validity-preserving transform of a task's puzzles, on ``uint8`` token arrays ``(B, L)``.

    ``apply(inputs) -> inputs``: the transformed puzzles; ``invert(answer) -> answer``: a model's answer to the
    transformed puzzles mapped back onto the original ones (``invert(apply(x)) == x`` for inputs and labels).
    """

    name: str
    apply: Callable[[np.ndarray], np.ndarray]
    invert: Callable[[np.ndarray], np.ndarray]


IDENTITY = Symmetry("identity", _same, _same)


def draw_distinct(count: int, rng: np.random.Generator, draw: Callable, key: Callable, identity_key) -> list:
    """``count - 1`` transforms ``draw(rng)`` with distinct ``key``s, none the identity's; ValueError when the draws
    keep repeating (fewer distinct transforms than asked for)."""
    seen, out = {identity_key}, []
    for _ in range(50 * count + 100):
        if len(out) >= count - 1:
            return out
        t = draw(rng)
        k = key(t)
        if k not in seen:
            seen.add(k)
            out.append(t)
    if len(out) >= count - 1:
        return out
    raise ValueError(f"found only {len(out) + 1} distinct symmetries, {count} asked for")


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

    def symmetries(self, count: int, rng: np.random.Generator) -> list[Symmetry]:
        """``count`` transforms to vote over, the identity first, drawn deterministically from ``rng``."""
        raise ValueError(f"{self.name} has no symmetries to vote over")

    def valid_answer(self, pred: np.ndarray, inputs: np.ndarray) -> bool:
        """Whether an answer ``(L,)`` (mapped back) can be right for ``inputs`` ``(L,)``; by default every one."""
        return True

    def follows_rules(self, pred: np.ndarray, inputs: np.ndarray) -> bool | None:
        """Whether an answer ``(L,)`` is right by the puzzle's own rules, which need no solution to check (a Sudoku's
        constraints and givens, a maze's shortest path): reported beside an answer, never used to choose one. None
        where the rules cannot tell (ARC: only the task's hidden output decides); by default None."""
        return None

    def canonical_answer(self, pred: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """The answer ``(L,)`` that stands for every answer as right as ``pred`` (votes pool on it); by default
        ``pred`` itself."""
        return pred
