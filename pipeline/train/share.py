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
    """Drain a worker's share (a Ray DataIterator of :func:`compact_rows` batches) into arrays ordered by
    example_id, each batch written into its place as it arrives: the share is held once while it is read (a list
    of batches, concatenated, then reordered, peaked at 3x it: a worker of ARC-AGI-1 alone, 6.2 GB of share, grew
    past 18 GB and was killed for memory). Fails unless it holds exactly the ids [lo, hi) once each. Drops
    ``example_ids``."""
    n = hi - lo
    out: Rows | None = None
    seen = np.zeros(n, dtype=bool)
    rows, strays, first, last = 0, 0, None, None
    for batch in iterator.iter_batches(batch_size=None, batch_format="numpy"):
        ids = batch["example_ids"]
        if not len(ids):
            continue
        first = int(ids[0]) if first is None else first
        last, rows = int(ids[-1]), rows + len(ids)
        at = ids - lo
        inside = (at >= 0) & (at < n)
        strays += int((~inside).sum())
        at = at[inside]
        if out is None:
            out = {k: np.empty((n, *v.shape[1:]), v.dtype) for k, v in batch.items() if k != "example_ids"}
        strays += int(seen[at].sum()) + len(at) - len(np.unique(at))  # ids seen before, in this batch or earlier
        seen[at] = True
        for key, array in out.items():
            array[at] = batch[key][inside]
    if out is None:
        raise ValueError(f"the share of example ids [{lo}, {hi}) is empty")
    if strays or not seen.all():
        raise ValueError(f"the share should hold example ids [{lo}, {hi}) once each; it holds {rows} rows "
                         f"(ids [{first}]..[{last}], {strays} outside the range or repeated, {n - int(seen.sum())} "
                         f"missing)")
    return out
