"""Predictions stored as NumPy arrays: a memory-mapped ``.npy`` (labels from ``--labels``), an
``.npz`` archive streamed array by array, or arrays already in memory (the Python API).

- ``.npy``: an (N, C) array, or (N,) / (N, 1) for a binary problem; memory-mapped and read in
  blocks (pages already read are handed back to the OS, so resident memory stays flat); never
  unpickled.
- ``.npz``: one of ``logits``, ``probs`` or ``log_probs`` (which also says the kind), plus
  ``labels`` and optionally ``ids`` and ``class_names``.
"""

from __future__ import annotations

import itertools
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from logloss.insight.blocks import (
    LabelFile,
    MappedNpy,
    RawBlock,
    check_label_rows,
    check_values_array,
    read_npy_header,
)
from logloss.insight.labels import Classes, to_indices

NPZ_KINDS = {"logits": "logits", "probs": "probs", "log_probs": "log-probs"}


class NpySource:
    """An (N, C), (N, 1) or (N,) .npy of predictions, labels from a :class:`LabelFile`."""

    kind = None
    kind_reason = ""
    names = None
    has_ids = False

    def __init__(self, path: Path, labels: LabelFile | None) -> None:
        if labels is None:
            raise ValueError(
                f"{path} holds predictions only; give the true classes with --labels FILE "
                "(a .npy or a text file with one label per line), or use an .npz with 'labels'"
            )
        self.name, self.labels = str(path), labels
        self.mapped = MappedNpy(path)
        self.columns = check_values_array(self.mapped.header, self.name)
        self.rows = self.mapped.header.shape[0]
        check_label_rows(labels, self.rows, self.name)

    def blocks(self, classes: Classes, size: int) -> Iterator[RawBlock]:
        values = self.mapped.array.reshape(self.rows, self.columns)
        for start, labels in zip(
            range(0, self.rows, size), self.labels.read(classes, size), strict=False
        ):
            yield RawBlock(start, np.asarray(values[start : start + size]), labels, None)
            self.mapped.release(start + len(labels))


class NpyStream:
    """One array of an .npz archive, read in blocks of rows from the compressed stream."""

    def __init__(self, archive: zipfile.ZipFile, member: str, where: str) -> None:
        self.archive, self.member, self.where = archive, member, where
        with archive.open(member) as handle:
            self.header = read_npy_header(handle, where)

    def read(self, size: int) -> Iterator[np.ndarray]:
        h = self.header
        row_shape = h.shape[1:]
        row_bytes = h.dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))
        with self.archive.open(self.member) as handle:
            handle.seek(h.offset)
            if h.fortran and len(h.shape) > 1:  # columns stored one after another: read all
                data = np.frombuffer(handle.read(), h.dtype)
                yield from _split(data.reshape(h.shape, order="F"), size)
                return
            for start in range(0, h.shape[0], size):
                count = min(size, h.shape[0] - start)
                data = handle.read(count * row_bytes)
                if len(data) < count * row_bytes:
                    raise ValueError(f"{self.where} is truncated at row {start}; write it again")
                yield np.frombuffer(data, h.dtype).reshape(count, *row_shape)


def _split(array: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(array), size):
        yield array[start : start + size]


