"""The errors of :mod:`logloss.data`: each message names the file or dataset, the rule and a fix.

All derive from :class:`DataError`, a ``ValueError``, so the command line prints them as one line.
An ``IDXFormatError`` depends only on the file's name and bytes, and a damaged file is refused at
bounded cost, so a caller (e.g. a server) may remember a failed load and raise it again.
"""

from __future__ import annotations


class DataError(ValueError):
    """A dataset could not be read, found or downloaded.

    ``str(error)`` is one line; ``error.details`` (possibly empty) holds the long story, e.g. every
    place searched or every download attempt, which ``logloss ... --verbose`` prints below it.
    """

    def __init__(self, message: str, *, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class IDXFormatError(DataError):
    """A file is not a valid IDX file (bad magic, dtype code, dimensions, length or gzip data)."""


class DownloadError(DataError):
    """No mirror delivered a verified copy of a file."""


class ChecksumError(DownloadError):
    """No mirror delivered a verified copy, and some delivered bytes whose SHA-256 differs from
    the published one."""


class DatasetNotFoundError(DataError):
    """A dataset is in none of the places searched and could not (or may not) be downloaded."""
