"""Stage 1 of ``hrm data build``: where originals are made (generated, or imported and checked), on Ray Data.

``make_originals`` runs rounds of ``from_items(chunks) → map_batches(make_chunk)`` (the dataset named
``<task> originals``) until the builder needs no more chunks; each chunk comes back to the driver as a summary
holding its originals. No staging files: the work runs wherever Ray puts it. A chunk is generated from its own
seed or checked as it was read, so the summaries never depend on the number of workers.
"""

from __future__ import annotations

import logging
import pickle
import time
from typing import Any

import numpy as np

from pipeline.core.progress import Heartbeat, stage_line
from pipeline.data.builder import Builder, Chunk, Summary
from pipeline.data.builders import make_builder
from pipeline.data.ray_items import items_dataset, ordered, worker_pool

log = logging.getLogger(__name__)


def make_originals(builder: Builder, cfg, skip_invalid: bool, workers: int) -> Any:
    """The builder's originals for ``cfg`` (``builder.originals`` of every summary): the first chunks, then
    top-up rounds while ``builder.top_up`` asks for more."""
    summaries: list[Summary] = []
    chunks = builder.first_chunks()
    while True:
        summaries += run_chunks(f"{cfg.task} originals", chunks, cfg, skip_invalid, workers)
        originals = builder.originals(summaries)
        chunks = builder.top_up(originals)
        if not chunks:
            return originals


def make_chunk(batch: dict[str, np.ndarray], cfg, skip_invalid: bool) -> dict[str, np.ndarray]:
    """The Ray Data UDF of stage 1: each pickled chunk → its pickled summary (``Builder.make_chunk``)."""
    builder = make_builder(cfg, skip_invalid)
    out = [pickle.dumps(builder.make_chunk(pickle.loads(spec)), protocol=5) for spec in batch["spec"]]
    return {"i": np.asarray(batch["i"], np.int64), "summary": np.array(out, dtype=object)}


def run_chunks(name: str, chunks: list[Chunk], cfg, skip_invalid: bool, workers: int) -> list[Summary]:
    """One round of stage 1 on Ray Data (dataset ``name``, ``workers`` tasks): the summaries in chunk order."""
    if not chunks:
        return []
    t0 = time.perf_counter()
    log.info("%s: %d chunks on %d workers", name, len(chunks), workers)
    ds = items_dataset(name, chunks).map_batches(
        make_chunk, fn_kwargs={"cfg": cfg, "skip_invalid": skip_invalid}, batch_size=1, batch_format="numpy",
        compute=worker_pool(workers), num_cpus=1)
    out: list[Any] = [None] * len(chunks)
    done = [0]
    with ordered(), Heartbeat(lambda elapsed: stage_line(name, done[0], len(chunks), "chunks", elapsed)):
        for row in ds.iter_rows():
            out[int(row["i"])] = pickle.loads(row["summary"])
            done[0] += 1
    missing = [i for i, r in enumerate(out) if r is None]
    if missing:
        raise RuntimeError(f"{name}: no result for chunks {missing[:5]}")
    log.info("%s: %d chunks done in %.1f s", name, len(chunks), time.perf_counter() - t0)
    return out
