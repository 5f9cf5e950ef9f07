"""Temperature scaling: one scalar ``T > 0`` divides every logit, fitted on held-out rows.

``T* = argmin_T  -1/N sum_i ln softmax(z_i / T)[y_i]``.  The loss is convex in ``b = 1/T``:
``f'(b) = mean_i (E_p[z_i] - z_iy)``, ``f''(b) = mean_i Var_p[z_i]`` with ``p = softmax(b z_i)``,
so Newton's method safeguarded by bisection finds it in a few steps.  Each step is one pass over
the rows, given as blocks (:func:`fit_temperature_blocks`), so a calibration file of any size
is never held in memory at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from logloss.activations import log_softmax
from logloss.insight.checks import check_pair

# Temperature search interval: T in [1/100, 100] covers any model worth calibrating.
TEMPERATURE_RANGE = (1e-2, 1e2)

Blocks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]  # () -> (z (n, C), y (n,)) ...


def log_probabilities(logits: np.ndarray) -> np.ndarray:
    """ln softmax(z) row-wise, (N, C) float64: log space so that ln p(true) never underflows."""
    return np.asarray(log_softmax(logits, axis=-1), dtype=np.float64)


def scaled_nll_sums(logits: np.ndarray, target: np.ndarray, beta: float) -> np.ndarray:
    """``[sum_i nll_i, sum_i (E_p[z_i] - z_iy), sum_i Var_p[z_i]]`` of ``beta * z`` (3,)."""
    rows = np.arange(len(target))
    log_p = log_probabilities(beta * logits)  # (N, C)
    p = np.exp(log_p)
    # A masked class (-inf logit) has p = 0 exactly: count it as 0, not 0 * inf = NaN.
    z = np.where(p > 0, logits, 0.0)
    mean_z = np.einsum("ij,ij->i", p, z)  # (N,) E_p[z]
    var_z = np.einsum("ij,ij->i", p, z * z) - mean_z**2
    return np.array(
        [
            -log_p[rows, target].sum(),
            (mean_z - logits[rows, target]).sum(),
            np.maximum(var_z, 0.0).sum(),
        ]
    )


def scaled_nll(blocks: Blocks, beta: float, *, with_rows: bool = False) -> tuple:
    """Mean NLL of ``beta * z`` over all blocks and its first two derivatives in ``beta``;
    with ``with_rows``, ``(rows, mean NLL)`` instead."""
    total, rows = np.zeros(3), 0
    for z, y in blocks():
        total += scaled_nll_sums(z, y, beta)
        rows += len(y)
    value, slope, curvature = total / rows
    if with_rows:
        return rows, float(value)
    return float(value), float(slope), float(curvature)


def fit_temperature_blocks(blocks: Blocks, *, tol: float = 1e-10, max_iter: int = 100) -> float:
    """The temperature minimising the mean cross-entropy over ``blocks()`` (see module doc).

    Returns T clamped to :data:`TEMPERATURE_RANGE` when the optimum lies beyond it.
    """
    lo, hi = 1.0 / TEMPERATURE_RANGE[1], 1.0 / TEMPERATURE_RANGE[0]  # bracket on b = 1/T
    if scaled_nll(blocks, lo)[1] >= 0:
        return 1.0 / lo  # loss grows from the smallest b: as hot as allowed
    if scaled_nll(blocks, hi)[1] <= 0:
        return 1.0 / hi  # loss still falls at the largest b: as cold as allowed
    beta = 1.0
    for _ in range(max_iter):
        _, slope, curvature = scaled_nll(blocks, beta)
        if slope > 0:
            hi = beta
        else:
            lo = beta
        if hi - lo <= tol * beta or slope == 0:
            break
        step = beta - slope / curvature if curvature > 0 else math.nan
        beta = step if lo < step < hi else 0.5 * (lo + hi)  # Newton, else bisect
    return 1.0 / beta


def check_fit_rows(logits: np.ndarray, target: np.ndarray, offset: int = 0) -> None:
    """A true class at logit -inf has infinite loss at every temperature: refuse it."""
    bad = np.isneginf(logits[np.arange(len(target)), target])
    if bad.any():
        raise ValueError(
            f"row {offset + int(np.argmax(bad))}: a true class has logit -inf (probability 0): "
            "its loss is infinite at every temperature, so no temperature can be fitted"
        )


def fit_temperature(logits: Any, target: Any, *, tol: float = 1e-10, max_iter: int = 100) -> float:
    """The temperature ``T`` minimising the mean cross-entropy of ``softmax(z / T)``.

    ``T* = argmin_T  -1/N sum_i ln softmax(z_i / T)[y_i]``, found as ``b = 1/T`` by Newton's
    method safeguarded by bisection (the loss is convex in b), within :data:`TEMPERATURE_RANGE`.

    Args:
        logits: (N, C) validation logits.
        target: (N,) validation classes.
        tol: stop when the bracket on ``b`` is narrower than ``tol * b``.

    Returns:
        T > 0 (clamped to the range's end when the optimum lies beyond it).

    >>> z = np.array([[4.0, 0.0]] * 4)  # right 3 times in 4: sigmoid(4 / T) = 3/4, T = 4 / ln 3
    >>> round(fit_temperature(z, np.array([0, 0, 0, 1])), 6), round(4 / float(np.log(3)), 6)
    (3.640957, 3.640957)
    """
    z, y = check_pair(logits, target, "temperature")
    check_fit_rows(z, y)
    return fit_temperature_blocks(lambda: [(z, y)], tol=tol, max_iter=max_iter)
