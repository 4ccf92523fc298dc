"""Errors of datasets on disk, raised before any training (by a dataset's registered ``verify``)."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset on disk is missing or malformed: ``path`` and what is wrong (and how to fix it)."""

    def __init__(self, path, message: str) -> None:
        self.path, self.message = path, message
        super().__init__(f"{path}: {message}")
