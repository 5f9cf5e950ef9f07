"""The arguments of ``fused.cross_entropy`` and ``fused.linear_cross_entropy``, checked.

Each check raises one ``ValueError`` that names the value, the rule and the fix; what passes
comes out as a :class:`Call`: the rows flattened to 2-D, the targets as the row kernels take
them (int64 indices or float32 probabilities), float32 class weights.  The rules shared with
``logloss.losses`` (reduction, label smoothing, class-index ranges, ``ignore_index``,
probability and weight values) are ``logloss._checks``' own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from logloss._checks import (
    check_class_weight,
    check_index_target,
    check_label_smoothing,
    check_probability_target,
    check_reduction,
    is_integer,
)
from logloss._tensors import first_bad, format_index, is_tensor, item

INDEX_OR_PROBABILITIES = "integer class indices (int64) or floating class probabilities"
# |sum_j q_j - 1| allowed for probability targets: a few roundings of a softmax in the dtype
PROBABILITY_SUM_TOLERANCE = {
    torch.float64: 1e-6,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 1e-2,
}


@dataclass(frozen=True)
class Call:
    """A checked call: ``logits`` the (M, C) rows (for the linear loss the (M, H) hidden
    states), ``target`` (M,) int64 or (M, C) float32, ``weight`` (C,) float32 or None,
    ``row_shape`` the unreduced loss's shape (before dropping a shifted-out position)."""

    logits: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor | None
    ignore_index: int
    smoothing: float
    z_loss: float
    softcap: float | None
    row_shape: tuple[int, ...]
    shifted: bool = False
    return_lse: bool = False
    return_z_loss: bool = False
    inplace: bool = False


# The checks read values (target ranges, sums) and tensor internals (views, strides): under
# torch.compile they run eagerly, as one graph break, and the loss itself is traced as a custom op.
@torch.compiler.disable
def check_cross_entropy(
    logits: Any,
    target: Any,
    *,
    weight: Any,
    ignore_index: Any,
    reduction: Any,
    label_smoothing: Any,
    z_loss: Any,
    softcap: Any,
    class_dim: Any,
    flags: tuple[Any, Any, Any],
) -> Call:
    """Validate ``fused.cross_entropy``'s arguments; ``flags``: (return_lse, return_z_loss,
    inplace_backward)."""
    _check_tensor(logits, "logits", "(N, C)")
    dim = _class_dim(logits, class_dim)
    c = logits.shape[dim]
    if c == 0:
        raise ValueError(f"logits must have at least one class; got shape {tuple(logits.shape)}")
    rows = logits.movedim(dim, -1).reshape(-1, c)  # (M, C): a view unless the classes move
    if is_tensor(target) and target.is_floating_point():
        rows_target, row_shape = _probability_target(target, logits, dim, ignore_index)
    else:
        rows_target, row_shape = _index_target(target, logits, ignore_index, (dim, c), "logits")
    return_lse, return_z_loss, inplace = (
        _check_flag(value, name) for value, name in zip(flags, _FLAGS, strict=True)
    )
    if inplace:
        check_inplace(rows)
    return Call(
        rows,
        rows_target,
        _class_weight(weight, c, logits, "weight"),
        int(ignore_index),
        *check_options(reduction, label_smoothing, z_loss, softcap),
        row_shape,
        return_lse=return_lse,
        return_z_loss=return_z_loss,
        inplace=inplace,
    )


_FLAGS = ("return_lse", "return_z_loss", "inplace_backward")


