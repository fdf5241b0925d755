"""Training ingest through Ray Train's dataset sharding: each worker reads only its contiguous share of the split.

:class:`ShardedTrainData` is the trainer's ``dataset_config``: Ray Train calls its ``configure`` once per run (in
its dataset manager) and hands world rank r the r-th iterator. Worker r's Ray Dataset reads only the Parquet parts
whose ``example_id`` range overlaps the worker's ids (pipeline.train.batches.worker_range) and drops the rows
outside. The worker drains it once into compact arrays (:func:`collect_share`: token bytes, 2·seq_len + 4 bytes a
row), sorted by ``example_id`` so Ray's block order does not matter (pipeline.train.share, which Ray Data's read
tasks import: numpy and pyarrow only), and permutes it in memory every epoch. A small split (at most
``ingest_in_worker_mib`` of Parquet) is read by each worker itself instead (:class:`LocalShare`, the same parts and
checks): no Dataset is given to the trainer then.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from ray.train import DataConfig

from pipeline.train.batches import worker_range
from pipeline.train.share import compact_rows

log = logging.getLogger(__name__)
COLUMNS = ["inputs", "labels", "puzzle_id", "example_id"]


@dataclass(frozen=True)
class Part:
    path: str  # a local path or a URI, as Ray Data reads it
    first: int | None  # smallest and largest example_id (None: the footer has no statistics)
    last: int | None

    def overlaps(self, lo: int, hi: int) -> bool:
        return self.first is None or self.last is None or (self.first < hi and self.last >= lo)


def _footer_range(location: str) -> Part:
    """A part's example_id range from its Parquet footer's statistics (None when it has none)."""
    import pyarrow.parquet as pq

    from pipeline.core import storage

    fs, path = storage.filesystem(location)
    meta = pq.ParquetFile(path, filesystem=fs).metadata
    if "example_id" not in meta.schema.names:
        raise ValueError(f"{location}: no example_id column")
    column = meta.schema.names.index("example_id")
    lows, highs = [], []
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(column).statistics
        if stats is None or not stats.has_min_max:
            return Part(location, None, None)
        lows.append(stats.min)
        highs.append(stats.max)
    return Part(location, min(lows), max(highs)) if lows else Part(location, None, None)


def list_parts(meta, split: str) -> list[Part]:
    """The split's Parquet parts (pipeline.data.meta.part_files) with their example_id ranges: from
    metadata.json's part list when it gives them ("rows", "first"), else from the parts' footers."""
    from pipeline.data.meta import part_files

    files = part_files(meta, split)
    if not files:
        raise FileNotFoundError(f"{meta.path}: the {split} split has no Parquet parts")
    listed = (meta.files or {}).get(split) or []
    if len(listed) == len(files) and all("rows" in p and "first" in p for p in listed):
        return [Part(f, int(p["first"]), int(p["first"]) + int(p["rows"]) - 1) for f, p in zip(files, listed)]
    return [_footer_range(f) for f in files]


def overlapping(parts: list[Part], lo: int, hi: int) -> list[str]:
    """The parts a reader of example ids [lo, hi) must open."""
    return [p.path for p in parts if p.overlaps(lo, hi)]


def reads_in_workers(meta, limit_mib: float, split: str = "train") -> bool:
    """Whether each worker reads its share of ``split`` itself (:class:`LocalShare`): when metadata.json lists the
    split's parts with their sizes and they add up to at most ``limit_mib`` (TrainConfig.ingest_in_worker_mib)."""
    listed = (meta.files or {}).get(split) or []
    if not listed or any("bytes" not in p for p in listed):
        return False
    return sum(int(p["bytes"]) for p in listed) <= limit_mib * 2**20


@dataclass(frozen=True)
class LocalShare:
    """The rows lo <= example_id < hi read in this process with pyarrow, part by part (only the parts that overlap
    the range), each part's rows checked and made compact on the way in as a Ray Data read task does
    (:func:`compact_rows`): what :func:`pipeline.train.share.collect_share` drains, like Ray Data's iterator."""

    parts: list[Part]
    lo: int
    hi: int
    seq_len: int
    vocab: tuple[int, int] | None = None
    where: str = "the dataset"

    def iter_batches(self, batch_size=None, batch_format="numpy"):
        import pyarrow.parquet as pq

        from pipeline.core import storage

        for location in overlapping(self.parts, self.lo, self.hi):
            fs, path = storage.filesystem(location)
            table = pq.read_table(path, columns=COLUMNS, filesystem=fs)
            yield compact_rows(table, self.lo, self.hi, self.seq_len, self.vocab, self.where)


