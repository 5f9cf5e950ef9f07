"""Argument checks shared by the losses and the fused kernels: validate at the boundary.

Each check raises a ``ValueError`` that says which value broke which rule and what to do; the
kernels behind the public functions only compute.  Works on NumPy arrays and torch tensors alike
(through :mod:`logloss._tensors`).
"""

from __future__ import annotations

import math

import numpy as np

from logloss._tensors import Array, first_bad, format_index, is_tensor, item, like, torch_module

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"reduction={reduction!r} is not supported; "
            f"use one of {', '.join(map(repr, REDUCTIONS))}"
        )


def check_label_smoothing(label_smoothing: float) -> float:
    try:
        value = float(label_smoothing)
    except (TypeError, ValueError):
        raise ValueError(
            f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}"
        ) from None
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(
            f"label_smoothing={label_smoothing!r} is outside [0, 1]; 0 means no smoothing, "
            "1 means a uniform target"
        )
    return value


def check_class_axis(x: Array, name: str) -> int:
    """The number of classes C of logits/log-probs shaped (C,) or (N, C, ...)."""
    if x.ndim == 0:
        raise ValueError(
            f"{name} must have a class axis: shape (C,), (N, C) or (N, C, d1, ...), got a scalar"
        )
    n_classes = x.shape[0 if x.ndim == 1 else 1]
    if n_classes == 0:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}: the class axis needs at least 1 class"
        )
    return int(n_classes)


def is_float(target: Array) -> bool:
    if is_tensor(target):
        return bool(target.is_floating_point())
    return np.asarray(target).dtype.kind == "f"


def check_index_target(
    target: Array, x: Array, n_classes: int, ignore_index: int, name: str
) -> tuple[Array, int | None]:
    """Class-index targets: integer dtype, x's shape without the class axis, values in [0, C).

    Returns the targets (int64, on x's device) and ``ignore_index``, or None when no target can
    equal it (then the kernels skip the masking: the common case, a cheaper graph).
    """
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise ValueError(f"ignore_index must be an int, got {ignore_index!r}")
    if not is_integer(target):
        raise ValueError(
            f"target must hold integer class indices (or floating class probabilities with "
            f"{name}' shape), got dtype {dtype_name(target)}"
        )
    t = like(target, x, dtype="index")
    expected = tuple(x.shape[:1]) + tuple(x.shape[2:]) if x.ndim >= 2 else ()
    if tuple(t.shape) != expected:
        raise ValueError(
            f"target shape {tuple(t.shape)} does not match {name} shape {tuple(x.shape)}: "
            f"class-index targets need shape {expected} ({name}' shape without the class axis "
            f"{0 if x.ndim == 1 else 1}); for class probabilities pass a float array of shape "
            f"{tuple(x.shape)}"
        )
    low, high = min_max(t)  # one pass (and one device sync) for the common, valid case
    if low >= 0 and high < n_classes:
        return t, ignore_index if low <= ignore_index <= high else None
    bad = first_bad(((t < 0) | (t >= n_classes)) & (t != ignore_index))
    if bad is not None:
        raise ValueError(
            f"target value {item(t, bad)} at index {format_index(bad)} is not a class index: "
            f"targets must be in [0, {n_classes}) for {n_classes} classes, or equal "
            f"ignore_index={ignore_index} to be skipped; check the labels or the number of classes"
        )
    return t, ignore_index


def min_max(t: Array) -> tuple[int, int]:
    """(min, max) of an integer array/tensor; (0, -1) when it is empty."""
    if math.prod(t.shape) == 0:
        return 0, -1
    if is_tensor(t):
        low, high = torch_module().aminmax(t)
        return tuple(torch_module().stack((low, high)).tolist())
    return int(t.min()), int(t.max())


def check_probability_target(target: Array, x: Array) -> Array:
    q = like(target, x)
    if tuple(q.shape) != tuple(x.shape):
        raise ValueError(
            f"target has a float dtype, so it is read as class probabilities, which need the "
            f"logits' shape {tuple(x.shape)}, got {tuple(q.shape)}; for class indices pass an "
            "integer array"
        )
    check_finite(q, "target")
    bad = first_bad(q < 0)
    if bad is not None:
        raise ValueError(
            f"target probability {item(q, bad)} at index {format_index(bad)} is negative; "
            "class-probability targets must be >= 0"
        )
    return q


def check_binary_target(target: Array, x: Array, name: str) -> Array:
    y = like(target, x)
    if tuple(y.shape) != tuple(x.shape):
        raise ValueError(
            f"target shape {tuple(y.shape)} does not match {name} shape {tuple(x.shape)}; "
            "binary losses need one target per element"
        )
    check_in_unit_interval(y, "target", "probabilities (0/1 labels or soft labels)")
    return y


def check_in_unit_interval(values: Array, name: str, what: str) -> None:
    bad = first_bad(~((values >= 0) & (values <= 1)))  # NaN fails both comparisons
    if bad is not None:
        raise ValueError(
            f"{name} value {item(values, bad)} at index {format_index(bad)} is outside [0, 1]; "
            f"{name} must hold {what}"
            + ("; to pass logits use binary_cross_entropy_with_logits" if name == "probs" else "")
        )


def check_finite(values: Array, name: str) -> None:
    isfinite = values.isfinite() if is_tensor(values) else np.isfinite(values)
    bad = first_bad(~isfinite)
    if bad is not None:
        raise ValueError(
            f"{name} value {item(values, bad)} at index {format_index(bad)} is not finite; "
            f"{name} must hold finite numbers"
        )


def check_class_weight(weight: Array | None, x: Array, n_classes: int) -> Array | None:
    if weight is None:
        return None
    w = like(weight, x)
    if tuple(w.shape) != (n_classes,):
        raise ValueError(
            f"weight has shape {tuple(w.shape)}, but the logits have {n_classes} classes; "
            f"pass one weight per class, shape ({n_classes},)"
        )
    check_finite(w, "weight")
    return w


def check_broadcastable(weight: Array | None, x: Array, name: str) -> Array | None:
    if weight is None:
        return None
    w = like(weight, x)
    try:
        shape = np.broadcast_shapes(tuple(w.shape), tuple(x.shape))
    except ValueError:
        shape = None
    if shape != tuple(x.shape):
        raise ValueError(
            f"{name} of shape {tuple(w.shape)} does not broadcast to the input shape "
            f"{tuple(x.shape)}; use a shape that broadcasts (e.g. ({x.shape[-1]},) for the last "
            "axis)"
            if x.ndim
            else f"{name} of shape {tuple(w.shape)} does not broadcast to a scalar input"
        )
    check_finite(w, name)
    return w


def is_bool(x: Array) -> bool:
    if is_tensor(x):
        return x.dtype == torch_module().bool
    return np.asarray(x).dtype.kind == "b"


def is_integer(x: Array) -> bool:
    if is_tensor(x):
        return not x.is_floating_point() and not x.is_complex() and not is_bool(x)
    return np.asarray(x).dtype.kind in "iu"


def dtype_name(x: Array) -> str:
    return str(x.dtype) if is_tensor(x) else str(np.asarray(x).dtype)
