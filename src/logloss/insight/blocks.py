"""The pieces every predictions reader shares: blocks of rows, .npy headers and memory maps, and
the ``--labels`` file.

A reader (:mod:`.arrays`, :mod:`.tables`) gives :class:`RawBlock` s of at most
:func:`block_rows` rows: the values as stored, the labels as class indices (:mod:`.labels`), and
the rows' ids when the file has them.  Errors are ValueErrors naming the file, the row and the
column, the rule, and what to do.
"""

from __future__ import annotations

import itertools
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import numpy as np

from logloss.insight.labels import Classes, to_indices

# A block holds about this many values (1 MiB of float64 per temporary array), and at least
# MIN_BLOCK_ROWS rows, so that per-block work (a C x C confusion update) stays small per row.
BLOCK_CELLS = 1 << 17
MIN_BLOCK_ROWS = 1024


def block_rows(columns: int) -> int:
    """Rows per block for ``columns`` values per row."""
    return max(MIN_BLOCK_ROWS, BLOCK_CELLS // max(columns, 1))


@dataclass(frozen=True)
class RawBlock:
    """Rows ``offset .. offset + n - 1`` of a source."""

    offset: int
    values: np.ndarray  # (n, C) as stored (float16/32/64)
    labels: np.ndarray  # (n,) int64 class indices
    ids: np.ndarray | None  # (n,) str, or None


class Source(Protocol):
    """What every reader offers (see the module doc)."""

    name: str  # the file, as the user named it
    rows: int | None  # None: unknown until the end (a model over a loader without a length)
    columns: int  # C, or 1 for a binary column
    names: tuple[str, ...] | None  # class names the file carries
    kind: str | None  # the kind the file states (an .npz array's name), else None
    kind_reason: str  # why, when it states one
    has_ids: bool

    def blocks(self, classes: Classes, size: int) -> Iterator[RawBlock]: ...


# --------------------------------------------------------------------------- .npy headers


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype
    offset: int  # bytes before the data


def read_npy_header(handle: IO[bytes], where: str) -> NpyHeader:
    """The header of the .npy data at ``handle``'s position (never unpickles anything)."""
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(
            f"{where} is not a NumPy .npy array ({error}); save it with np.save"
        ) from None
    if dtype.hasobject:
        raise ValueError(
            f"{where} holds Python objects (dtype {dtype}), which logloss never unpickles; save "
            "a numeric array (e.g. np.save(path, array.astype(np.float32)))"
        )
    return NpyHeader(tuple(shape), fortran, dtype, handle.tell())


def check_values_array(header: NpyHeader, where: str) -> int:
    """The column count of predictions of this shape and dtype, or a clear error."""
    if header.dtype.kind not in "fiub":
        raise ValueError(
            f"{where} holds dtype {header.dtype}; predictions are real numbers (float32 logits "
            "or probabilities)"
        )
    if len(header.shape) == 1 or (len(header.shape) == 2 and header.shape[1] >= 1):
        return 1 if len(header.shape) == 1 else header.shape[1]
    raise ValueError(
        f"{where} has shape {header.shape}; predictions are (N, C) for C classes, or (N,) "
        "for P(class 1) of a binary problem"
    )


class MappedNpy:
    """A .npy file memory-mapped read-only; :meth:`release` returns read pages to the OS."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as handle:
            self.header = read_npy_header(handle, str(path))
        self._file = open(path, "rb")  # noqa: SIM115 - lives as long as the mapping
        size = os.fstat(self._file.fileno()).st_size
        h = self.header
        itemsize = h.dtype.itemsize * int(np.prod(h.shape, dtype=np.int64))
        if size < h.offset + itemsize:
            raise ValueError(
                f"{path} is truncated: its header promises shape {h.shape} of {h.dtype} "
                f"({h.offset + itemsize} bytes) but the file has {size}; write it again"
            )
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if itemsize else None
        order = "F" if h.fortran else "C"
        buffer = self._map if self._map is not None else b""
        self.array = np.ndarray(h.shape, h.dtype, buffer=buffer, offset=h.offset, order=order)

    def release(self, rows: int) -> None:
        """The first ``rows`` rows are done: drop their pages from this process's memory."""
        if self._map is None or self.header.fortran or not hasattr(mmap, "MADV_DONTNEED"):
            return
        row_bytes = self.array.strides[0] if self.array.ndim else 0
        end = (self.header.offset + rows * row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > 0:
            self._map.madvise(mmap.MADV_DONTNEED, 0, end)


# --------------------------------------------------------------------------- labels files


class LabelFile:
    """``--labels FILE``: a .npy of indices or names (memory-mapped), or one label per line."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.path = path
        if path.suffix.lower() == ".npy":
            self.mapped: MappedNpy | None = MappedNpy(path)
            if len(self.mapped.header.shape) != 1:
                raise ValueError(
                    f"{path} has shape {self.mapped.header.shape}; labels are one per row, (N,)"
                )
            self.rows = self.mapped.header.shape[0]
        else:
            self.mapped = None
            self.rows = _count_text_lines(path)

    def read(self, classes: Classes, size: int) -> Iterator[np.ndarray]:
        """Class indices (n,) in blocks of ``size``, checked against ``classes``."""
        if self.mapped is not None:
            for start in range(0, self.rows, size):
                raw = np.array(self.mapped.array[start : start + size])
                yield to_indices(raw, classes, start, self.name)
                self.mapped.release(start + len(raw))
            return
        with open(self.path, encoding="utf-8") as handle:
            for start in range(0, self.rows, size):
                lines = [line.strip() for line in itertools.islice(handle, size)]
                yield to_indices(np.array(lines, dtype=str), classes, start, self.name)


def check_label_rows(labels: LabelFile | None, rows: int, where: str) -> None:
    """A ``--labels`` file has one label per predictions row, or a clear error."""
    if labels is not None and labels.rows != rows:
        raise ValueError(
            f"{where} has {rows} rows but --labels {labels.name} has {labels.rows} labels; give "
            "one label per row, in the same order"
        )


def _count_text_lines(path: Path) -> int:
    """Lines of a text labels file; blank lines only at the end."""
    rows, blank_at = 0, None
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if line.strip():
                if blank_at is not None:
                    raise ValueError(
                        f"{path} line {blank_at + 1} is empty; give one label per line, "
                        "with no blank lines between them"
                    )
                rows = number + 1
            elif blank_at is None:
                blank_at = number
    return rows
