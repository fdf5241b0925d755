"""Builders for tasks made of fixed-size (question, answer) grids: Sudoku and Maze.

Stage 1 (Ray Data, ``make_originals``) makes *originals* in fixed-size chunks -- generated from
``(seed, stream, chunk)``, or read from a CSV by the driver and checked in parallel; each chunk sends back a summary
with its originals (canonical keys, problems, stats). No staging files: the work runs wherever Ray puts it. The driver then de-duplicates by canonical form (first occurrence wins, in chunk
order), tops a generated stream up with more chunks when duplicates left it short, splits, and cuts the work into
jobs of whole originals, each carrying its originals. Stage 2 (Ray Data, ``augment_and_encode`` → ``write_parquet``)
encodes and augments each job into the rows of one Parquet part.

Streams: ``all`` (split by the driver into train/test), ``train`` and ``test`` (already split).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.data.stages import derive_seed

log = logging.getLogger(__name__)

STREAM_CODE = {"all": 0, "train": 1, "test": 2}
SPLIT_CODE = {"train": 1, "test": 2}
_SPLIT_SALT, _AUG_SALT = 101, 202
MAX_ROUNDS = 8
MIN_YIELD = 0.01  # top-up stops when under 1% of the last round's candidates were new


class OriginalsBuilder:
    """Subclasses set ``task`` and implement ``generate_chunk``, ``key``, ``check``, ``read_stream``, ``encode``."""

    task: Any
    rating_name = "rating"

    def __init__(self, cfg, skip_invalid: bool = False):
        self.cfg, self.sec, self.seed, self.skip_invalid = cfg, cfg.section, cfg.seed, skip_invalid
        self.sources: dict[str, str] = {}  # stream -> CSV path (imports)
        self.next_chunk: dict[str, int] = {}
        self.rounds = 0
        self._seen: dict[str, tuple[int, int]] = {}  # stream -> (kept, generated) after the last round
        self.stats: dict[str, Any] = {"skipped": 0, "duplicates": 0}

    # ------------------------------------------------------------------ subclass hooks
    def targets(self) -> dict[str, int] | None:
        """Generated originals wanted per stream (generate mode), or None for an import."""
        raise NotImplementedError

    def needs_keys(self, stream: str) -> bool:
        return True

    def generate_chunk(self, stream: str, chunk: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def key(self, question: np.ndarray) -> bytes:
        raise NotImplementedError

    def check(self, q: np.ndarray, a: np.ndarray) -> list[tuple[int, str]]:
        """(row, why) of originals to reject on import (e.g. non-unique Sudoku)."""
        return []

    def read_stream(self, stream: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Import: (q, a, rating, line) of one stream, validated row by row."""
        raise NotImplementedError

    def import_streams(self) -> list[str]:
        raise NotImplementedError

    def encode(self, q: np.ndarray, a: np.ndarray, split: str, groups: np.ndarray, augs: int):
        """(inputs, labels) uint8 (len(q) * augs, L); variant 0 of each original first, then its augmentations."""
        raise NotImplementedError

    def augmentations(self, split: str) -> int:
        raise NotImplementedError

    def chunk_size(self) -> int:
        raise NotImplementedError

    # ------------------------------------------------------------------ stage 1
    def _gen_items(self, stream: str, count: int, full_size: bool) -> list[dict[str, Any]]:
        size = self.chunk_size()
        items = []
        start = self.next_chunk.get(stream, 0)
        n_chunks = math.ceil(count / size)
        for k in range(n_chunks):
            n = size if full_size else min(size, count - k * size)
            items.append({"mode": "generate", "stream": stream, "chunk": start + k, "size": n})
        self.next_chunk[stream] = start + n_chunks
        return items

    def prepare(self) -> list[dict[str, Any]]:
        """The first stage-1 items: chunks to generate, or imported slices to check (carrying their rows)."""
        targets = self.targets()
        if targets is not None:
            return [it for s, n in targets.items() if n > 0 for it in self._gen_items(s, n, full_size=False)]
        items = []
        for stream in self.import_streams():
            q, a, rating, line = self.read_stream(stream)
            size = self.sec.import_chunk
            for k, lo in enumerate(range(0, len(q), size)):
                sl = slice(lo, lo + size)
                items.append({"mode": "check", "stream": stream, "chunk": k, "size": len(q[sl]),
                              "q": q[sl], "a": a[sl], "rating": rating[sl], "line": line[sl]})
            log.info("%s stream: %d originals imported from %s", stream, len(q), self.sources.get(stream))
        return items

    def run_item(self, item: dict[str, Any]) -> dict[str, Any]:
        """Worker side of stage 1."""
        stream = item["stream"]
        bad: list[tuple[int, int, str]] = []
        if item["mode"] == "generate":
            q, a, rating = self.generate_chunk(stream, item["chunk"], item["size"])
        else:
            q, a, rating, lines = item["q"], item["a"], item["rating"], item["line"]
            bad = [(r, int(lines[r]), why) for r, why in self.check(q, a)]
        keys = [self.key(x) for x in q] if self.needs_keys(stream) else None
        return {"mode": item["mode"], "stream": stream, "chunk": item["chunk"], "n": len(q), "q": q, "a": a,
                "keys": keys, "bad": bad, "rating_sum": int(np.asarray(rating).sum())}

    # ------------------------------------------------------------------ driver: dedup, top-up, split, jobs
    def plan(self, summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | tuple[str, list]:
        """More stage-1 items (``("more", items)``) or the list of stage-2 jobs."""
        self._raise_or_skip(summaries)
        kept, generated = self._dedup(summaries)
        # share of new unique originals among the last round's candidates: stop when it runs dry
        last = {s: self._seen.get(s, (0, 0)) for s in kept}
        yield_rate = {s: (len(kept[s]) - last[s][0]) / max(generated[s] - last[s][1], 1)
                      for s in kept}
        self._seen = {s: (len(kept[s]), generated[s]) for s in kept}
        targets = self.targets()
        if targets is not None:
            more = []
            for stream, target in targets.items():
                deficit = target - len(kept[stream])
                if deficit > 0 and self.rounds < MAX_ROUNDS and yield_rate[stream] >= MIN_YIELD:
                    wanted = min(math.ceil(deficit / yield_rate[stream]), 4 * target)
                    more += self._gen_items(stream, wanted, full_size=True)
                elif deficit > 0:
                    log.warning("%s: only %d unique originals of %d wanted (duplicates under symmetry)",
                                stream, len(kept[stream]), target)
            self.rounds += 1
            if more:
                log.info("top-up round %d: %d more chunks to replace duplicates", self.rounds, len(more))
                return ("more", more)
            kept = {s: v[:targets.get(s, len(v))] for s, v in kept.items()}
        splits = self._split(kept)
        return self._jobs(splits)

    def _raise_or_skip(self, summaries) -> None:
        problems = [(s["stream"], line, why) for s in summaries for _, line, why in s["bad"]]
        if problems and not self.skip_invalid:
            stream, line, why = min(problems, key=lambda p: p[1])
            raise ValueError(f"{self.sources.get(stream, stream)}, line {line}: {why} "
                             f"({len(problems)} such row(s); --skip-invalid drops them)")
        self.stats["rejected"] = len(problems)

    def _dedup(self, summaries):
        """Per stream, (file index, row) int64 arrays of the originals kept, in chunk order; candidates per stream."""
        seen: set[bytes] = set()
        kept: dict[str, list[np.ndarray]] = {s: [] for s in STREAM_CODE}
        generated = {s: 0 for s in STREAM_CODE}
        self.chunks: list[tuple[np.ndarray, np.ndarray]] = []
        ordered = sorted(summaries, key=lambda s: (("train", "all", "test").index(s["stream"]), s["chunk"]))
        duplicates = 0
        for s in ordered:
            generated[s["stream"]] += s["n"]
            rows = np.setdiff1d(np.arange(s["n"]), [r for r, _, _ in s["bad"]])
            if s["keys"] is not None:
                fresh = []
                for r in rows.tolist():
                    key = s["keys"][r]
                    if key not in seen:
                        seen.add(key)
                        fresh.append(r)
                duplicates += len(rows) - len(fresh)
                rows = np.asarray(fresh, np.int64)
            kept[s["stream"]].append(np.stack([np.full(len(rows), len(self.chunks)), rows], axis=1))
            self.chunks.append((s["q"], s["a"]))
        self.stats["duplicates"] = duplicates
        self.stats["candidates"] = sum(generated.values())
        n = sum(s["n"] for s in summaries)
        self.stats[f"mean_{self.rating_name}"] = round(sum(s["rating_sum"] for s in summaries) / max(n, 1), 3)
        return {s: np.concatenate(v) if v else np.zeros((0, 2), np.int64) for s, v in kept.items()}, generated

    def _split(self, kept) -> dict[str, np.ndarray]:
        pool = kept["all"]
        n_test = round(self.sec.test_fraction * len(pool)) if len(pool) else 0
        is_test = np.zeros(len(pool), bool)
        is_test[np.random.default_rng(derive_seed(self.seed, _SPLIT_SALT)).permutation(len(pool))[:n_test]] = True
        return {"train": np.concatenate([kept["train"], pool[~is_test]]),
                "test": np.concatenate([kept["test"], pool[is_test]])}

    def _jobs(self, splits) -> list[dict[str, Any]]:
        jobs = []
        for split, refs in splits.items():
            augs = self.augmentations(split)
            per_job = max(1, self.cfg.rows_per_file // augs)
            self.stats[f"{split}_originals"] = len(refs)
            for lo in range(0, len(refs), per_job):
                part = refs[lo:lo + per_job]
                q = np.stack([self.chunks[f][0][r] for f, r in part.tolist()])
                a = np.stack([self.chunks[f][1][r] for f, r in part.tolist()])
                jobs.append({"split": split, "rows": len(part) * augs, "q": q, "a": a, "group_start": lo,
                             "augs": augs})
        self.groups = {s: len(v) for s, v in splits.items()}
        return jobs

    # ------------------------------------------------------------------ stage 2
    def run_job(self, job: dict[str, Any]):
        """Worker side of stage 2: (inputs, labels, puzzle_id, group_id) of one job."""
        q, a = job["q"], job["a"]
        groups = job["group_start"] + np.arange(len(q), dtype=np.int64)
        inputs, labels = self.encode(q, a, job["split"], groups, job["augs"])
        group_id = np.repeat(groups, job["augs"])
        return inputs, labels, np.zeros(len(inputs), np.int32), group_id

    def aug_rng(self, split: str, group: int) -> np.random.Generator:
        """The augmentation stream of one original: the same whatever job or worker handles it."""
        return np.random.default_rng(derive_seed(self.seed, _AUG_SALT, SPLIT_CODE[split], int(group)))

    def metadata(self) -> dict[str, Any]:
        return {"num_puzzle_identifiers": 1, "groups": self.groups, "stats": self.stats}
