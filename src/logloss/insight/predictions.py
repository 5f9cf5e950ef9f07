"""Open a predictions file by its extension: ``.npy``/``.npz`` (:mod:`.arrays`),
``.csv``/``.tsv``/``.parquet`` (:mod:`.tables`); the labels may come from ``--labels FILE``
(:class:`~logloss.insight.blocks.LabelFile`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from logloss.insight.arrays import NpySource, NpzSource
from logloss.insight.blocks import LabelFile
from logloss.insight.tables import open_table


def open_predictions(
    path: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    *,
    label_column: str = "label",
    id_column: str = "id",
) -> Any:
    """The reader for ``path`` by its extension (see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist or is not a file; give a predictions file")
    label_file = None if labels is None else LabelFile(_existing(Path(labels)))
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return NpySource(path, label_file)
    if suffix == ".npz":
        return NpzSource(path, label_file)
    if suffix in (".csv", ".tsv", ".parquet"):
        return open_table(path, label_file, label_column=label_column, id_column=id_column)
    raise ValueError(
        f"{path}: unknown predictions format {suffix or '(no extension)'!r}; use .npy, .npz, "
        ".csv, .tsv or .parquet"
    )


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"--labels {path} does not exist or is not a file")
    return path
