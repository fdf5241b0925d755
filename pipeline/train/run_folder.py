"""A training run's folder under ``storage_path``: a local (or mounted) folder, or an object-store prefix (``s3://``,
``gs://``) that every node of a cluster reaches without a shared mount.

It holds Ray Train's run (checkpoints and the snapshot a restart resumes from) and the MLflow run id that ``--resume``
reads. Object stores are reached through pyarrow's filesystems with the usual environment (``AWS_*``,
``AWS_ENDPOINT_URL`` for an S3-compatible server; Google's default credentials), as Ray Train itself reaches them.
"""

from __future__ import annotations


def location_problems(path: str, what: str = "storage_path") -> list[str]:
    """Why ``path`` cannot hold runs: empty, or a URI of a store pyarrow (and so Ray Train) cannot write to."""
    from pipeline.core import storage

    if not path:
        return [f"{what} must not be empty"]
    try:
        storage.normalize(path)
    except ValueError as err:
        return [f"{what} {err}"]
    return []


class RunFolder:
    """``<storage_path>/<name>``, local or remote (through pipeline.core.storage); small text files in it and its listing."""

    def __init__(self, storage_path: str, name: str):
        from pipeline.core import storage

        self.parent = storage.normalize(storage_path)  # absolute locally: Ray's workers run in another cwd
        self.name = name
        self.uri = storage.join(self.parent, name)

    def __str__(self) -> str:
        return self.uri

    def names(self) -> list[str]:
        """The entries directly inside the folder ([] when it does not exist)."""
        from pipeline.core import storage

        return storage.listdir(self.uri)

    def exists(self) -> bool:
        """A local folder that exists (even empty); a remote prefix with objects under it."""
        from pipeline.core import storage

        return storage.exists(self.uri)

    def read(self, name: str) -> str | None:
        """The text of the file ``name`` in the folder, None when it is absent."""
        from pipeline.core import storage

        location = storage.join(self.uri, name)
        return storage.read_text(location) if storage.is_file(location) else None

    def write(self, name: str, text: str) -> None:
        """Write the file ``name`` whole (a renamed temp file locally, one PUT on an object store)."""
        from pipeline.core import storage

        storage.make_dirs(self.uri)
        storage.write_text(storage.join(self.uri, name), text)

    def remove(self) -> None:
        """The folder and everything in it (every object under the prefix)."""
        from pipeline.core import storage

        storage.delete(self.uri)


__all__ = ["RunFolder", "location_problems"]
