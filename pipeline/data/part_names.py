"""File names of the Parquet parts ``write_parquet`` writes (a module of its own: it imports Ray Data)."""

from __future__ import annotations

from ray.data.datasource import FilenameProvider


class PartNames(FilenameProvider):
    """``part-<write task>-<write uuid>-<i>.parquet``: unique per build; the order comes from metadata.json."""

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"part-{task_index:05d}-{write_uuid}"
