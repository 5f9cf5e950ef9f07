"""``logloss.evaluate``: diagnose predictions already in memory, from any library.

Predictions may be a NumPy array, a torch tensor, nested lists, or a pandas / polars DataFrame
(one column per class; its column names are the class names).  Labels may be an array, a list,
a Series, or, with a DataFrame, the name of its label column.  Nothing is imported that the
input does not need: torch is never imported here (a tensor already comes with it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from logloss._tensors import is_tensor
from logloss.insight.accumulators import DEFAULT_TOP_K, WORST_FRACTION
from logloss.insight.arrays import ArraySource
from logloss.insight.binning import DEFAULT_BINS
from logloss.insight.prediction_evaluation import evaluate_reading, read_source
from logloss.insight.predictions import open_predictions
from logloss.insight.result import EvaluationResult


def as_array(values: Any, name: str) -> np.ndarray:
    """``values`` as a NumPy array: tensors detached to the CPU, DataFrames and Series through
    their ``to_numpy()``, lists through ``np.asarray``."""
    if is_tensor(values):
        return values.detach().cpu().numpy()
    if hasattr(values, "to_numpy") and not isinstance(values, np.ndarray):
        return np.asarray(values.to_numpy())
    try:
        return np.asarray(values)
    except ValueError:  # NumPy's message for rows of different lengths
        raise ValueError(f"{name} has rows of different lengths; give one row per sample") from None


def _columns(frame: Any) -> list[str] | None:
    """A DataFrame's column names (pandas and polars both have ``.columns``), else None."""
    columns = getattr(frame, "columns", None)
    return None if columns is None else [str(c) for c in columns]


def split_frame(predictions: Any, labels: Any) -> tuple[Any, Any, list[str] | None]:
    """(values, labels, class names): a DataFrame's label column taken out when ``labels`` is
    its name; the remaining column names are the class names."""
    names = _columns(predictions)
    if names is None:
        return predictions, labels, None
    if isinstance(labels, str):
        if labels not in names:
            raise ValueError(
                f"the DataFrame has no column {labels!r} (columns: {', '.join(names[:12])}); "
                "pass the name of its label column, or the labels themselves"
            )
        label_values = predictions[labels]
        predictions = (
            predictions.drop(labels)
            if hasattr(predictions, "drop_nulls")
            else (predictions.drop(columns=[labels]))
        )
        names = [n for n in names if n != labels]
        labels = label_values
    return predictions, labels, names if len(names) > 1 else None


def evaluate(
    predictions: Any,
    labels: Any = None,
    *,
    kind: str = "auto",
    class_names: Sequence[str] | None = None,
    calibration: Any = None,
    bins: int = DEFAULT_BINS,
    binning: str = "uniform",
    top_k: int = DEFAULT_TOP_K,
    worst_fraction: float = WORST_FRACTION,
    renormalize: bool = False,
    ids: Any = None,
    images: Any = None,
) -> EvaluationResult:
    """Every diagnostic of ``logloss evaluate`` for any classifier's predictions.

    ``loss = -1/N sum_i ln p_i(y_i)`` in float64 with ``p = softmax(z)`` for logits, as given
    for probabilities, ``e^l`` for log-probabilities; one column is P(class 1) (or its logit)
    of a binary problem.  See docs/predictions.md for every number.

    Args:
        predictions: (N, C) or (N,): an array, tensor, list, or DataFrame; or a file path
            (``.npy``, ``.npz``, ``.csv``, ``.tsv``, ``.parquet``).
        labels: (N,) class indices or names; a DataFrame's label column name; a labels file
            path; or None when the file holds them.
        kind: ``"auto"``, ``"logits"``, ``"probs"`` or ``"log-probs"``.
        class_names: C names (default: the DataFrame's columns or the file's header).
        calibration: held-out ``(predictions, labels)`` (or a file path) to fit temperature
            scaling on; without it temperature scaling is skipped.
        bins, binning: calibration bins, ``"uniform"`` or ``"quantile"``.
        top_k, worst_fraction: the rankings' length and the worst share's fraction.
        renormalize: divide probability rows that do not sum to 1 by their sum.
        ids: (N,) row ids, reported with the hardest samples.
        images: (N, H, W) or (N, H, W, 3) uint8 for the sample-grid figures.

    >>> r = evaluate([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0]], [0, 0, 1], class_names=["a", "b"])
    >>> e = r.evaluation  # loss: (ln(1 + e^-2) + ln(1 + e) + ln(1 + e^-2)) / 3
    >>> round(e.accuracy, 4), round(e.loss, 4), r.to_dict()["source"]["kind"]
    (0.6667, 0.5224, 'logits')
    """
    reading = _reading(predictions, labels, kind, class_names, renormalize, ids, "predictions")
    fit = None
    if calibration is not None:
        pair = calibration if isinstance(calibration, tuple) else (calibration, None)
        fit = _reading(pair[0], pair[1], kind, class_names, False, None, "calibration")
    return evaluate_reading(
        reading,
        calibration=fit,
        n_bins=bins,
        binning=binning,
        top_k=top_k,
        worst_fraction=worst_fraction,
        images=None if images is None else as_array(images, "images"),
    )


def _reading(
    predictions: Any,
    labels: Any,
    kind: str,
    class_names: Sequence[str] | None,
    renormalize: bool,
    ids: Any,
    name: str,
) -> Any:
    if isinstance(predictions, (str, os.PathLike)):
        source = open_predictions(predictions, labels)
    else:
        values, labels, names = split_frame(predictions, labels)
        if labels is None:
            raise ValueError(f"{name}: give the labels, one per row")
        source = ArraySource(
            as_array(values, name),
            as_array(labels, "labels"),
            name=name,
            names=None if names is None else tuple(names),
            ids=None if ids is None else as_array(ids, "ids"),
        )
    names = None if class_names is None else list(class_names)
    return read_source(source, kind=kind, class_names=names, renormalize=renormalize)