class NpzSource:
    """An .npz with ``logits`` | ``probs`` | ``log_probs``, ``labels``, optional ``ids`` and
    ``class_names``; ``--labels FILE`` may replace its ``labels``."""

    def __init__(self, path: Path, labels: LabelFile | None) -> None:
        self.name = str(path)
        try:
            self.archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise ValueError(f"{path} is not an .npz archive; save it with np.savez") from None
        members = {Path(n).stem: n for n in self.archive.namelist() if n.endswith(".npy")}
        found = [key for key in NPZ_KINDS if key in members]
        if len(found) != 1:
            raise ValueError(
                f"{path} holds {sorted(members) or 'no arrays'}; it needs exactly one of "
                f"'logits', 'probs' or 'log_probs' (and 'labels'): np.savez(path, "
                "logits=..., labels=...)"
            )
        self.kind = NPZ_KINDS[found[0]]
        self.kind_reason = f"the .npz array is named {found[0]!r}"
        self.values = NpyStream(self.archive, members[found[0]], f"{path} array '{found[0]}'")
        self.columns = check_values_array(self.values.header, self.values.where)
        self.rows = self.values.header.shape[0]
        check_label_rows(labels, self.rows, self.name)
        self.labels = labels
        self.label_stream = self._member(members, "labels", required=labels is None)
        self.id_stream = self._member(members, "ids", required=False)
        self.has_ids = self.id_stream is not None
        self.names = self._class_names(members)

    def _member(self, members: dict[str, str], key: str, *, required: bool) -> NpyStream | None:
        if key not in members:
            if required:
                raise ValueError(
                    f"{self.name} has no 'labels' array; add labels=... to np.savez, or give "
                    "--labels FILE"
                )
            return None
        stream = NpyStream(self.archive, members[key], f"{self.name} array '{key}'")
        if stream.header.shape != (self.rows,):
            raise ValueError(
                f"{stream.where} has shape {stream.header.shape} but the predictions have "
                f"{self.rows} rows; give one entry per row"
            )
        return stream

    def _class_names(self, members: dict[str, str]) -> tuple[str, ...] | None:
        if "class_names" not in members:
            return None
        stream = NpyStream(self.archive, members["class_names"], f"{self.name} 'class_names'")
        return tuple(str(n) for n in np.concatenate(list(stream.read(1 << 20))).tolist())

    def blocks(self, classes: Classes, size: int) -> Iterator[RawBlock]:
        labels = (
            self.labels.read(classes, size)
            if self.labels is not None
            else (
                to_indices(raw, classes, k * size, self.name)
                for k, raw in enumerate(self.label_stream.read(size))
            )
        )
        ids = self.id_stream.read(size) if self.id_stream is not None else itertools.repeat(None)
        start = 0
        for values, y, names in zip(self.values.read(size), labels, ids, strict=False):
            yield RawBlock(
                start,
                values.reshape(len(y), self.columns),
                y,
                None if names is None else np.asarray(names).astype(str),
            )
            start += len(y)


# --------------------------------------------------------------------------- in memory


class ArraySource:
    """Predictions already in memory (the Python API): (N, C) or (N,) values, (N,) labels."""

    kind = None
    kind_reason = ""

    def __init__(
        self,
        values: np.ndarray,
        labels: np.ndarray,
        *,
        name: str = "predictions",
        names: tuple[str, ...] | None = None,
        ids: np.ndarray | None = None,
    ) -> None:
        if values.dtype.kind not in "fiub":
            raise ValueError(f"{name} must be real numbers, got dtype {values.dtype}")
        if values.ndim not in (1, 2) or (values.ndim == 2 and values.shape[1] < 1):
            raise ValueError(
                f"{name} must have shape (N, C), or (N,) for P(class 1) of a binary problem; "
                f"got {values.shape}"
            )
        self.name, self.names, self.ids, self.has_ids = name, names, ids, ids is not None
        self.values = values.reshape(len(values), -1)
        self.rows, self.columns = self.values.shape
        self.labels = np.asarray(labels)
        if self.labels.shape != (self.rows,):
            raise ValueError(
                f"labels have shape {self.labels.shape} but {name} has {self.rows} rows; give "
                "one label per row"
            )

    def blocks(self, classes: Classes, size: int) -> Iterator[RawBlock]:
        for start in range(0, self.rows, size):
            stop = start + size
            ids = None if self.ids is None else self.ids[start:stop].astype(str)
            labels = to_indices(self.labels[start:stop], classes, start, "labels")
            yield RawBlock(start, self.values[start:stop], labels, ids)


def open_images(path: Path, rows: int) -> np.ndarray:
    """``--images FILE``: an (N, H, W) or (N, H, W, 3) uint8 .npy, memory-mapped (only the rows
    a figure shows are read), with one image per predictions row."""
    if Path(path).suffix.lower() != ".npy":
        raise ValueError(f"--images {path}: give a .npy of uint8 images, (N, H, W) or (N, H, W, 3)")
    images = MappedNpy(Path(path)).array
    colour = images.ndim == 4 and images.shape[3] == 3
    if images.dtype != np.uint8 or not (images.ndim == 3 or colour):
        raise ValueError(
            f"--images {path} holds {images.dtype} of shape {images.shape}; give uint8 images "
            "of shape (N, H, W) or (N, H, W, 3)"
        )
    if images.shape[0] != rows:
        raise ValueError(
            f"--images {path} has {images.shape[0]} images for {rows} predictions rows; give one "
            "image per row"
        )
    return images