@torch.compiler.disable
def check_linear(
    hidden: Any,
    weight: Any,
    target: Any,
    *,
    bias: Any,
    class_weight: Any,
    ignore_index: Any,
    reduction: Any,
    label_smoothing: Any,
    z_loss: Any,
    softcap: Any,
    shift_labels: Any,
    flags: tuple[Any, Any],
    sizes: tuple[Any, Any],
) -> Call:
    """Validate ``fused.linear_cross_entropy``'s arguments; ``flags``: (return_lse,
    return_z_loss); ``sizes``: (chunk_size, accum_dtype)."""
    _check_linear_tensors(hidden, weight, bias)
    _check_sizes(*sizes)
    shift = _check_flag(shift_labels, "shift_labels")
    v = weight.shape[0]
    if is_tensor(target) and target.is_floating_point():
        raise ValueError(
            f"target must hold integer class indices: linear_cross_entropy takes no class "
            f"probabilities (for those, use fused.cross_entropy on hidden @ weight.T); got "
            f"{target.dtype}"
        )
    checked, row_shape = _index_target(
        target, hidden, ignore_index, (hidden.dim() - 1, v), "hidden"
    )
    if shift:
        checked = _shifted(checked, row_shape, int(ignore_index))
    return_lse, return_z_loss = (
        _check_flag(value, name) for value, name in zip(flags, _FLAGS[:2], strict=True)
    )
    return Call(
        hidden.reshape(math.prod(row_shape), hidden.shape[-1]),
        checked,
        _class_weight(class_weight, v, hidden, "class_weight"),
        int(ignore_index),
        *check_options(reduction, label_smoothing, z_loss, softcap),
        row_shape,
        shifted=shift,
        return_lse=return_lse,
        return_z_loss=return_z_loss,
    )


def autocast_linear(hidden: Any, weight: Any, bias: Any) -> tuple[Any, Any, Any]:
    """Under autocast, the three in the autocast dtype, as autocast casts a linear layer's
    inputs (differentiably: a float32 parameter still gets a float32 gradient)."""
    if not (is_tensor(hidden) and torch.is_autocast_enabled(hidden.device.type)):
        return hidden, weight, bias
    dtype = torch.get_autocast_dtype(hidden.device.type)

    def cast(t: Any) -> Any:
        return t.to(dtype) if is_tensor(t) and t.is_floating_point() else t

    return cast(hidden), cast(weight), cast(bias)


def check_inplace(logits: torch.Tensor) -> None:
    """``inplace_backward=True`` overwrites the logits with the gradient, so every element must
    have its own memory (rows of unit stride that do not overlap) and the memory must not be a
    leaf tensor's (a parameter's .grad would then be the parameter itself)."""
    n, c = logits.shape
    if (c > 1 and logits.stride(1) != 1) or (n > 1 and logits.stride(0) < c):
        raise ValueError(
            "inplace_backward=True needs logits whose elements each have their own memory "
            f"(unit stride along classes, rows not overlapping); got shape {tuple(logits.shape)} "
            f"with strides {logits.stride()} (e.g. from .expand()). Call .contiguous() first or "
            "leave inplace_backward=False."
        )
    base = logits if logits._base is None else logits._base
    if torch.is_grad_enabled() and base.is_leaf and base.requires_grad:
        raise ValueError(
            "inplace_backward=True would overwrite a leaf tensor that requires grad (e.g. a "
            "parameter, or a view of one) with its own gradient, so .grad would share its memory; "
            "pass the output of an operation (the logits of a layer), or leave "
            "inplace_backward=False."
        )


def _check_tensor(x: Any, name: str, shape: str) -> None:
    if not is_tensor(x):
        raise ValueError(f"{name} must be a torch.Tensor of shape {shape}; got {type(x)}")
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be floating point (float32, float16, bfloat16 or float64); got {x.dtype}"
        )
    if x.dim() == 0:
        raise ValueError(f"{name} must have a class dimension, shape {shape}; got a scalar")


def _class_dim(logits: torch.Tensor, class_dim: Any) -> int:
    """The class dimension: ``class_dim`` (1 by default, as PyTorch; 0 for 1-D logits)."""
    if isinstance(class_dim, bool) or not isinstance(class_dim, int):
        raise ValueError(f"class_dim must be an int (1, or -1 for classes last); got {class_dim!r}")
    if logits.dim() == 1 and class_dim in (0, 1, -1):
        return 0  # (C,) logits: one sample, as PyTorch
    if not -logits.dim() <= class_dim < logits.dim():
        raise ValueError(
            f"class_dim={class_dim} is not a dimension of logits of shape "
            f"{tuple(logits.shape)}; use 1 (PyTorch's (N, C, ...)) or -1 (classes last)"
        )
    return class_dim % logits.dim()


def _same_device(t: torch.Tensor, like: torch.Tensor, name: str, against: str) -> None:
    if t.device != like.device:
        raise ValueError(
            f"{name} is on {t.device} but {against} is on {like.device}; move both to one device"
        )


