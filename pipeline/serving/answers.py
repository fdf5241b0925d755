"""The served model's answers read back for people: its JSON grid as text (``hrm solve``, the demo)."""

from __future__ import annotations

import json


def show_grid(grid_json: str) -> str:
    """The pyfunc's JSON grid -> text, one row per line (cells spaced when they are numbers)."""
    grid = json.loads(grid_json)
    if grid is None:
        return "(no well-formed grid)"
    return "\n".join((" " if row and not isinstance(row[0], str) else "").join(str(c) for c in row) for row in grid)
