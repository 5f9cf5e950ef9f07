"""What a predictions file holds (logits, probabilities or log-probabilities) and how each
becomes the numbers every diagnostic needs.

``auto`` decides on the first block of rows (:func:`detect_kind`)::

    every value in [0, 1] and every row summing to 1 within 1e-6   -> probs
    every value <= 0 and every row's logsumexp within 1e-6 of 0    -> log-probs
    otherwise                                                       -> logits

One column is a binary problem: the column is P(class 1) (``probs``) or its logit (``logits``),
and the sigmoid path applies (:func:`score_binary`).  :func:`score` turns a block of rows into a
:class:`Scored` block: per row the loss ``-ln p(true)``, the Brier term, the predicted class,
its probability and the probability of the true class, all in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("logits", "probs", "log-probs")
# A row of probabilities must sum to 1 within this (float32 softmax outputs do, by ~1e-7).
SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class KindChoice:
    """The kind of the values, why, and a warning when the values could be another kind."""

    kind: str
    reason: str
    warning: str | None = None


@dataclass(frozen=True)
class Scored:
    """One block of rows, scored (float64; ``n`` rows, ``C`` classes).

    ``loss = -ln p(true)`` (probabilities clipped to ``[eps, 1 - eps]`` of their dtype first, as
    scikit-learn does); ``brier`` is the multiclass term ``sum_c (p_c - [c = y])^2`` or, for a
    binary problem, scikit-learn's binary ``(P(1) - y)^2``; ``probabilities`` are the rows as
    given (``softmax(z)`` for logits).
    """

    offset: int  # row number of the first row in the whole source
    target: np.ndarray  # (n,) int64
    loss: np.ndarray  # (n,)
    brier: np.ndarray  # (n,)
    predicted: np.ndarray  # (n,) int64
    confidence: np.ndarray  # (n,) p(predicted)
    p_true: np.ndarray  # (n,) p(target)
    probabilities: np.ndarray  # (n, C)
    ids: np.ndarray | None = None  # (n,) the rows' ids, when the source has them

    def __len__(self) -> int:
        return len(self.target)


@dataclass
class Renormalized:
    """Rows whose probabilities did not sum to 1 and were divided by their sum (--renormalize)."""

    rows: int = 0
    largest_change: float = 0.0  # max |sum - 1| over the changed rows


# --------------------------------------------------------------------------- detection


def detect_kind(values: np.ndarray) -> KindChoice:
    """The kind of ``values`` (n, C) by the rules of the module doc (C = 1: a binary column).

    >>> detect_kind(np.array([[0.2, 0.8], [0.5, 0.5]])).kind
    'probs'
    >>> detect_kind(np.log(np.array([[0.2, 0.8]]))).kind
    'log-probs'
    >>> detect_kind(np.array([[2.0, -1.0]])).kind
    'logits'
    """
    x = np.asarray(values, dtype=np.float64)
    rows = f"the first {len(x)} rows"
    if not np.isfinite(x[~np.isneginf(x)]).all():
        return KindChoice("logits", f"{rows} hold NaN or +inf, which no probability is")
    in_unit = bool(((x >= 0) & (x <= 1)).all())
    if x.shape[1] == 1:
        if in_unit:
            return KindChoice(
                "probs",
                f"one column with every value of {rows} in [0, 1]: read as P(class 1)",
                "one column in [0, 1] could also be logits; pass --kind logits if it is",
            )
        return KindChoice("logits", "one column with values outside [0, 1]: read as logits")
    if in_unit and bool((np.abs(x.sum(axis=1) - 1.0) <= SUM_TOLERANCE).all()):
        return KindChoice("probs", f"every value of {rows} is in [0, 1] and every row sums to 1")
    if bool((x <= 0).all()) and bool((np.abs(_logsumexp(x)) <= SUM_TOLERANCE).all()):
        return KindChoice(
            "log-probs", f"every value of {rows} is <= 0 and every row's logsumexp is 0"
        )
    if in_unit:
        return KindChoice(
            "logits",
            f"values of {rows} are in [0, 1] but rows do not sum to 1: read as logits",
            "these could be probabilities that do not sum to 1; if so pass "
            "--kind probs --renormalize",
        )
    if bool((x <= 0).all()):
        return KindChoice(
            "logits",
            f"values of {rows} are <= 0 but rows' logsumexp is not 0: read as logits",
            "these could be log-probabilities that do not sum to 1; if so pass "
            "--kind log-probs --renormalize",
        )
    return KindChoice("logits", f"{rows} are neither probabilities nor log-probabilities")


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """Row-wise ``ln sum_j e^x_j`` (n,), shifted by the row maximum so nothing overflows."""
    top = x.max(axis=1)
    safe = np.where(np.isfinite(top), top, 0.0)  # an all -inf row: logsumexp -inf
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - safe[:, None]).sum(axis=1)) + safe


# --------------------------------------------------------------------------- validation


class BadRow(ValueError):
    """A value that breaks a rule, with its row and column (turned into a message that names the
    file by the reader that knows it)."""

    def __init__(self, row: int, column: int | None, rule: str, fix: str) -> None:
        super().__init__(
            f"row {row}{'' if column is None else f', column {column}'}: {rule}; {fix}"
        )
        self.row, self.column, self.rule, self.fix = row, column, rule, fix


def _first_bad(mask: np.ndarray) -> tuple[int, int | None]:
    """(row, column) of the first True of a (n,) or (n, C) mask."""
    where = np.argwhere(mask)[0]
    return int(where[0]), (int(where[1]) if mask.ndim == 2 else None)


def check_values(values: np.ndarray, kind: str, offset: int) -> None:
    """Raise :class:`BadRow` at the first value ``kind`` does not allow (NaN anywhere; +inf
    except in binary logits; negative or > 1 probabilities; log-probabilities > 0)."""
    if kind == "logits" and np.isfinite(values).all():
        return  # the common case, in one pass
    if kind == "probs" and np.isfinite(values).all() and 0 <= values.min() <= values.max() <= 1:
        return
    rules = {
        "probs": (
            (
                np.isnan(values) | np.isinf(values),
                "NaN or inf in probabilities",
                "probabilities must be numbers in [0, 1]; fix the model's output",
            ),
            (
                values < 0,
                "a negative probability",
                "probabilities are in [0, 1]; pass --kind logits if these are scores",
            ),
            (
                values > 1,
                "a probability above 1",
                "probabilities are in [0, 1]; pass --kind logits if these are scores",
            ),
        ),
        "log-probs": (
            (
                np.isnan(values) | np.isposinf(values),
                "NaN or +inf in log-probabilities",
                "log-probabilities must be <= 0 (-inf is probability 0)",
            ),
            (
                values > SUM_TOLERANCE,
                "a log-probability above 0",
                "log-probabilities are <= 0; pass --kind logits if these are scores",
            ),
        ),
        "logits": (
            (
                np.isnan(values) | (np.isposinf(values) & (values.shape[1] > 1)),
                "NaN or +inf in logits",
                "logits must be finite (-inf marks a masked class)",
            ),
        ),
    }[kind]
    for mask, rule, fix in rules:
        if mask.any():
            row, column = _first_bad(mask)
            raise BadRow(offset + row, column, f"{rule} ({values[row].tolist()[:8]})", fix)


def normalized_rows(
    values: np.ndarray, kind: str, offset: int, renormalize: Renormalized | None
) -> np.ndarray:
    """``values`` (n, C) float64 with each row's total checked: ``sum p = 1`` for probs,
    ``logsumexp = 0`` for log-probs, within :data:`SUM_TOLERANCE`.  A row beyond it is an error
    unless ``renormalize`` is given; then it is divided by its sum (``- logsumexp`` for
    log-probs) and counted there."""
    if kind == "probs":
        total = values.sum(axis=1)
        off = np.abs(total - 1.0)
    else:
        total = _logsumexp(values)
        off = np.abs(total)
    bad = ~(off <= SUM_TOLERANCE)
    if not bad.any():
        return values
    if renormalize is None:
        row = int(np.argmax(bad))
        sums = "sums to" if kind == "probs" else "has logsumexp"
        raise BadRow(
            offset + row,
            None,
            f"the row {sums} {total[row]:.9g}, not {1 if kind == 'probs' else 0} within "
            f"{SUM_TOLERANCE:g}",
            "pass --renormalize to divide each such row by its sum (or --kind logits if these "
            "are scores)",
        )
    if kind == "probs" and (total[bad] <= 0).any():
        row = int(np.flatnonzero(bad & (total <= 0))[0])
        raise BadRow(
            offset + row,
            None,
            "every probability of the row is 0",
            "no renormalisation can make it sum to 1; fix the model's output",
        )
    renormalize.rows += int(bad.sum())
    renormalize.largest_change = max(renormalize.largest_change, float(off[bad].max()))
    fixed = values.copy()
    if kind == "probs":
        fixed[bad] /= total[bad, None]
    else:
        fixed[bad] -= total[bad, None]
    return fixed


# --------------------------------------------------------------------------- scoring


def score(
    values: np.ndarray,
    target: np.ndarray,
    kind: str,
    *,
    offset: int = 0,
    ids: np.ndarray | None = None,
    renormalize: Renormalized | None = None,
    eps: float | None = None,
) -> Scored:
    """Score a block of ``values`` (n, C >= 2) of ``kind`` against ``target`` (n,).

    ``p = softmax(z)`` for logits (``loss = logsumexp(z) - z_y``: log space, no underflow),
    ``p = e^l`` for log-probabilities, ``p`` as given for probabilities; ``eps`` is the machine
    epsilon of the values' dtype (probabilities are clipped to ``[eps, 1 - eps]`` for the loss).
    """
    if kind != "logits":
        check_values(values, kind, offset)
    eps = float(np.finfo(values.dtype).eps) if eps is None else eps
    x = np.asarray(values, dtype=np.float64)
    if kind != "logits":
        x = normalized_rows(x, kind, offset, renormalize)
    rows = np.arange(len(target))
    # (n,) the same class for z, p or ln p (all monotone), and for the stored values
    predicted = np.argmax(values if kind == "logits" else x, axis=1)
    if kind == "logits":
        top = x[rows, predicted]  # (n,) the row maximum; NaN or +inf if the row holds one
        if not np.isfinite(top).all():
            check_values(values, kind, offset)  # names the first NaN or +inf
            row = int(np.argmax(~np.isfinite(top)))
            raise BadRow(
                offset + row,
                None,
                "every logit of the row is -inf",
                "no class has a probability; fix the model's output",
            )
        e = np.exp(x - top[:, None])  # (n, C) in [0, 1], 1 at the maximum
        total = e.sum(axis=1)
        p = e / total[:, None]
        loss = np.log(total) + top - x[rows, target]  # logsumexp(z) - z_y
    elif kind == "log-probs":
        p = np.exp(x)
        loss = -x[rows, target]
    else:
        p = x
        loss = -np.log(np.clip(p[rows, target], eps, 1.0 - eps))
    p_true = p[rows, target]
    residual_sq = np.einsum("ij,ij->i", p, p) - 2.0 * p_true + 1.0  # sum_c (p_c - [c = y])^2
    return Scored(
        offset=offset,
        target=target,
        loss=loss,
        brier=np.maximum(residual_sq, 0.0),
        predicted=predicted.astype(np.int64),
        confidence=p[rows, predicted],
        p_true=p_true,
        probabilities=p,
        ids=ids,
    )


def score_binary(
    values: np.ndarray,
    target: np.ndarray,
    kind: str,
    *,
    offset: int = 0,
    ids: np.ndarray | None = None,
) -> Scored:
    """Score one column (n, 1) of P(class 1) (``probs``) or its logit (``logits``).

    ``loss = -[y ln p + (1 - y) ln(1 - p)]``: from a logit ``t`` as ``-log_sigmoid(t)`` or
    ``-log_sigmoid(-t)`` (``ln(1 - sigmoid(t)) = log_sigmoid(-t)``, no cancellation); from a
    probability with both ``p`` and ``1 - p`` clipped to ``[eps, 1 - eps]`` as scikit-learn's
    ``log_loss`` does.  ``brier = (p - y)^2`` (scikit-learn's binary ``brier_score_loss``);
    predicted class 1 when ``p > 1/2``.
    """
    if kind == "log-probs":
        raise ValueError(
            "one column of log-probabilities is not supported; pass P(class 1) with --kind "
            "probs or its logit with --kind logits"
        )
    check_values(values, kind, offset)
    eps = float(np.finfo(values.dtype).eps)
    column = np.asarray(values[:, 0], dtype=np.float64)
    positive = target == 1
    if kind == "logits":
        p1 = _sigmoid(column)
        loss = -_log_sigmoid(np.where(positive, column, -column))
    else:
        p1 = column
        both = np.clip(np.stack([1.0 - column, column], axis=1), eps, 1.0 - eps)
        loss = -np.log(np.where(positive, both[:, 1], both[:, 0]))
    p = np.stack([1.0 - p1, p1], axis=1)  # (n, 2)
    predicted = (p1 > 0.5).astype(np.int64)
    rows = np.arange(len(target))
    return Scored(
        offset=offset,
        target=target,
        loss=loss,
        brier=(p1 - target) ** 2,
        predicted=predicted,
        confidence=p[rows, predicted],
        p_true=p[rows, target],
        probabilities=p,
        ids=ids,
    )


def _sigmoid(t: np.ndarray) -> np.ndarray:
    """``1 / (1 + e^-t)``, written with ``e^-|t|`` so that it never overflows."""
    e = np.exp(-np.abs(t))
    return np.where(t >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _log_sigmoid(t: np.ndarray) -> np.ndarray:
    """``ln sigmoid(t) = min(t, 0) - ln(1 + e^-|t|)`` (stable for any t, -inf at -inf)."""
    with np.errstate(invalid="ignore"):
        return np.minimum(t, 0.0) - np.log1p(np.exp(-np.abs(t)))


def temperature_logits(values: np.ndarray, kind: str) -> np.ndarray:
    """Logits (n, C) float64 that temperature scaling divides: the logits themselves, ``ln p``
    for probabilities (clipped at the dtype's eps, so no class is -inf) or log-probabilities,
    and ``[0, t]`` for a binary logit ``t`` (``softmax([0, t] / T)[1] = sigmoid(t / T)``)."""
    x = np.asarray(values, dtype=np.float64)
    eps = float(np.finfo(values.dtype).eps)
    if x.shape[1] == 1:
        if kind == "logits":
            return np.concatenate([np.zeros_like(x), x], axis=1)
        p1 = np.clip(x[:, 0], eps, 1.0 - eps)
        return np.log(np.stack([1.0 - p1, p1], axis=1))
    if kind == "probs":
        return np.log(np.clip(x, eps, None))
    return x
