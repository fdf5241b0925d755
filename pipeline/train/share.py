"""A Train worker's share of the training split as compact arrays: what Ray Data's read tasks run (so this module
imports only numpy and pyarrow: every read task's process imports it) and how the worker drains its share."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.data.tokens import byte_matrix, token_problem

Rows = dict[str, np.ndarray]


def compact_rows(table: Any, lo: int, hi: int, seq_len: int, vocab: tuple[int, int] | None = None,
                 where: str = "the dataset") -> Rows:
    """The rows of a pyarrow table with lo <= example_id < hi, as compact arrays. With ``vocab`` (vocab_size,
    num_puzzle_identifiers) a token or puzzle id the model cannot embed is a ValueError naming the example_id
    (``where`` names the dataset): the parts were checked when the run started, so the dataset changed since."""
    import pyarrow.compute as pc

    ids = table.column("example_id")
    table = table.filter(pc.and_(pc.greater_equal(ids, lo), pc.less(ids, hi)))
    rows = {"inputs": byte_matrix(table.column("inputs"), seq_len, "inputs"),
            "labels": byte_matrix(table.column("labels"), seq_len, "labels"),
            "puzzle_ids": table.column("puzzle_id").to_numpy().astype(np.int32),
            "example_ids": table.column("example_id").to_numpy().astype(np.int64)}
    if vocab is not None:
        found = token_problem(rows["inputs"], rows["labels"], rows["puzzle_ids"], *vocab)
        if found is not None:
            row, what = found
            raise ValueError(f"{where}: example_id {int(rows['example_ids'][row])}: {what} (the dataset changed after "
                             f"the run checked it? `hrm data check` names the part)")
    return rows


def collect_share(iterator, lo: int, hi: int) -> Rows:
    """Drain a worker's share (a Ray DataIterator of :func:`compact_rows` batches) into arrays sorted by
    example_id; fails unless it holds exactly the ids [lo, hi) once each. Drops ``example_ids``."""
    batches = [b for b in iterator.iter_batches(batch_size=None, batch_format="numpy") if len(b["example_ids"])]
    if not batches:
        raise ValueError(f"the share of example ids [{lo}, {hi}) is empty")
    rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    order = np.argsort(rows["example_ids"], kind="stable")
    ids = rows.pop("example_ids")[order]
    if len(ids) != hi - lo or not np.array_equal(ids, np.arange(lo, hi)):
        raise ValueError(f"the share should hold example ids [{lo}, {hi}) once each; it holds {len(ids)} rows "
                         f"(ids {ids[:1].tolist()}..{ids[-1:].tolist()})")
    return {k: np.ascontiguousarray(v[order]) for k, v in rows.items()}