def read_range(parts: list[Part], lo: int, hi: int, seq_len: int, vocab: tuple[int, int] | None = None,
               where: str = "the dataset"):
    """A Ray Dataset of the rows lo <= example_id < hi: only the parts that overlap the range are read; with
    ``vocab`` every batch's tokens are checked on the way in (pipeline.train.share.compact_rows)."""
    import ray.data

    files = overlapping(parts, lo, hi)
    if not files:
        raise ValueError(f"no Parquet part holds example ids [{lo}, {hi})")
    ds = ray.data.read_parquet(files, columns=COLUMNS, override_num_blocks=len(files))
    return ds.map_batches(compact_rows, batch_format="pyarrow", batch_size=None,
                          fn_kwargs={"lo": lo, "hi": hi, "seq_len": seq_len, "vocab": vocab, "where": where})


class ShardedTrainData(DataConfig):
    """Ray Train's ``dataset_config`` for the ``train`` dataset: world rank r gets a Dataset of its own share only
    (:func:`pipeline.train.batches.worker_range` of ``shards`` contiguous shards). Build it with :meth:`for_split`;
    pass :meth:`whole` as ``datasets={"train": ...}`` (its name is what ``get_dataset_shard`` asks for)."""

    def __init__(self, *, parts: list[Part], rows: int, seq_len: int, shards: int,
                 vocab: tuple[int, int] | None = None, where: str = "the dataset"):
        super().__init__(datasets_to_split="all")
        self.parts, self.rows, self.seq_len, self.shards = parts, rows, seq_len, shards
        self.vocab, self.where = vocab, where  # checked on the way in (vocab_size, num_puzzle_identifiers)

    @classmethod
    def for_split(cls, meta, *, shards: int, split: str = "train") -> "ShardedTrainData":
        """For ``split`` of the dataset of ``meta`` (pipeline.data.meta.DatasetMeta)."""
        return cls(parts=list_parts(meta, split), rows=meta.counts[split], seq_len=meta.seq_len, shards=shards,
                   vocab=(meta.vocab_size, meta.num_puzzle_identifiers), where=str(meta.path))

    def whole(self):
        """The whole split as one lazy Dataset (never executed: :meth:`configure` gives each worker its share)."""
        return read_range(self.parts, 0, self.rows, self.seq_len)

    def share(self, world: int, rank: int):
        """Worker ``rank``'s Dataset: its example ids only."""
        lo, hi = worker_range(self.rows, self.shards, world, rank)
        return read_range(self.parts, lo, hi, self.seq_len, self.vocab, self.where)

    def configure(self, datasets: dict[str, Any], world_size: int, worker_handles=None, worker_node_ids=None,
                  **kwargs) -> list[dict[str, Any]]:
        output: list[dict[str, Any]] = [{} for _ in range(world_size)]
        for name in datasets:
            if name != "train":
                raise ValueError(f"ShardedTrainData serves only the 'train' dataset, got {name!r}")
            for rank in range(world_size):  # list index = world rank (ray.train v2 DatasetManager)
                ds = self.share(world_size, rank)
                ds.set_name(f"train-share-{rank}")
                ds.context.execution_options = self.default_ingest_options()  # public; no per-dataset options
                ds.context.enable_progress_bars = False  # workers' bars would only clutter the driver's console
                output[rank][name] = ds.iterator()
        return output


def read_share(cfg, meta, rank: int, world: int, in_worker: bool = False) -> Any:
    """This worker's share of the training split, read once — through Ray Train's dataset shard
    (:class:`ShardedTrainData`), or by this process itself for a small split (``in_worker``: LocalShare) — as the
    batches of every epoch."""
    from pipeline.train.batches import ShardedBatches
    from pipeline.train.share import collect_share

    rows = meta.counts["train"]
    lo, hi = worker_range(rows, cfg.shards, world, rank)
    started = time.perf_counter()
    if in_worker:
        share = collect_share(LocalShare(list_parts(meta, "train"), lo, hi, meta.seq_len,
                                         (meta.vocab_size, meta.num_puzzle_identifiers), str(meta.path)), lo, hi)
        how = "in this process"
    else:
        import ray.train

        iterator = ray.train.get_dataset_shard("train")  # a barrier: rank 0 has Train configure every worker's share
        got = time.perf_counter()
        share = collect_share(iterator, lo, hi)
        how = f"through Ray Data, {got - started:.1f} s of it waiting for the shard"
    log.info("worker %d read its share, example ids [%d, %d) (%d rows), in %.1f s (%s)", rank, lo, hi, hi - lo,
             time.perf_counter() - started, how)
    return ShardedBatches(share, n=rows, global_batch=cfg.global_batch_size, shards=cfg.shards, rank=rank,
                          world=world, seed=cfg.seed)
