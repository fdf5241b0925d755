"""The builder of tasks made of fixed-size (question, answer) grids: Sudoku and Maze (``GridBuilder``).

Originals come in fixed-size chunks, each generated from ``(seed, stream, chunk)`` or read from a CSV by the driver
and checked on a worker. Streams: ``all`` (split by the driver into train and test), ``train`` and ``test`` (already
split). The driver keeps the first occurrence of each canonical key (chunk order), tops a generated stream up with
more chunks while duplicates leave it short, splits (``pipeline.data.split``), and cuts each split into jobs of
whole originals, each carrying its grids. A worker encodes a job: variant 0 of every original, then its
augmentations, drawn from a stream of its own (``aug_rng``) so that no job boundary or worker count changes them.
"""

from __future__ import annotations

import logging
import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.data.builder import Builder, Chunk, Job, Summary, derive_seed
from pipeline.data.split import first_occurrences, split_streams

log = logging.getLogger(__name__)

STREAM_CODE = {"all": 0, "train": 1, "test": 2}
SPLIT_CODE = {"train": 1, "test": 2}
_AUG_SALT = 202
MAX_ROUNDS = 8
MIN_YIELD = 0.01  # top-up stops when under 1% of the last round's candidates were new
_STREAM_ORDER = ("train", "all", "test")  # de-duplication order: a published training set wins over the pool


