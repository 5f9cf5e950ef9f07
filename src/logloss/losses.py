"""The cross-entropy family with PyTorch's semantics: cross_entropy, nll_loss and the binary losses.

``cross_entropy = log_softmax + nll_loss``: the loss of one prediction is ``-log p(target)``, the
negative log-likelihood of the observed class under the softmax of the logits.  All functions take
NumPy arrays or torch tensors and return the same kind; torch results are differentiable and their
gradients equal PyTorch's.  Each public function validates its inputs and explains what is wrong
(``ValueError``); the private ``_*_kernel`` functions only compute, written once for both kinds
against the small op namespace of :mod:`logloss._tensors`.

Naming: every ``*_loss`` / ``*cross_entropy`` is lower-is-better, reductions are ``"none"``
(one loss per sample), ``"sum"`` and ``"mean"``.  Details and tolerances: ``docs/losses.md``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from logloss._checks import (
    check_binary_target,
    check_broadcastable,
    check_class_axis,
    check_class_weight,
    check_in_unit_interval,
    check_index_target,
    check_label_smoothing,
    check_probability_target,
    check_reduction,
    is_float,
)
from logloss._tensors import Array, Ops, as_float, is_tensor, ops_for, torch_module
from logloss.activations import log_sigmoid, log_softmax

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "nll_loss",
]

# PyTorch clamps log(p) and log(1 - p) at -100 in binary_cross_entropy so that p = 0 or 1 gives a
# finite loss; its backward divides by max(p (1 - p), 1e-12), a float32 constant in ATen.
_BCE_LOG_MIN = -100.0
_BCE_GRAD_EPS = float(np.float32(1e-12))


# ---------------------------------------------------------------------------------------------
# Public functions: validate at the boundary, then call a kernel.


def cross_entropy(
    logits: Array,
    target: Array,
    *,
    weight: Array | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Array:
    """Cross-entropy of softmax(logits) against targets, as ``torch.nn.functional.cross_entropy``.

    Formula (class-index target y, class weights w, smoothing e, C classes):
    ``l = (1 - e) * w[y] * -log_softmax(x)[y] + (e / C) * sum_c w[c] * -log_softmax(x)[c]``,
    ``l = 0`` where ``y == ignore_index``; ``"mean"`` divides the sum by ``sum(w[y])`` over
    non-ignored targets (NaN when all are ignored).  Probability targets q (same shape as the
    logits): ``l = -sum_c w[c] * q'[c] * log_softmax(x)[c]`` with ``q' = (1 - e) q + e / C``;
    ``"mean"`` divides by the number of samples.

    Args:
        logits: unnormalised scores, shape (C,), (N, C) or (N, C, d1, ..., dK); classes on axis 1
            (axis 0 for a single sample of shape (C,)).
        target: class indices (integer dtype), shape (), (N,) or (N, d1, ..., dK), each in [0, C)
            or equal to ``ignore_index``; or class probabilities (float dtype), logits' shape.
        weight: optional per-class weights, shape (C,).
        ignore_index: a class-index target value that contributes no loss (index targets only).
        reduction: ``"none"`` (shape of the target without the class axis), ``"sum"`` or ``"mean"``.
        label_smoothing: e in [0, 1], mixing the target with the uniform distribution.
    Returns:
        the loss, same kind and dtype as ``logits`` (a 0-d array/tensor unless ``"none"``).

    >>> logits = np.array([[2.0, 0.0, 0.0]])
    >>> float(cross_entropy(logits, np.array([0])))  # -log(e^2 / (e^2 + 2))
    0.2395447...
    """
    x, restore = as_float(logits, "logits", widen_torch=True)
    check_reduction(reduction)
    smoothing = check_label_smoothing(label_smoothing)
    n_classes = check_class_axis(x, "logits")
    w = check_class_weight(weight, x, n_classes)
    ops = ops_for(x)
    if is_float(target):
        q = check_probability_target(target, x)
        return _finish(restore, _probability_ce_kernel, ops, x, q, w, reduction, smoothing)
    t, ignore = check_index_target(target, x, n_classes, ignore_index, "logits")
    return _finish(restore, _index_ce_kernel, ops, x, t, w, ignore, reduction, smoothing)


def nll_loss(
    log_probs: Array,
    target: Array,
    *,
    weight: Array | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Array:
    """Negative log-likelihood of class-index targets, as ``torch.nn.functional.nll_loss``.

    Formula: ``l = -w[y] * log_probs[y]`` per sample (0 where ``y == ignore_index``); ``"mean"``
    is ``sum(l) / sum(w[y])`` over non-ignored targets (NaN when all are ignored).

    Args:
        log_probs: log-probabilities (e.g. from ``log_softmax``), shape (C,), (N, C) or
            (N, C, d1, ..., dK), classes on axis 1 (axis 0 for shape (C,)).
        target: integer class indices, shape (), (N,) or (N, d1, ..., dK), in [0, C) or
            ``ignore_index``.
        weight: optional per-class weights, shape (C,).
        ignore_index: a target value that contributes no loss.
        reduction: ``"none"``, ``"sum"`` or ``"mean"``.
    Returns:
        the loss, same kind and dtype as ``log_probs``.

    >>> float(nll_loss(np.log([[0.25, 0.75]]), np.array([1])))  # -log(0.75)
    0.2876820...
    """
    lp, restore = as_float(log_probs, "log_probs", widen_torch=True)
    check_reduction(reduction)
    n_classes = check_class_axis(lp, "log_probs")
    w = check_class_weight(weight, lp, n_classes)
    t, ignore = check_index_target(target, lp, n_classes, ignore_index, "log_probs")
    return _finish(restore, _nll_kernel, ops_for(lp), lp, t, w, ignore, reduction)


def binary_cross_entropy(
    probs: Array, target: Array, *, weight: Array | None = None, reduction: str = "mean"
) -> Array:
    """Binary cross-entropy of probabilities, as ``torch.nn.functional.binary_cross_entropy``.

    Formula: ``l = -w * (y * max(log p, -100) + (1 - y) * max(log(1 - p), -100))`` elementwise;
    the clamp at -100 (PyTorch's) keeps p = 0 or 1 finite.  Prefer
    :func:`binary_cross_entropy_with_logits`, which never leaves log space.

    Args:
        probs: probabilities p in [0, 1], any shape.
        target: probabilities y in [0, 1], same shape as ``probs``.
        weight: optional rescaling weight, broadcastable to ``probs``' shape.
        reduction: ``"none"`` (``probs``' shape), ``"sum"`` or ``"mean"`` (over all elements).
    Returns:
        the loss, same kind and dtype as ``probs``.

    >>> float(binary_cross_entropy(np.array([0.8]), np.array([1.0])))  # -log(0.8)
    0.2231435...
    """
    p, restore = as_float(probs, "probs", widen_torch=True)
    check_reduction(reduction)
    check_in_unit_interval(p, "probs", "probabilities")
    y = check_binary_target(target, p, "probs")
    w = check_broadcastable(weight, p, "weight")
    return _finish(restore, _bce_kernel, ops_for(p), p, y, w, reduction)


def binary_cross_entropy_with_logits(
    logits: Array,
    target: Array,
    *,
    weight: Array | None = None,
    pos_weight: Array | None = None,
    reduction: str = "mean",
) -> Array:
    """Binary cross-entropy on logits, as ``torch.nn.functional.binary_cross_entropy_with_logits``.

    Formula: ``l = -w * (pw * y * log_sigmoid(x) + (1 - y) * log_sigmoid(-x))``, computed in log
    space as PyTorch does: ``l = w * ((1 - y) * x - (1 + (pw - 1) * y) * log_sigmoid(x))`` (using
    ``log_sigmoid(-x) = log_sigmoid(x) - x``), so logits of +-1e4 stay exact.

    Args:
        logits: any shape.
        target: probabilities y in [0, 1], same shape as ``logits``.
        weight: optional rescaling weight, broadcastable to ``logits``' shape.
        pos_weight: optional weight pw of positive examples, broadcastable to ``logits``' shape
            (typically shape (C,) for C independent labels on the last axis).
        reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over all elements).
    Returns:
        the loss, same kind and dtype as ``logits``.

    >>> float(binary_cross_entropy_with_logits(np.array([0.0]), np.array([1.0])))  # log 2
    0.6931471...
    """
    x, restore = as_float(logits, "logits", widen_torch=True)
    check_reduction(reduction)
    y = check_binary_target(target, x, "logits")
    w = check_broadcastable(weight, x, "weight")
    pw = check_broadcastable(pos_weight, x, "pos_weight")
    return _finish(restore, _bce_with_logits_kernel, ops_for(x), x, y, w, pw, reduction)


# ---------------------------------------------------------------------------------------------
# Running a kernel.


def _finish(restore: Any, kernel: Any, ops: Ops, x: Array, *args: Any) -> Array:
    """Run a kernel (NumPy warnings about inf/NaN silenced: they are results, as in torch)."""
    if is_tensor(x):
        return restore(kernel(ops, x, *args))
    with np.errstate(all="ignore"):
        return restore(kernel(ops, x, *args))


# ---------------------------------------------------------------------------------------------
# Kernels: compute only.  x: (C,) or (N, C, d1..dK); t: () or (N, d1..dK); w: (C,) or None.


def _class_axis(x: Array) -> int:
    return 0 if x.ndim == 1 else 1


def _broadcast_class_weight(ops: Ops, w: Array, x: Array) -> Array:
    # (C,) -> (1, C, 1, ..., 1) so it multiplies x along the class axis.
    return w if x.ndim == 1 else ops.reshape(w, (1, -1) + (1,) * (x.ndim - 2))


def _reduce_per_sample(
    ops: Ops, losses: Array, w_t: Array | None, ignored: Array | None, reduction: str
) -> Array:
    """Reduce per-sample losses; "mean" is the weighted mean sum(w[y] * l) / sum(w[y]).

    ``w_t``: per-sample weights (None: all 1); ``ignored``: mask of skipped samples (None: none).
    All samples ignored gives 0 / 0 = NaN, as in PyTorch.
    """
    if reduction == "none":
        return losses
    total = ops.sum(losses)
    if reduction == "sum":
        return total
    if w_t is not None:
        return total / ops.sum(w_t)
    return total / (math.prod(losses.shape) if ignored is None else ops.count(~ignored))


def _nll_terms(
    ops: Ops, lp: Array, t: Array, w: Array | None, ignore_index: int | None
) -> tuple[Array, Array | None, Array | None]:
    """Per-sample ``-w[y] * lp[y]``, the weights ``w[y]`` (None: no weights), the ignored mask.

    ``ignore_index=None`` means no target equals it (checked at the boundary), so nothing is
    masked.  Otherwise ignored samples get loss 0 and weight 0.  Shapes: lp (C,) or
    (N, C, d1..dK); t and the three results () or (N, d1..dK).
    """
    axis = _class_axis(lp)
    ignored = None if ignore_index is None else t == ignore_index
    # Class 0 always exists: ignored samples pick it, and their value is masked out below.
    safe = t if ignored is None else ops.where(ignored, 0, t)
    index_shape = (*t.shape[:1], 1, *t.shape[1:]) if lp.ndim > 1 else (1,)
    picked = ops.reshape(ops.take_along_axis(lp, ops.reshape(safe, index_shape), axis), t.shape)
    w_t = None if w is None else w[safe]
    if ignored is None:
        return (-picked if w_t is None else -w_t * picked), w_t, None
    w_t = None if w_t is None else ops.where(ignored, 0, w_t)
    # where, not multiplication: an ignored entry may sit on a -inf log-probability (0 * inf = NaN).
    losses = ops.where(ignored, 0, -picked if w_t is None else -w_t * picked)
    return losses, w_t, ignored


def _nll_kernel(
    ops: Ops, lp: Array, t: Array, w: Array | None, ignore_index: int | None, reduction: str
) -> Array:
    losses, w_t, ignored = _nll_terms(ops, lp, t, w, ignore_index)
    return _reduce_per_sample(ops, losses, w_t, ignored, reduction)


def _index_ce_kernel(
    ops: Ops,
    x: Array,
    t: Array,
    w: Array | None,
    ignore_index: int | None,
    reduction: str,
    smoothing: float,
) -> Array:
    axis = _class_axis(x)
    lp = log_softmax(x, axis=axis)  # log space: never log(softmax(x))
    losses, w_t, ignored = _nll_terms(ops, lp, t, w, ignore_index)
    nll = _reduce_per_sample(ops, losses, w_t, ignored, reduction)
    if smoothing == 0.0:
        return nll  # (not nll + 0 * smooth: smooth is inf when any logit is -inf)
    # PyTorch's smoothing term: the uniform part, sum_c w[c] * -lp[c], with ignored samples zeroed
    # and the same denominator as the nll term (sum of w[y] over non-ignored samples).
    weighted = lp if w is None else lp * _broadcast_class_weight(ops, w, lp)
    smooth = -ops.sum(weighted, axis)
    smooth = smooth if ignored is None else ops.where(ignored, 0, smooth)
    smooth = _reduce_per_sample(ops, smooth, w_t, ignored, reduction)
    return (1 - smoothing) * nll + smooth * (smoothing / x.shape[axis])


def _probability_ce_kernel(
    ops: Ops, x: Array, q: Array, w: Array | None, reduction: str, smoothing: float
) -> Array:
    axis = _class_axis(x)
    n_classes = x.shape[axis]
    lp = log_softmax(x, axis=axis)
    if smoothing > 0.0:
        q = q * (1 - smoothing) + smoothing / n_classes
    terms = lp * q if w is None else lp * q * _broadcast_class_weight(ops, w, lp)
    if reduction == "none":
        return -ops.sum(terms, axis)
    total = -ops.sum(terms)
    # "mean" divides by the number of samples N * d1 * ... * dK (0 samples: NaN, as PyTorch).
    return total if reduction == "sum" else total / (math.prod(x.shape) / n_classes)


def _reduce_elementwise(losses: Array, reduction: str) -> Array:
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.mean()


def _bce_kernel(ops: Ops, p: Array, y: Array, w: Array | None, reduction: str) -> Array:
    losses = _bce_elementwise_torch(p, y) if is_tensor(p) else _bce_elementwise(ops, p, y)
    return _reduce_elementwise(losses if w is None else losses * w, reduction)


def _bce_elementwise(ops: Ops, p: Array, y: Array) -> Array:
    # PyTorch's order of operations: (y - 1) * max(log(1 - p), -100) - y * max(log p, -100).
    log_p = ops.clamp_min(ops.log(p), _BCE_LOG_MIN)
    log_1mp = ops.clamp_min(ops.log1p(-p), _BCE_LOG_MIN)
    return (y - 1) * log_1mp - y * log_p


def _bce_with_logits_kernel(
    ops: Ops, x: Array, y: Array, w: Array | None, pw: Array | None, reduction: str
) -> Array:
    log_sig = log_sigmoid(x)  # log p, and log(1 - p) = log_sig - x: both exact in log space
    if pw is not None:
        log_sig = log_sig * ((pw - 1) * y + 1)
    losses = (1 - y) * x - log_sig
    return _reduce_elementwise(losses if w is None else losses * w, reduction)


# ---------------------------------------------------------------------------------------------
# torch-only: binary_cross_entropy needs PyTorch's own backward.  Differentiating the clamped
# logs would give NaN at p = 0 or 1 (clamp passes 0, log' = 1/0); PyTorch instead uses
# dl/dp = (p - y) / max(p (1 - p), 1e-12) and dl/dy = -logit(p).

_BCE_FUNCTION: list[Any] = []


def _bce_elementwise_torch(p: Array, y: Array) -> Array:
    if not _BCE_FUNCTION:
        _BCE_FUNCTION.append(_make_bce_function())
    return _BCE_FUNCTION[0].apply(p, y)


def _make_bce_function() -> Any:
    torch = torch_module()
    ops = ops_for(torch.empty(0))

    class _BinaryCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, p: Any, y: Any) -> Any:
            ctx.save_for_backward(p, y)
            return _bce_elementwise(ops, p, y)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> tuple[Any, Any]:
            p, y = ctx.saved_tensors
            grad_p = grad_y = None
            if ctx.needs_input_grad[0]:
                grad_p = grad * (p - y) / torch.clamp_min((1 - p) * p, _BCE_GRAD_EPS)
            if ctx.needs_input_grad[1]:
                grad_y = grad * -torch.logit(p)
            return grad_p, grad_y

    return _BinaryCrossEntropy
