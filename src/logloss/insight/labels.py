"""True classes given as indices or names, and the class names themselves.

A label is a class index in ``[0, C)`` or, when the classes have names (``--class-names``, a
CSV/Parquet header, an ``.npz``'s ``class_names``), one of those names.  A name wins over an
index: with names ``("1", "0")`` the label ``"1"`` is class 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Classes:
    """``count`` classes and their names (``"0"``, ``"1"``, ... when none were given)."""

    count: int
    names: tuple[str, ...]
    named: bool  # whether the names were given (else they are the indices)
    index: dict[str, int] = field(repr=False, compare=False)

    @classmethod
    def of(cls, count: int, names: Sequence[str] | None = None, *, where: str = "") -> Classes:
        """The classes, checking ``names``: one per class, no duplicates, none empty."""
        if names is None:
            plain = tuple(str(k) for k in range(count))
            return cls(count, plain, False, {name: k for k, name in enumerate(plain)})
        names = tuple(str(n).strip() for n in names)
        origin = f" ({where})" if where else ""
        if len(names) != count:
            raise ValueError(
                f"{len(names)} class names{origin} for {count} classes; give one name per class"
                + (" (a binary file has 2 classes: negative, positive)" if count == 2 else "")
            )
        seen: dict[str, int] = {}
        for k, name in enumerate(names):
            if not name:
                raise ValueError(f"class name {k}{origin} is empty; give every class a name")
            if name in seen:
                raise ValueError(
                    f"duplicate class name {name!r}{origin} at positions {seen[name]} and {k}; "
                    "class names must be unique"
                )
            seen[name] = k
        return cls(count, names, True, seen)


def parse_class_names(text: str) -> list[str]:
    """``"cat,dog,bird"`` -> ``["cat", "dog", "bird"]`` (the --class-names option)."""
    return [part.strip() for part in text.split(",")]


def to_indices(raw: np.ndarray, classes: Classes, offset: int, where: str) -> np.ndarray:
    """Labels ``raw`` (n,) -> class indices (n,) int64, checked against ``classes``.

    Integer arrays are indices; string arrays hold names or index literals; float arrays must
    hold whole numbers.  ``offset`` is the first row's number and ``where`` names the file, for
    the message of the first bad label.
    """
    raw = np.asarray(raw)
    if raw.dtype.kind in "US" or raw.dtype == object:
        return _from_strings(raw.astype(str), classes, offset, where)
    if raw.dtype.kind == "f":
        whole = np.isfinite(raw) & (raw == np.round(raw))
        if not whole.all():
            row = int(np.argmax(~whole))
            raise ValueError(
                f"{where} row {offset + row}: label {raw[row]!r} is not a class index; labels "
                "are whole numbers in [0, C) or class names"
            )
        raw = raw.astype(np.int64)
    if raw.dtype.kind not in "iub":
        raise ValueError(
            f"{where}: labels of dtype {raw.dtype} are neither class indices nor names; save "
            "them as integers or strings"
        )
    labels = raw.astype(np.int64)
    bad = (labels < 0) | (labels >= classes.count)
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(
            f"{where} row {offset + row}: label {labels[row]} is outside [0, {classes.count}) "
            f"(the predictions have {classes.count} classes); fix the label or the predictions"
        )
    return labels


def _from_strings(raw: np.ndarray, classes: Classes, offset: int, where: str) -> np.ndarray:
    values, inverse = np.unique(np.char.strip(raw), return_inverse=True)
    mapped = np.array([_one(v, classes) for v in values.tolist()], dtype=np.int64)
    labels = mapped[inverse.reshape(-1)]
    bad = labels < 0
    if bad.any():
        row = int(np.argmax(bad))
        names = ", ".join(classes.names[:10]) + (", ..." if classes.count > 10 else "")
        among = f"among the class names ({names}) nor " if classes.named else ""
        raise ValueError(
            f"{where} row {offset + row}: label {raw[row].strip()!r} is not {among}a class "
            f"index in [0, {classes.count}); fix the label, or name the classes with "
            "--class-names"
        )
    return labels


def _one(value: str, classes: Classes) -> int:
    """The class of one label string, or -1."""
    if value in classes.index and classes.named:
        return classes.index[value]
    try:
        number = int(value)
    except ValueError:
        return -1
    return number if 0 <= number < classes.count else -1
