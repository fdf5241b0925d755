"""Token columns of the dataset's Parquet schema: binary values of exactly ``seq_len`` uint8 tokens each.

Imports only numpy and pyarrow: Ray Data's read tasks (pipeline.train.share) import it in every task process.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def byte_matrix(column: Any, seq_len: int, name: str) -> np.ndarray:
    """(rows, seq_len) uint8 from a pyarrow binary array or chunked array (one copy at most, no Python objects)."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, seq_len), np.uint8)
    if arr.null_count:
        raise ValueError(f"column {name}: {arr.null_count} null values")
    wide = pa.types.is_large_binary(arr.type)
    if not (wide or pa.types.is_binary(arr.type)):
        raise ValueError(f"column {name}: expected binary values, got {arr.type}")
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, np.int64 if wide else np.int32)[arr.offset:arr.offset + len(arr) + 1]
    if not (np.diff(offsets) == seq_len).all():
        raise ValueError(f"column {name}: every value must hold seq_len={seq_len} bytes")
    return np.frombuffer(data_buf, np.uint8)[offsets[0]:offsets[-1]].reshape(-1, seq_len)


def token_problem(inputs: np.ndarray, labels: np.ndarray, puzzle_ids: np.ndarray, vocab_size: int,
                  num_puzzle_identifiers: int | None = None) -> tuple[int, str] | None:
    """The first row whose tokens or puzzle id the model cannot embed, as (row index, what is wrong), or None.
    ``inputs`` and ``labels`` are the (rows, seq_len) uint8 token matrices as stored (label 0: no target)."""
    for name, tokens in (("inputs", inputs), ("labels", labels)):
        bad = np.flatnonzero((tokens >= vocab_size).any(axis=1)) if len(tokens) else []
        if len(bad):
            row = int(bad[0])
            position = int(np.flatnonzero(tokens[row] >= vocab_size)[0])
            return row, (f"{name} token {int(tokens[row, position])} at position {position} is outside the "
                         f"vocabulary (vocab_size {vocab_size})")
    if num_puzzle_identifiers is not None and len(puzzle_ids):
        ids = np.asarray(puzzle_ids)
        bad = np.flatnonzero((ids < 0) | (ids >= num_puzzle_identifiers))
        if len(bad):
            return int(bad[0]), (f"puzzle_id {int(ids[bad[0]])} is outside [0, {num_puzzle_identifiers}) "
                                 f"(num_puzzle_identifiers)")
    return None