def check_target_tensor(
    target: Any,
    expected: tuple[int, ...],
    like: torch.Tensor,
    name: str,
    *,
    kinds: str = INDEX_OR_PROBABILITIES,
    detail: str,
    hint: str = "",
) -> None:
    """``target`` is a tensor of integer class indices of shape ``expected`` on the device of
    ``like`` (the logits, or the hidden states, called ``name`` in messages); raises ValueError
    saying which rule failed.  ``kinds``: what targets the caller takes; ``detail``: how the
    shape follows from ``like``'s; ``hint``: appended to the shape message."""
    if not is_tensor(target):
        raise ValueError(
            f"target must be a torch.Tensor of shape {expected}; got {type(target).__name__}"
        )
    if not is_integer(target):
        raise ValueError(f"target must hold {kinds}; got {target.dtype}")
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must have shape {expected} to match {name} {tuple(like.shape)} "
            f"({detail}); got {tuple(target.shape)}{hint}"
        )
    _same_device(target, like, "target", name)


def _index_target(
    target: Any, logits: torch.Tensor, ignore_index: Any, classes: tuple[int, int], name: str
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Class indices in [0, c) shaped as ``logits`` without dimension ``dim``, for
    ``classes`` = (dim, c) (the linear loss passes its hidden states, named so): (M,) int64
    and that shape."""
    dim, c = classes
    expected = tuple(logits.shape[:dim]) + tuple(logits.shape[dim + 1 :])
    classes_last = is_tensor(target) and tuple(target.shape) == tuple(logits.shape[:-1])
    hint = (
        "; for (..., C) logits with the classes last pass class_dim=-1"
        if classes_last and dim != logits.dim() - 1
        else ""
    )
    detail = f"without its dimension {dim}"
    check_target_tensor(target, expected, logits, name, detail=detail, hint=hint)
    # logloss._checks reads the classes on axis 1 (or 0 for a scalar target): a stand-in shaped so
    classes_second = (*expected[:1], c, *expected[1:]) if expected else (c,)
    reference = torch.zeros((), device=logits.device).expand(classes_second)
    checked, _ = check_index_target(target, reference, c, ignore_index, name)
    return checked.reshape(-1).contiguous(), expected


def _probability_target(
    target: torch.Tensor, logits: torch.Tensor, dim: int, ignore_index: Any
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Class probabilities of the logits' shape, >= 0 and summing to 1 over ``dim``: (M, C)
    rows (float32; float64 for float64 logits) and the loss's row shape."""
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or ignore_index >= 0:
        raise ValueError(
            f"ignore_index={ignore_index!r} has no meaning for probability targets (PyTorch "
            "refuses it too); leave it at its default -100"
        )
    _same_device(target, logits, "target", "logits")
    accumulate = torch.float64 if target.dtype == torch.float64 else torch.float32
    reference = torch.zeros((), dtype=accumulate, device=logits.device).expand(logits.shape)
    q = check_probability_target(target, reference)
    sums = q.sum(dim=dim, dtype=torch.float64)
    tolerance = PROBABILITY_SUM_TOLERANCE.get(target.dtype, 1e-4)
    bad = first_bad(~((sums - 1.0).abs() <= tolerance))
    if bad is not None:
        raise ValueError(
            f"target probabilities at {format_index(bad)} (all classes) sum to "
            f"{item(sums, bad):.6g}, not 1 (within {tolerance:g} for {target.dtype}); "
            "class-probability targets must sum to 1 over the classes: normalise them "
            "(target / target.sum(dim, keepdim=True)) or pass class indices"
        )
    rows = q.movedim(dim, -1).reshape(-1, logits.shape[dim]).to(_rows_dtype(logits))
    row_shape = tuple(logits.shape[:dim]) + tuple(logits.shape[dim + 1 :])
    return rows.contiguous(), row_shape


def _rows_dtype(x: torch.Tensor) -> torch.dtype:
    """The row kernels' accumulator dtype: float64 for float64 inputs, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _class_weight(weight: Any, c: int, like: torch.Tensor, name: str) -> torch.Tensor | None:
    """(C,) finite class weights >= 0 in the accumulator dtype, on ``like``'s device."""
    if weight is None:
        return None
    if not is_tensor(weight):
        raise ValueError(f"{name} must be a ({c},) torch.Tensor or None; got {type(weight)}")
    _same_device(weight, like, name, "the logits" if name == "weight" else "hidden")
    reference = torch.zeros((), dtype=_rows_dtype(like), device=like.device).expand(2, c)
    if tuple(weight.shape) != (c,):  # logloss._checks would name it "weight"
        raise ValueError(
            f"{name} has shape {tuple(weight.shape)}, but there are {c} classes; pass one "
            f"weight per class, shape ({c},)"
        )
    w = check_class_weight(weight, reference, c)
    bad = first_bad(w < 0)
    if bad is not None:
        raise ValueError(
            f"{name} value {item(w, bad)} at index {format_index(bad)} is negative; class "
            "weights must be >= 0 (0 leaves a class out of the loss)"
        )
    return w.contiguous()


def check_options(
    reduction: Any, label_smoothing: Any, z_loss: Any, softcap: Any
) -> tuple[float, float, float | None]:
    """(smoothing, z_loss, softcap) after checking them and the reduction."""
    check_reduction(reduction)
    smoothing = check_label_smoothing(label_smoothing)
    z = _number(z_loss, "z_loss")
    if not z >= 0.0:
        raise ValueError(
            f"z_loss={z_loss!r} is negative; it scales the penalty logsumexp^2 (PaLM uses 1e-4), "
            "use 0 to turn it off"
        )
    if softcap is None:
        return smoothing, z, None
    cap = _number(softcap, "softcap")
    if not cap > 0.0:
        raise ValueError(
            f"softcap={softcap!r} must be > 0: logits become softcap * tanh(logits / softcap) "
            "(Gemma 2 uses 30); pass None for no cap"
        )
    return smoothing, z, cap


def _number(value: Any, name: str) -> float:
    """A finite real number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False; got {value!r}")
    return value


def _check_linear_tensors(hidden: Any, weight: Any, bias: Any) -> None:
    """(..., H) hidden, (V, H) weight and (V,) bias of one floating dtype on one device."""
    _check_tensor(hidden, "hidden", "(N, H) or (..., H)")
    if not is_tensor(weight) or weight.dim() != 2 or not weight.is_floating_point():
        got = tuple(weight.shape) if is_tensor(weight) else type(weight)
        raise ValueError(f"weight must be a 2-D floating torch.Tensor (V, H); got {got}")
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"weight must have shape (V, {hidden.shape[-1]}) to match hidden "
            f"{tuple(hidden.shape)}; got {tuple(weight.shape)}"
        )
    if weight.shape[0] == 0:
        raise ValueError(
            f"weight must have at least one row (one per class); got shape {tuple(weight.shape)}"
        )
    if weight.dtype != hidden.dtype or weight.device != hidden.device:
        raise ValueError(
            f"weight ({weight.dtype}, {weight.device}) must match hidden ({hidden.dtype}, "
            f"{hidden.device})"
        )
    if bias is not None and (
        not is_tensor(bias)
        or tuple(bias.shape) != (weight.shape[0],)
        or bias.dtype != hidden.dtype
        or bias.device != hidden.device
    ):
        got = (tuple(bias.shape), bias.dtype, bias.device) if is_tensor(bias) else type(bias)
        raise ValueError(
            f"bias must be a ({weight.shape[0]},) tensor of {hidden.dtype} on {hidden.device}; "
            f"got {got}"
        )


def _check_sizes(chunk_size: Any, accum_dtype: Any) -> None:
    if chunk_size is not None and (
        not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size!r}")
    if accum_dtype is not None and not (
        isinstance(accum_dtype, torch.dtype) and accum_dtype.is_floating_point
    ):
        raise ValueError(
            f"accum_dtype must be a floating torch.dtype (e.g. torch.float32) or None; "
            f"got {accum_dtype!r}"
        )


def _shifted(target: torch.Tensor, row_shape: tuple[int, ...], ignore_index: int) -> torch.Tensor:
    """Causal shift: position t of each sequence predicts target t + 1; the last position of
    each sequence predicts nothing (``ignore_index``).  (M,) in, (M,) out."""
    if len(row_shape) == 0 or row_shape[-1] < 2:
        raise ValueError(
            f"shift_labels=True needs sequences of at least 2 positions (position t predicts "
            f"token t + 1); got target shape {row_shape}"
        )
    sequences = target.reshape(-1, row_shape[-1])  # (B, T)
    pad = torch.full_like(sequences[:, :1], ignore_index)
    return torch.cat((sequences[:, 1:], pad), dim=1).reshape(-1)
