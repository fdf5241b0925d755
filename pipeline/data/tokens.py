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
