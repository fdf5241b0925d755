"""The paper's puzzle CSVs (``source,question,answer,rating``), read one physical line per record.

Its records never span lines (a question is a fixed-length string), so each line is parsed on its own: a malformed
quote or an oversized field is one bad row, reported with its line number, and never swallows the rows after it
(the ``csv`` module would read on to the next quote, and stops at 131,072 characters a field with an exception).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

MAX_LINE = 65_536  # characters; the largest real row (a 30×30 maze: two 900-character grids) is far below


def csv_header(path: str | Path, expected: list[str] | None = None) -> list[str]:
    """The header row, stripped; ``expected`` (exact columns) or a ValueError naming the file."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        header = _parse(f.readline().rstrip("\r\n"))
    if isinstance(header, str) or not header:
        raise ValueError(f"{path}, line 1: expected a CSV header, got {'nothing' if not header else header}")
    header = [h.strip() for h in header]
    if expected is not None and header != expected:
        raise ValueError(f"{path}, line 1: expected header {','.join(expected)!r}, got {','.join(header)!r}")
    return header


def csv_records(path: str | Path) -> Iterator[tuple[int, list[str] | str]]:
    """``(line number, fields)`` for each non-empty line after the header, or ``(line number, problem)`` for a
    line that is not one CSV record."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        f.readline()  # the header (csv_header checks it)
        for number, text in enumerate(f, start=2):
            text = text.rstrip("\r\n")
            if text.strip():
                yield number, _parse(text)


def _parse(text: str) -> list[str] | str:
    if len(text) > MAX_LINE:
        return f"line has {len(text):,} characters, more than a record of this format can ({MAX_LINE:,})"
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as err:
        return f"malformed CSV ({err}): check the quotes"
    return rows[0] if rows else []


__all__ = ["csv_header", "csv_records", "MAX_LINE"]
