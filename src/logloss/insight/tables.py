"""Predictions as a table with a header: ``.csv``/``.tsv`` read in blocks of lines, ``.parquet``
read row group by row group through pyarrow (the optional ``parquet`` extra).

The header names the columns: the label column (``--label-column``, default ``label``), an
optional ``id`` column, and one column per class whose names are the class names (a single
column is P(class 1), or its logit, of a binary problem).  With ``--labels FILE`` the table
needs no label column.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from logloss.insight.blocks import LabelFile, RawBlock, check_label_rows
from logloss.insight.labels import Classes, to_indices


class Columns:
    """Which header columns are the label, the id and the classes; checked once."""

    def __init__(
        self,
        header: list[str],
        where: str,
        *,
        label_column: str,
        id_column: str,
        labels_given: bool,
    ) -> None:
        header = [h.strip() for h in header]
        if not any(header):
            raise ValueError(
                f"{where} is empty: no header line; write a header, then one row per sample"
            )
        seen: dict[str, int] = {}
        for k, name in enumerate(header):
            if name in seen:
                raise ValueError(
                    f"{where} header: column {name!r} appears twice (columns {seen[name]} and "
                    f"{k}); class names must be unique"
                )
            seen[name] = k
        self.label = seen.get(label_column)
        if self.label is None and not labels_given:
            raise ValueError(
                f"{where} header has no label column {label_column!r} (columns: "
                f"{', '.join(header[:12])}); name it with --label-column NAME, or give the "
                "labels with --labels FILE"
            )
        self.id = seen.get(id_column)
        self.classes = [k for k in range(len(header)) if k not in (self.label, self.id)]
        if not self.classes:
            raise ValueError(f"{where} header has no class columns besides {header}")
        self.width = len(header)
        self.names = tuple(header[k] for k in self.classes)
        self.header = header


# --------------------------------------------------------------------------- csv, tsv


class CsvSource:
    """A .csv (comma) or .tsv (tab) file with a header line; read in blocks of lines."""

    kind = None
    kind_reason = ""

    def __init__(self, path: Path, labels: LabelFile | None, **columns: Any) -> None:
        self.name, self.path, self.labels = str(path), path, labels
        self.delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        with open(path, encoding="utf-8", newline="") as handle:
            first = handle.readline()
            header = next(csv.reader([first], delimiter=self.delimiter), [])
            self.rows = sum(1 for line in handle if line.strip())
        self.columns_of = Columns(header, self.name, labels_given=labels is not None, **columns)
        self.columns = len(self.columns_of.classes)
        self.names = None if self.columns == 1 else self.columns_of.names
        self.has_ids = self.columns_of.id is not None
        check_label_rows(labels, self.rows, self.name)

    def blocks(self, classes: Classes, size: int) -> Iterator[RawBlock]:
        external = None if self.labels is None else self.labels.read(classes, size)
        with open(self.path, encoding="utf-8", newline="") as handle:
            handle.readline()
            lines = (line for line in handle if line.strip())
            for start in range(0, self.rows, size):
                block = list(itertools.islice(lines, size))
                values, label_text, ids = self._parse(block, start)
                labels = (
                    next(external)
                    if external is not None
                    else to_indices(label_text, classes, start, self.name)
                )
                yield RawBlock(start, values, labels, ids)

    def _parse(self, lines: list[str], start: int) -> tuple[np.ndarray, Any, Any]:
        """(values (n, C) float64, label strings (n,) or None, ids (n,) or None)."""
        c = self.columns_of
        try:
            values = np.loadtxt(
                lines,
                delimiter=self.delimiter,
                usecols=c.classes,
                ndmin=2,
                dtype=np.float64,
                quotechar='"',
                comments=None,
            )
            text = np.loadtxt(
                lines, delimiter=self.delimiter, dtype=str, ndmin=2, quotechar='"', comments=None
            )
        except ValueError:
            raise self._locate(lines, start) from None
        if text.shape[1] != c.width:
            raise self._locate(lines, start)
        label = None if c.label is None else text[:, c.label]
        ids = None if c.id is None else text[:, c.id]
        return values, label, ids

    def _locate(self, lines: list[str], start: int) -> ValueError:
        """The first ragged row or non-numeric cell of a block that NumPy could not read."""
        c = self.columns_of
        for offset, cells in enumerate(csv.reader(lines, delimiter=self.delimiter)):
            row = start + offset
            if len(cells) != c.width:
                return ValueError(
                    f"{self.name} row {row}: {len(cells)} cells where the header has {c.width}; "
                    "every row needs one cell per column (ragged file)"
                )
            for k in c.classes:
                try:
                    float(cells[k])
                except ValueError:
                    return ValueError(
                        f"{self.name} row {row}, column {c.header[k]!r}: {cells[k]!r} is not a "
                        "number; class columns hold logits or probabilities"
                    )
        return ValueError(
            f"{self.name}: rows {start} to {start + len(lines) - 1} cannot be read "
            "as numbers; check the delimiter and quoting"
        )


# --------------------------------------------------------------------------- parquet


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as parquet  # optional dependency: the `parquet` extra
    except ImportError:
        raise ValueError('reading .parquet needs pyarrow: pip install "logloss[parquet]"') from None
    return parquet


class ParquetSource:
    """A Parquet file, read row group by row group in batches of rows."""

    kind = None
    kind_reason = ""

    def __init__(self, path: Path, labels: LabelFile | None, **columns: Any) -> None:
        parquet = _pyarrow_parquet()
        self.name, self.labels = str(path), labels
        try:
            self.file = parquet.ParquetFile(path)
        except Exception as error:  # pyarrow's own error types: say it in one line
            raise ValueError(f"{path} is not a Parquet file ({error})") from None
        header = list(self.file.schema_arrow.names)
        self.columns_of = Columns(header, self.name, labels_given=labels is not None, **columns)
        self._check_types()
        self.rows = self.file.metadata.num_rows
        check_label_rows(labels, self.rows, self.name)
        self.columns = len(self.columns_of.classes)
        self.names = None if self.columns == 1 else self.columns_of.names
        self.has_ids = self.columns_of.id is not None

    def _check_types(self) -> None:
        import pyarrow.types as types  # optional dependency, as in _pyarrow_parquet

        schema = self.file.schema_arrow
        for k in self.columns_of.classes:
            kind = schema.field(k).type
            if not (types.is_floating(kind) or types.is_integer(kind)):
                raise ValueError(
                    f"{self.name} column {schema.names[k]!r} holds {kind}, not numbers; class "
                    "columns hold logits or probabilities"
                )

    def blocks(self, classes: Classes, size: int) -> Iterator[RawBlock]:
        c = self.columns_of
        wanted = [c.header[k] for k in c.classes]
        extra = [c.header[k] for k in (c.label, c.id) if k is not None]
        external = None if self.labels is None else self.labels.read(classes, size)
        start = 0
        for batch in self.file.iter_batches(batch_size=size, columns=wanted + extra):
            values = np.column_stack([self._numbers(batch, name, start) for name in wanted])
            labels = (
                next(external)
                if external is not None
                else to_indices(
                    self._column(batch, c.header[c.label], start), classes, start, self.name
                )
            )
            ids = None if c.id is None else self._column(batch, c.header[c.id], start).astype(str)
            yield RawBlock(start, values, labels, ids)
            start += batch.num_rows

    def _column(self, batch: Any, name: str, start: int) -> np.ndarray:
        column = batch.column(name)
        if column.null_count:
            row = start + next(i for i, v in enumerate(column.is_null().to_pylist()) if v)
            raise ValueError(
                f"{self.name} row {row}, column {name!r}: the cell is empty (null); fill every cell"
            )
        return column.to_numpy(zero_copy_only=False)

    def _numbers(self, batch: Any, name: str, start: int) -> np.ndarray:
        return np.asarray(self._column(batch, name, start), dtype=np.float64)


def open_table(path: Path, labels: LabelFile | None, **columns: Any) -> Any:
    """A :class:`CsvSource` or :class:`ParquetSource` by extension."""
    if path.suffix.lower() == ".parquet":
        return ParquetSource(path, labels, **columns)
    return CsvSource(path, labels, **columns)
