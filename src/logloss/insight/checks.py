"""Checks of in-memory logits and class indices at the boundary of the diagnostics: each
failure is a ValueError that says which value, which rule, and what to do."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_logits(logits: Any, name: str = "logits") -> np.ndarray:
    """(N, C) float array without NaN or +inf, as float64."""
    array = np.asarray(logits)
    if array.ndim != 2 or array.shape[1] < 2:
        raise ValueError(
            f"{name} must have shape (N, C) with C >= 2 classes, got shape {array.shape}; "
            "pass one row of class scores per sample"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must be floating point, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if np.isnan(array).any() or np.isposinf(array).any():
        bad = int(np.argwhere(np.isnan(array) | np.isposinf(array))[0, 0])
        raise ValueError(
            f"{name} row {bad} contains NaN or +inf: {array[bad].tolist()}; "
            "a model's logits must be finite (-inf is allowed for a masked class)"
        )
    return array


def check_labels(target: Any, size: int, num_classes: int, name: str = "target") -> np.ndarray:
    """(N,) integer class indices in [0, C), as int64."""
    array = np.asarray(target)
    if array.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},) to match the logits, got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    if size and (array.min() < 0 or array.max() >= num_classes):
        bad = int(array[(array < 0) | (array >= num_classes)][0])
        raise ValueError(f"{name} holds class {bad}, outside [0, {num_classes}) of the logits")
    return array.astype(np.int64, copy=False)


def check_pair(logits: Any, target: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) float64 with N >= 1 and their classes (N,) int64."""
    z = check_logits(logits, f"{name} logits")
    if z.shape[0] == 0:
        raise ValueError(f"{name} logits hold no samples; evaluate at least one")
    y = check_labels(target, z.shape[0], z.shape[1], f"{name} target")
    return z, y
