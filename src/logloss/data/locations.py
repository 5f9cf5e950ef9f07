"""Where datasets are looked for: ``data_dir``, then ``$LOGLOSS_DATA``, then the user cache.

A data folder holds one subfolder per dataset, named as the dataset (``mnist/``,
``fashion-mnist/``, ``kmnist/``), each with the original ``.gz`` files under their original names.
Downloads go to ``data_dir`` when one is given, otherwise to the user cache.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from logloss.data.registry import SPLITS, get_dataset

__all__ = [
    "ENV_VAR",
    "DataLocation",
    "download_root",
    "find_dataset",
    "resolve_data_dir",
    "search_path",
    "user_cache_dir",
]

ENV_VAR = "LOGLOSS_DATA"


@dataclass(frozen=True)
class DataLocation:
    """One place searched: where the setting came from (``--data-dir``, ``LOGLOSS_DATA``,
    ``user cache``) and the data folder it names (``None`` when the setting is absent)."""

    source: str
    root: Path | None


def _absolute(value: str | os.PathLike[str]) -> Path:
    return Path(value).expanduser().absolute()


def user_cache_dir() -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME/logloss`` when that is set (absolute), else
    ``~/.cache/logloss`` on Linux, ``~/Library/Caches/logloss`` on macOS and
    ``%LOCALAPPDATA%\\logloss\\Cache`` on Windows.

    >>> user_cache_dir().name in ("logloss", "Cache")
    True
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "logloss"
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(local) / "logloss" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "logloss"
    return Path.home() / ".cache" / "logloss"


def search_path(data_dir: str | os.PathLike[str] | None = None) -> list[DataLocation]:
    """The places searched, in order: ``data_dir``, ``$LOGLOSS_DATA``, the user cache.

    Absent settings are kept (with ``root=None``) so that error messages can say so.
    """
    env = os.environ.get(ENV_VAR, "")
    return [
        DataLocation("--data-dir", _absolute(data_dir) if data_dir is not None else None),
        DataLocation(ENV_VAR, _absolute(env) if env else None),
        DataLocation("user cache", user_cache_dir()),
    ]


def find_dataset(
    name: str, split: str | None = None, data_dir: str | os.PathLike[str] | None = None
) -> tuple[DataLocation, Path] | None:
    """Where dataset ``name`` is, or ``None``: the first place in the search path (``data_dir``,
    then ``$LOGLOSS_DATA``, then the user cache) whose ``name/`` folder holds the files of
    ``split`` (of both splits when ``None``).

    The same search :func:`~logloss.data.load_dataset` makes, without downloading or creating
    anything, and without reading the files (only their presence is checked); a test fixture can
    use it to find MNIST the way the product does.

    Returns:
        ``(location, folder)``: ``location.source`` is ``"--data-dir"``, ``"LOGLOSS_DATA"`` or
        ``"user cache"``, ``location.root`` the data folder, ``folder`` is
        ``location.root / name``; or ``None`` when no place holds the files.

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "mnist").mkdir()
    >>> for file in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
    ...     _ = (root / "mnist" / file).write_bytes(b"")
    >>> location, folder = find_dataset("mnist", "test", data_dir=root)
    >>> location.source, location.root == root, folder == root / "mnist"
    ('--data-dir', True, True)
    """
    info = get_dataset(name)
    splits = SPLITS if split is None else (split,)
    wanted = [f.name for s in splits for f in info.files.get(s, ())]
    for location in search_path(data_dir):
        if location.root is None:
            continue
        folder = location.root / name
        if all((folder / file).is_file() for file in wanted):
            return location, folder
    return None


def download_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data folder downloads go to: ``data_dir`` when given, else the user cache."""
    return _absolute(data_dir) if data_dir is not None else user_cache_dir()


def resolve_data_dir(
    data_dir: str | os.PathLike[str] | None = None, dataset: str | None = None
) -> Path:
    """The data folder to use: the first place that holds ``dataset`` (when given), otherwise the
    first place configured (``data_dir``, then ``$LOGLOSS_DATA``), otherwise the user cache.

    Args:
        data_dir: an explicit data folder (``--data-dir``), or ``None``.
        dataset: a dataset name such as ``"mnist"``, or ``None``.

    Returns:
        The data folder (the parent of ``mnist/`` etc.), as an absolute path.

    >>> resolve_data_dir("/srv/data")
    PosixPath('/srv/data')
    """
    if dataset is not None:
        found = find_dataset(dataset, data_dir=data_dir)
        if found is not None:
            return found[1].parent
    for location in search_path(data_dir):
        if location.root is not None:
            return location.root
    return user_cache_dir()  # pragma: no cover - the cache is always in the search path
