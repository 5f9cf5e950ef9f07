"""Datasets for logloss: MNIST and its siblings read from IDX files, downloaded safely.

Public names (one module per idea):

- :mod:`~logloss.data.idx`: ``read_idx``, ``write_idx``, ``parse_idx`` and ``IDXFormatError``.
- :mod:`~logloss.data.datasets`: ``load_dataset``, ``split_train_validation``.
- :mod:`~logloss.data.locations`: ``find_dataset`` (where a dataset is, without downloading),
  ``resolve_data_dir``, ``user_cache_dir``.
- :mod:`~logloss.data.download`: ``download_dataset``, ``fetch_file``, ``sha256_file``,
  ``remove_stale_parts``.
- :mod:`~logloss.data.transfer`: ``DownloadLimits`` (timeouts, deadline, minimum rate, retries).
- :mod:`~logloss.data.registry`: ``DATASETS`` (what each dataset is), ``MIRRORS`` and
  ``mirrors_for`` (``$LOGLOSS_MIRRORS`` or the built-in ones).
- ``atomic_write(path)``: a context manager for writing a file all at once or not at all.
"""

from __future__ import annotations

from logloss._atomic import atomic_write
from logloss.data.datasets import load_dataset, split_train_validation
from logloss.data.download import download_dataset, fetch_file, remove_stale_parts, sha256_file
from logloss.data.errors import (
    ChecksumError,
    DataError,
    DatasetNotFoundError,
    DownloadError,
    IDXFormatError,
)
from logloss.data.idx import DEFAULT_MAX_BYTES, parse_idx, read_idx, write_idx
from logloss.data.locations import (
    ENV_VAR,
    DataLocation,
    find_dataset,
    resolve_data_dir,
    search_path,
    user_cache_dir,
)
from logloss.data.registry import (
    DATASETS,
    MIRRORS,
    MIRRORS_ENV_VAR,
    SPLITS,
    DatasetInfo,
    FileInfo,
    get_dataset,
    mirrors_for,
    parse_mirrors,
)
from logloss.data.transfer import DownloadLimits

__all__ = [
    "DATASETS",
    "DEFAULT_MAX_BYTES",
    "ENV_VAR",
    "MIRRORS",
    "MIRRORS_ENV_VAR",
    "SPLITS",
    "ChecksumError",
    "DataError",
    "DataLocation",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DownloadError",
    "DownloadLimits",
    "FileInfo",
    "IDXFormatError",
    "atomic_write",
    "download_dataset",
    "fetch_file",
    "find_dataset",
    "get_dataset",
    "load_dataset",
    "mirrors_for",
    "parse_idx",
    "parse_mirrors",
    "read_idx",
    "remove_stale_parts",
    "resolve_data_dir",
    "search_path",
    "sha256_file",
    "split_train_validation",
    "user_cache_dir",
    "write_idx",
]
