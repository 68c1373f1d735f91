"""Errors that reach the user as one plain paragraph, never as a traceback."""

from __future__ import annotations


class DataFormatError(ValueError):
    """A source file cannot be read into the canonical tables.

    The message is one paragraph for a person: which file, which line or column, what was found, and how to
    fix it. The CLI prints it as is and exits non-zero.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        super().__init__(message)


class DatasetNotAvailableError(RuntimeError):
    """A downloadable dataset is not on disk and cannot be fetched (offline, or the checksum failed)."""


class SplitError(ValueError):
    """A split that cannot be made from this dataset with these settings (one paragraph, exit 2 in the CLI).

    For example a ``temporal`` split of a dataset without timestamps, or a ``cold-users`` split whose
    fraction leaves fewer than two new users.
    """
