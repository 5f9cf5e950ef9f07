"""Datasets for logloss: MNIST and its siblings read from IDX files, downloaded safely.

Public names (one module per idea):

- :mod:`~logloss.data.idx`: ``read_idx``, ``write_idx``, ``parse_idx`` and ``IDXFormatError``.
- :mod:`~logloss.data.datasets`: ``load_dataset``, ``split_train_validation``.
- :mod:`~logloss.data.locations`: ``resolve_data_dir``, ``find_dataset``, ``user_cache_dir``.
- :mod:`~logloss.data.download`: ``download_dataset``, ``fetch_file``, ``sha256_file``.
- :mod:`~logloss.data.registry`: ``DATASETS`` (what each dataset is) and ``MIRRORS``.
- ``atomic_write(path)``: a context manager for writing a file all at once or not at all.
"""

from __future__ import annotations

from logloss._atomic import atomic_write
from logloss.data.datasets import load_dataset, split_train_validation
from logloss.data.download import download_dataset, fetch_file, sha256_file
from logloss.data.errors import (
    ChecksumError,
    DataError,
    DatasetNotFoundError,
    DownloadError,
    IDXFormatError,
)
from logloss.data.idx import parse_idx, read_idx, write_idx
from logloss.data.locations import (
    ENV_VAR,
    find_dataset,
    resolve_data_dir,
    search_path,
    user_cache_dir,
)
from logloss.data.registry import DATASETS, MIRRORS, SPLITS, DatasetInfo, FileInfo, get_dataset

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "MIRRORS",
    "SPLITS",
    "ChecksumError",
    "DataError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DownloadError",
    "FileInfo",
    "IDXFormatError",
    "atomic_write",
    "download_dataset",
    "fetch_file",
    "find_dataset",
    "get_dataset",
    "load_dataset",
    "parse_idx",
    "read_idx",
    "resolve_data_dir",
    "search_path",
    "sha256_file",
    "split_train_validation",
    "user_cache_dir",
    "write_idx",
]
