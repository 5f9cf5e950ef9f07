"""Activations that turn logits into probabilities: sigmoid, softmax and their logs.

Every function takes a NumPy array (float16/32/64, or anything ``np.asarray`` accepts) or a torch
tensor, and returns the same kind, dtype and device.  torch inputs go through torch's own stable
kernels (so they stay differentiable and match PyTorch bit for bit); NumPy inputs are computed in
log space with the max-shift trick, float16 in float32 (see ``docs/losses.md``).

Behaviour at the edges (same as PyTorch): logits of +-1e4 give finite, correct results; a -inf
entry gets probability 0 (log-probability -inf); a row that is entirely -inf, or holds +inf, has
no defined softmax and gives NaN, while ``logsumexp`` of it is -inf / +inf.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from logloss._tensors import Array, as_float, is_tensor, normalize_axis, torch_module

__all__ = ["log_sigmoid", "log_softmax", "logsumexp", "sigmoid", "softmax"]


def sigmoid(x: Array) -> Array:
    """Logistic sigmoid, elementwise: a logit -> a probability in [0, 1].

    Formula: ``sigmoid(t) = 1 / (1 + exp(-t))``, computed as ``exp(t) / (1 + exp(t))`` for t < 0
    so that ``exp`` never overflows.

    Args:
        x: logits, any shape.
    Returns:
        probabilities, same shape, kind and dtype as ``x``.

    >>> sigmoid(np.array([0.0, 2.0, -2.0])).round(4)
    array([0.5   , 0.8808, 0.1192])
    """
    return _apply(x, "x", _sigmoid_np, lambda t: t.sigmoid())


def log_sigmoid(x: Array) -> Array:
    """Log of the sigmoid, elementwise, without forming the sigmoid.

    Formula: ``log_sigmoid(t) = -log(1 + exp(-t)) = min(t, 0) - log1p(exp(-|t|))``; the second
    form never overflows and keeps full precision for large |t| (log(1 - sigmoid(t)) is
    ``log_sigmoid(-t)``).

    Args:
        x: logits, any shape.
    Returns:
        log-probabilities (<= 0), same shape, kind and dtype as ``x``.

    >>> log_sigmoid(np.array([0.0, -1e4]))
    array([-6.93147181e-01, -1.00000000e+04])
    """

    def torch_fn(t: Any) -> Any:
        return torch_module().nn.functional.logsigmoid(t)

    return _apply(x, "x", _log_sigmoid_np, torch_fn)


def softmax(x: Array, axis: int = -1) -> Array:
    """Softmax along ``axis``: logits -> probabilities in [0, 1] that sum to 1.

    Formula: ``softmax(t)_i = exp(t_i) / sum_j exp(t_j) = exp(t_i - m) / sum_j exp(t_j - m)`` with
    ``m = max_j t_j`` (the shift cancels and keeps every exponent <= 0).

    Args:
        x: logits, shape (..., C, ...) with the classes along ``axis``.
        axis: the class axis (default the last).
    Returns:
        probabilities, same shape, kind and dtype as ``x``.

    >>> softmax(np.array([0.0, np.log(3.0)]))
    array([0.25, 0.75])
    """
    return _apply_axis(x, axis, _softmax_np, lambda t, d: t.softmax(dim=d))


def log_softmax(x: Array, axis: int = -1) -> Array:
    """Log of the softmax along ``axis``, computed in log space.

    Formula: ``log_softmax(t)_i = t_i - logsumexp(t) = (t_i - m) - log(sum_j exp(t_j - m))``.

    Args:
        x: logits, shape (..., C, ...) with the classes along ``axis``.
        axis: the class axis (default the last).
    Returns:
        log-probabilities (<= 0), same shape, kind and dtype as ``x``.

    >>> log_softmax(np.array([1e4, 0.0]))
    array([     0., -10000.])
    """
    return _apply_axis(x, axis, _log_softmax_np, lambda t, d: t.log_softmax(dim=d))


def logsumexp(x: Array, axis: int = -1) -> Array:
    """Log of the sum of exponentials along ``axis``, without overflow.

    Formula: ``logsumexp(t) = log(sum_j exp(t_j)) = m + log(sum_j exp(t_j - m))``, ``m = max_j t_j``
    (``m`` is replaced by 0 when it is infinite, so all -inf gives -inf and +inf gives +inf).

    Args:
        x: values, shape (..., C, ...).
        axis: the axis to reduce (default the last).
    Returns:
        ``x``'s shape without ``axis``; same kind and dtype as ``x``.

    >>> float(logsumexp(np.array([1000.0, 1000.0])))  # 1000 + log 2, no overflow
    1000.693147...
    """
    return _apply_axis(x, axis, _logsumexp_np, lambda t, d: t.logsumexp(dim=d))


# ---------------------------------------------------------------------------------------------
# Dispatch: validate and convert at the boundary, compute in the private kernels below.


def _apply(x: Array, name: str, np_fn: Callable[[np.ndarray], np.ndarray], torch_fn: Any) -> Array:
    xc, restore = as_float(x, name)
    if is_tensor(xc):
        return torch_fn(xc)
    with np.errstate(invalid="ignore", over="ignore"):
        return restore(np_fn(xc))


def _apply_axis(
    x: Array, axis: int, np_fn: Callable[[np.ndarray, int], np.ndarray], torch_fn: Any
) -> Array:
    xc, restore = as_float(x, "x")
    ax = normalize_axis(axis, xc.ndim)
    if is_tensor(xc):
        return torch_fn(xc, ax)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if xc.ndim == 0:  # a scalar is a single class, as in torch
            return restore(np_fn(xc.reshape(1), 0).reshape(()))
        return restore(np_fn(xc, ax))


# ---------------------------------------------------------------------------------------------
# NumPy kernels (float32/float64 in, same dtype out).


def _sigmoid_np(x: np.ndarray) -> np.ndarray:
    # e = exp(-|x|) <= 1 never overflows; x >= 0: 1/(1+e), x < 0: e/(1+e).
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def _log_sigmoid_np(x: np.ndarray) -> np.ndarray:
    return (np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))).astype(x.dtype, copy=False)


def _shifted(x: np.ndarray, axis: int) -> np.ndarray:
    # x - max along axis: every exponent <= 0 (NaN for an all -inf row or a +inf entry, as torch).
    return x - np.max(x, axis=axis, keepdims=True, initial=-np.inf)


def _softmax_np(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(_shifted(x, axis))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax_np(x: np.ndarray, axis: int) -> np.ndarray:
    z = _shifted(x, axis)
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def _logsumexp_np(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    m = np.where(np.isinf(m), 0.0, m).astype(x.dtype, copy=False)  # keep +-inf rows exact
    s = np.sum(np.exp(x - m), axis=axis, keepdims=True)
    return np.squeeze(np.log(s) + m, axis=axis)
