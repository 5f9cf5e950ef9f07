"""Array/tensor helpers shared by the math modules: detect torch lazily, pick dtypes, tiny op shim.

Every public math function in logloss accepts a NumPy array (or anything ``np.asarray`` takes) or a
torch tensor and returns the same kind.  torch is never imported here at module level: a value
can only be a tensor if the caller has already imported torch, so ``sys.modules`` detects one.

NumPy float16 is computed in float32 and rounded back once at the end (see ``docs/losses.md``);
torch tensors are computed in their own dtype with torch's kernels, exactly as PyTorch does.

The loss kernels are written once against :class:`Ops`, a namespace with the handful of element
operations whose spelling differs between NumPy and torch (``ops_for(x)`` picks one).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

# Anything the public functions accept: np.ndarray, array-like, or torch.Tensor.
Array = Any


def is_tensor(x: object) -> bool:
    """True when ``x`` is a torch tensor (without importing torch).

    >>> is_tensor(np.zeros(3))
    False
    """
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def torch_module() -> ModuleType:
    """The torch module, imported on first use."""
    import torch  # only for tensor inputs: `import logloss` stays NumPy-only

    return torch


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The NumPy dtype a float array is computed in: float16 -> float32, others unchanged.

    >>> compute_dtype(np.dtype(np.float16))
    dtype('float32')
    """
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


def as_float(
    x: Array, name: str, *, widen_torch: bool = False
) -> tuple[Array, Callable[[Array], Array]]:
    """Validate ``x`` as real floating data; return ``(x_compute, restore)``.

    NumPy: integers/bools become float64, float16 is widened to float32 for computing, and
    ``restore(result)`` casts a result back to the input dtype as an ndarray (0-d for reductions).
    torch: integer tensors become the default float dtype; float16/bfloat16 are widened to float32
    only when ``widen_torch`` (the losses: their reductions overflow in float16), and ``restore``
    casts back (differentiably); otherwise ``restore`` is the identity.

    Args:
        x: array-like or tensor, any shape.
        name: the argument's name, used in error messages.
        widen_torch: compute float16/bfloat16 tensors in float32.
    Returns:
        ``(array_or_tensor, restore)``.

    >>> a, restore = as_float(np.array([1, 2], dtype=np.float16), "x")
    >>> a.dtype, restore(a * 2).dtype
    (dtype('float32'), dtype('float16'))
    """
    if is_tensor(x):
        torch = torch_module()
        if x.is_complex():
            raise ValueError(f"{name} must be real, got a complex tensor ({x.dtype}); pass .real")
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        if widen_torch and x.dtype in (torch.float16, torch.bfloat16):
            half = x.dtype
            return x.float(), lambda result: result.to(half)
        return x, _identity
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array or a torch tensor: {exc}") from None
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.float64)
    elif arr.dtype.kind != "f":
        raise ValueError(
            f"{name} must hold real numbers, got dtype {arr.dtype}; "
            "pass a float array (float16/32/64) or a torch tensor"
        )
    out_dtype = arr.dtype

    def restore(result: Array) -> np.ndarray:
        return np.asarray(result).astype(out_dtype, copy=False)

    return arr.astype(compute_dtype(arr.dtype), copy=False), restore


def _identity(result: Array) -> Array:
    return result


def like(value: Array, ref: Array, *, dtype: Any = "float") -> Array:
    """Convert ``value`` to the kind (and device) of ``ref``.

    ``dtype="float"`` takes ``ref``'s dtype, ``dtype="index"`` an integer dtype (int64 for torch).

    >>> like([1, 2], np.zeros(2, dtype=np.float32)).dtype
    dtype('float32')
    """
    if is_tensor(ref):
        torch = torch_module()
        target = ref.dtype if dtype == "float" else torch.int64
        if is_tensor(value):
            return value.to(device=ref.device, dtype=target)
        return torch.as_tensor(np.asarray(value), device=ref.device).to(target)
    if is_tensor(value):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    return arr.astype(ref.dtype if dtype == "float" else np.int64, copy=False)


def first_bad(bad: Array) -> tuple[int, ...] | None:
    """Index (a tuple) of the first true entry of the boolean array/tensor ``bad``, else None.

    >>> first_bad(np.array([[False, False], [False, True]]))
    (1, 1)
    """
    if is_tensor(bad):
        if not bool(bad.any()):
            return None
        bad = bad.detach().cpu().numpy()
    bad = np.asarray(bad)
    if not bad.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape))


def item(x: Array, index: tuple[int, ...]) -> float | int:
    """The Python number at ``index`` of an array or tensor (for error messages)."""
    return x[index].item() if is_tensor(x) else np.asarray(x)[index].item()


def format_index(index: tuple[int, ...]) -> str:
    """``(1, 2)`` -> ``"[1, 2]"``; ``()`` -> ``"[]"`` (a scalar)."""
    return "[" + ", ".join(str(i) for i in index) + "]"


@dataclass(frozen=True)
class Ops:
    """The element operations whose spelling differs between NumPy and torch."""

    where: Callable[[Array, Any, Any], Array]
    take_along_axis: Callable[[Array, Array, int], Array]
    log: Callable[[Array], Array]
    log1p: Callable[[Array], Array]
    clamp_min: Callable[[Array, float], Array]
    sum: Callable[..., Array]
    reshape: Callable[[Array, tuple[int, ...]], Array]
    count: Callable[[Array], Any]


def _np_sum(x: Array, axis: int | None = None) -> Array:
    return np.sum(x, axis=axis)


NUMPY_OPS = Ops(
    where=np.where,
    take_along_axis=lambda x, idx, axis: np.take_along_axis(x, idx, axis=axis),
    log=np.log,
    log1p=np.log1p,
    clamp_min=np.maximum,
    sum=_np_sum,
    reshape=np.reshape,
    count=np.count_nonzero,  # a Python int: keeps float32 results float32
)


def _torch_ops() -> Ops:
    torch = torch_module()

    def t_sum(x: Array, axis: int | None = None) -> Array:
        return x.sum() if axis is None else x.sum(dim=axis)

    return Ops(
        where=torch.where,
        take_along_axis=lambda x, idx, axis: torch.take_along_dim(x, idx, dim=axis),
        log=torch.log,
        log1p=torch.log1p,
        clamp_min=torch.clamp_min,
        sum=t_sum,
        reshape=torch.reshape,
        count=torch.count_nonzero,
    )


_TORCH_OPS: list[Ops] = []


def ops_for(x: Array) -> Ops:
    """The op namespace for ``x``'s kind (NumPy or torch).

    >>> ops_for(np.zeros(1)) is NUMPY_OPS
    True
    """
    if not is_tensor(x):
        return NUMPY_OPS
    if not _TORCH_OPS:
        _TORCH_OPS.append(_torch_ops())
    return _TORCH_OPS[0]


def normalize_axis(axis: int, ndim: int, name: str = "axis") -> int:
    """``axis`` as a non-negative int, or a ValueError naming the valid range.

    >>> normalize_axis(-1, 3)
    2
    """
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {axis!r}")
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise ValueError(
            f"{name}={axis} is out of range for an input with {ndim} dimension(s); "
            f"use a value in [{-max(ndim, 1)}, {max(ndim, 1) - 1}]"
        )
    return int(axis) % max(ndim, 1)
