"""The errors of :mod:`logloss.data`: each message names the file or dataset, the rule and a fix.

All derive from :class:`DataError`, a ``ValueError``, so the command line prints them as one line.
"""

from __future__ import annotations


class DataError(ValueError):
    """A dataset could not be read, found or downloaded."""


class IDXFormatError(DataError):
    """A file is not a valid IDX file (bad magic, dtype code, dimensions, length or gzip data)."""


class ChecksumError(DataError):
    """A downloaded file's SHA-256 differs from the published one."""


class DownloadError(DataError):
    """No mirror delivered a verified copy of a file."""


class DatasetNotFoundError(DataError):
    """A dataset is in none of the places searched and could not (or may not) be downloaded."""