@dataclass
class Originals:
    """The originals kept so far: per stream, (chunk index, row) pairs into ``chunks`` in keeping order."""

    kept: dict[str, np.ndarray]  # stream -> (m, 2) int64
    generated: dict[str, int]  # stream -> candidates made or imported
    chunks: list[tuple[np.ndarray, np.ndarray]]  # (questions, answers) of every summary, in de-duplication order

    def grids(self, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(questions, answers) of the originals ``refs`` ((m, 2) chunk index, row)."""
        pairs = refs.tolist()
        return (np.stack([self.chunks[c][0][r] for c, r in pairs]), np.stack([self.chunks[c][1][r] for c, r in pairs]))


class GridBuilder(Builder):
    """Subclasses set ``task`` and ``sources`` and implement the hooks below; ``cfg.section`` holds the settings."""

    rating_name = "rating"

    def __init__(self, cfg, skip_invalid: bool = False):
        self.cfg, self.sec, self.seed, self.skip_invalid = cfg, cfg.section, cfg.seed, skip_invalid
        self.sources: dict[str, str] = {}  # stream -> CSV path (imports)
        self.next_chunk: dict[str, int] = {}  # stream -> index of its next generated chunk
        self.rounds = 0  # top-up rounds so far
        self.seen: dict[str, tuple[int, int]] = {}  # stream -> (kept, generated) after the last round
        self.groups: dict[str, int] = {}  # split -> originals, set by ``jobs``
        self.stats: dict[str, Any] = {"skipped": 0, "duplicates": 0}

    # ------------------------------------------------------------------ task hooks
    @abstractmethod
    def targets(self) -> dict[str, int] | None:
        """Generated originals wanted per stream, or None for an import."""

    @abstractmethod
    def chunk_size(self) -> int:
        """Originals per generated chunk."""

    @abstractmethod
    def generate_chunk(self, stream: str, chunk: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Worker: ``size`` originals ``(questions, answers, ratings)`` of one chunk, from its own seed."""

    @abstractmethod
    def import_streams(self) -> list[str]:
        """The streams an import reads."""

    @abstractmethod
    def read_stream(self, stream: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Driver: ``(questions, answers, ratings, CSV line numbers)`` of one imported stream, checked row by row."""

    def check(self, q: np.ndarray, a: np.ndarray) -> list[tuple[int, str]]:
        """Worker: ``(row, why)`` of imported originals to reject (e.g. a Sudoku with two solutions); none here."""
        return []

    @abstractmethod
    def key(self, question: np.ndarray) -> bytes:
        """The canonical key of a question: equal for originals equivalent under the task's symmetries."""

    def needs_keys(self, stream: str) -> bool:
        """Whether the originals of ``stream`` are de-duplicated (all streams, unless a task says otherwise)."""
        return True

    def test_fraction(self) -> float:
        """The share of stream ``all`` drawn for the test split (none here: no stream ``all``)."""
        return 0.0

    @abstractmethod
    def augmentations(self, split: str) -> int:
        """Rows per original in ``split`` (variant 0 included)."""

    @abstractmethod
    def encode(self, q: np.ndarray, a: np.ndarray, split: str, groups: np.ndarray, augs: int):
        """Worker: ``(inputs, labels)`` uint8 ``(len(q) * augs, L)``; variant 0 of each original first, then its
        augmentations (drawn from ``aug_rng(split, group)``)."""

    # ------------------------------------------------------------------ stage 1: originals
    def _generate(self, stream: str, count: int, full_size: bool) -> list[Chunk]:
        """Chunks of ``stream`` holding ``count`` originals, numbered after the stream's earlier chunks."""
        size = self.chunk_size()
        start = self.next_chunk.get(stream, 0)
        n_chunks = math.ceil(count / size)
        chunks = [{"mode": "generate", "stream": stream, "chunk": start + k,
                   "size": size if full_size else min(size, count - k * size)} for k in range(n_chunks)]
        self.next_chunk[stream] = start + n_chunks
        return chunks

    def first_chunks(self) -> list[Chunk]:
        """Chunks to generate, or imported slices (carrying their rows) to check."""
        targets = self.targets()
        if targets is not None:
            return [c for s, n in targets.items() if n > 0 for c in self._generate(s, n, full_size=False)]
        chunks = []
        for stream in self.import_streams():
            q, a, rating, line = self.read_stream(stream)
            size = self.sec.import_chunk
            for k, lo in enumerate(range(0, len(q), size)):
                sl = slice(lo, lo + size)
                chunks.append({"mode": "check", "stream": stream, "chunk": k, "size": len(q[sl]),
                               "q": q[sl], "a": a[sl], "rating": rating[sl], "line": line[sl]})
            log.info("%s stream: %d originals imported from %s", stream, len(q), self.sources.get(stream))
        return chunks

    def make_chunk(self, chunk: Chunk) -> Summary:
        """Generate or check one chunk: its grids, canonical keys, rejected rows and rating sum."""
        stream = chunk["stream"]
        bad: list[tuple[int, int, str]] = []
        if chunk["mode"] == "generate":
            q, a, rating = self.generate_chunk(stream, chunk["chunk"], chunk["size"])
        else:
            q, a, rating, lines = chunk["q"], chunk["a"], chunk["rating"], chunk["line"]
            bad = [(r, int(lines[r]), why) for r, why in self.check(q, a)]
        keys = [self.key(x) for x in q] if self.needs_keys(stream) else None
        return {"mode": chunk["mode"], "stream": stream, "chunk": chunk["chunk"], "n": len(q), "q": q, "a": a,
                "keys": keys, "bad": bad, "rating_sum": int(np.asarray(rating).sum())}

    def originals(self, summaries: list[Summary]) -> Originals:
        """Raise on rejected rows (or count them under --skip-invalid), then keep the first occurrence of each
        canonical key, in stream order then chunk order."""
        self._raise_or_skip(summaries)
        seen: set[bytes] = set()
        kept: dict[str, list[np.ndarray]] = {s: [] for s in STREAM_CODE}
        generated = {s: 0 for s in STREAM_CODE}
        chunks: list[tuple[np.ndarray, np.ndarray]] = []
        duplicates = 0
        for s in sorted(summaries, key=lambda s: (_STREAM_ORDER.index(s["stream"]), s["chunk"])):
            generated[s["stream"]] += s["n"]
            rows = np.setdiff1d(np.arange(s["n"]), [r for r, _, _ in s["bad"]])
            if s["keys"] is not None:
                fresh = rows[first_occurrences([s["keys"][r] for r in rows.tolist()], seen)]
                duplicates += len(rows) - len(fresh)
                rows = fresh.astype(np.int64)
            kept[s["stream"]].append(np.stack([np.full(len(rows), len(chunks)), rows], axis=1))
            chunks.append((s["q"], s["a"]))
        n = sum(s["n"] for s in summaries)
        self.stats.update(duplicates=duplicates, candidates=sum(generated.values()))
        self.stats[f"mean_{self.rating_name}"] = round(sum(s["rating_sum"] for s in summaries) / max(n, 1), 3)
        joined = {s: np.concatenate(v) if v else np.zeros((0, 2), np.int64) for s, v in kept.items()}
        return Originals(joined, generated, chunks)

    def _raise_or_skip(self, summaries: list[Summary]) -> None:
        problems = [(s["stream"], line, why) for s in summaries for _, line, why in s["bad"]]
        if problems and not self.skip_invalid:
            stream, line, why = min(problems, key=lambda p: p[1])
            raise ValueError(f"{self.sources.get(stream, stream)}, line {line}: {why} "
                             f"({len(problems)} such row(s); --skip-invalid drops them)")
        self.stats["rejected"] = len(problems)

    def top_up(self, originals: Originals) -> list[Chunk]:
        """More chunks for each generated stream still short of its target, sized by the share of new unique
        originals in the last round; none after ``MAX_ROUNDS`` or when that share falls under ``MIN_YIELD``."""
        targets = self.targets()
        if targets is None:
            return []
        kept, generated = originals.kept, originals.generated
        last = {s: self.seen.get(s, (0, 0)) for s in kept}
        yield_rate = {s: (len(kept[s]) - last[s][0]) / max(generated[s] - last[s][1], 1) for s in kept}
        self.seen = {s: (len(kept[s]), generated[s]) for s in kept}
        more = []
        for stream, target in targets.items():
            deficit = target - len(kept[stream])
            if deficit > 0 and self.rounds < MAX_ROUNDS and yield_rate[stream] >= MIN_YIELD:
                wanted = min(math.ceil(deficit / yield_rate[stream]), 4 * target)
                more += self._generate(stream, wanted, full_size=True)
            elif deficit > 0:
                log.warning("%s: only %d unique originals of %d wanted (duplicates under symmetry)",
                            stream, len(kept[stream]), target)
        self.rounds += 1
        if more:
            log.info("top-up round %d: %d more chunks to replace duplicates", self.rounds, len(more))
        return more

    # ------------------------------------------------------------------ split and plan
    def split(self, originals: Originals) -> dict[str, np.ndarray]:
        """Per split, the (chunk, row) refs of its originals: each generated stream cut to its target first."""
        targets = self.targets() or {}
        kept = {s: v[:targets.get(s, len(v))] for s, v in originals.kept.items()}
        refs = split_streams(kept, self.test_fraction(), self.seed)
        return {split: (originals, r) for split, r in refs.items()}

    def jobs(self, splits: dict[str, tuple[Originals, np.ndarray]]) -> list[Job]:
        """Jobs of whole originals, at most ``rows_per_file`` rows each (one original at least)."""
        jobs = []
        for split, (originals, refs) in splits.items():
            augs = self.augmentations(split)
            per_job = max(1, self.cfg.rows_per_file // augs)
            self.stats[f"{split}_originals"] = len(refs)
            for lo in range(0, len(refs), per_job):
                q, a = originals.grids(refs[lo:lo + per_job])
                jobs.append({"split": split, "rows": len(q) * augs, "q": q, "a": a, "group_start": lo, "augs": augs})
        self.groups = {s: len(refs) for s, (_, refs) in splits.items()}
        return jobs

    # ------------------------------------------------------------------ stage 2: augment
    def encode_job(self, job: Job):
        """``(inputs, labels, puzzle_id 0, group_id)`` of one job; group ids count originals within the split."""
        q, a = job["q"], job["a"]
        groups = job["group_start"] + np.arange(len(q), dtype=np.int64)
        inputs, labels = self.encode(q, a, job["split"], groups, job["augs"])
        return inputs, labels, np.zeros(len(inputs), np.int32), np.repeat(groups, job["augs"])

    def aug_rng(self, split: str, group: int) -> np.random.Generator:
        """The augmentation stream of one original: the same whatever job or worker handles it."""
        return np.random.default_rng(derive_seed(self.seed, _AUG_SALT, SPLIT_CODE[split], int(group)))

    def metadata(self) -> dict[str, Any]:
        """One blank puzzle identifier, originals per split, and the build's stats."""
        return {"num_puzzle_identifiers": 1, "groups": self.groups, "stats": self.stats}
