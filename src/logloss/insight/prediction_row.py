"""One row of a predictions file, found by its number or its id, walked through the article's
steps (:func:`logloss.insight.explain.explain`).

The row's values become logits: themselves for logits, ``ln p`` for probabilities
(``softmax(ln p) = p``; a probability 0 is a -inf logit), log-probabilities as they are, and
``[0, t]`` for a binary logit ``t`` (``softmax([0, t])[1] = sigmoid(t)``) or ``[ln(1-p), ln p]``
for a binary P(1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from logloss.insight.explain import Explanation, explain
from logloss.insight.kinds import BadRow, check_values
from logloss.insight.prediction_evaluation import Reading


@dataclass(frozen=True)
class Row:
    """Row ``index`` of a source: its values as stored, its class and id."""

    index: int
    values: np.ndarray  # (C,) or (1,)
    label: int
    id: str | None


def find_row(reading: Reading, *, index: int | None = None, row_id: str | None = None) -> Row:
    """The row numbered ``index`` (from 0) or whose id is ``row_id``; reads blocks until found."""
    if (index is None) == (row_id is None):
        raise ValueError("give a row number (--row I) or a row id (--id ID), one of the two")
    source = reading.source
    if index is not None and not 0 <= index < source.rows:
        raise ValueError(
            f"--row {index} is out of range: {source.name} has {source.rows} rows, numbered 0 "
            f"to {source.rows - 1}"
        )
    if row_id is not None and not source.has_ids:
        raise ValueError(
            f"{source.name} has no ids; add an 'id' column (CSV/Parquet) or an 'ids' array "
            "(.npz), or pick the row by number with --row I"
        )
    for raw, values in reading.blocks():
        if index is not None and raw.offset <= index < raw.offset + len(values):
            k = index - raw.offset
        elif row_id is not None and (hits := np.flatnonzero(raw.ids == str(row_id))).size:
            k = int(hits[0])
        else:
            continue
        own = None if raw.ids is None else str(raw.ids[k])
        return Row(raw.offset + k, np.asarray(values[k]), int(raw.labels[k]), own)
    raise ValueError(f"{source.name} has no row with id {row_id!r}; ids are matched as text")


def row_logits(values: np.ndarray, kind: str) -> np.ndarray:
    """The logits (C,) float64 whose softmax is the row's probabilities (see the module doc)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    with np.errstate(divide="ignore"):
        if x.size == 1:
            if kind == "logits":
                return np.array([0.0, x[0]])
            return np.log(np.array([1.0 - x[0], x[0]]))
        return np.log(x) if kind == "probs" else x


def explain_row(reading: Reading, row: Row) -> Explanation:
    """The article's walkthrough of ``row`` (no PyTorch reference: this path needs no torch)."""
    try:
        check_values(row.values.reshape(1, -1), reading.choice.kind, row.index)
    except BadRow as error:
        raise ValueError(f"{reading.source.name} {error}") from None
    names = reading.classes.names if reading.classes.named else None
    return explain(
        row_logits(row.values, reading.choice.kind),
        row.label,
        labels=names,
        torch_reference=False,
    )
