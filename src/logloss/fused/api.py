"""The public functions of ``logloss.fused`` and the validation of their arguments.

``cross_entropy`` matches ``torch.nn.functional.cross_entropy`` for (N, C) logits and class-index
targets, but its forward pass already writes the gradient

    dL/dz_ij = s (softmax(z_i)_j - (1 - eps) [j == y_i] - eps / C)

(s = 1/N_valid for ``reduction="mean"``, 1 otherwise) into a buffer it owns, or over the logits
with ``inplace_backward=True``; backward only multiplies by the incoming gradient.
``linear_cross_entropy`` computes the loss of ``hidden @ weight.T + bias`` chunk by chunk, so
the (N, V) logits never exist at once.  Here the arguments are checked (``ValueError`` naming the
value, the rule and the fix); :mod:`.autograd` and the row kernels behind it only compute.
"""

from __future__ import annotations

from typing import Any

import torch

from logloss._checks import check_index_target, check_label_smoothing, check_reduction
from logloss._tensors import is_tensor
from logloss.fused.autograd import FusedCrossEntropy, FusedLinearCrossEntropy
from logloss.fused.linear import default_chunk_rows
from logloss.fused.rows import RowOptions


def _check_target(
    target: Any, num_classes: int, ignore_index: Any, like: torch.Tensor, against: str
) -> tuple[torch.Tensor, int]:
    """Validate (N,) integer class indices in [0, num_classes) or ``ignore_index``, on the device
    of ``like`` (N, ...); ``against`` names ``like`` in messages.  Returns (int64 target, int).

    The ignore_index rule (an int or NumPy integer, not a bool) and the range check are
    ``logloss.losses``' own, so both modules accept and reject the same values.
    """
    n = like.shape[0]
    if not is_tensor(target):
        raise ValueError(f"target must be a torch.Tensor of shape ({n},); got {type(target)}")
    if target.dim() != 1 or target.shape[0] != n:
        raise ValueError(
            f"target must have shape ({n},) to match {against} {tuple(like.shape)}; "
            f"got {tuple(target.shape)}"
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(
            f"target must hold integer class indices (int64); got {target.dtype}. "
            "Probability targets are not supported by the fused loss: use "
            "torch.nn.functional.cross_entropy."
        )
    if target.device != like.device:
        raise ValueError(
            f"target is on {target.device} but {against} is on {like.device}; move both to one "
            "device"
        )
    # like's shape without its second axis is (N,), which target has (checked above)
    target, _ = check_index_target(target, like, num_classes, ignore_index, against)
    return target.contiguous(), int(ignore_index)


def _check_logits(logits: Any) -> torch.Tensor:
    """Validate (N, C) floating logits with C >= 1."""
    if not is_tensor(logits):
        raise ValueError(f"logits must be a torch.Tensor of shape (N, C); got {type(logits)}")
    if logits.dim() != 2:
        raise ValueError(
            f"logits must be 2-D (N, C); got shape {tuple(logits.shape)}. For (N, C, d1, ...) "
            "logits move the class axis last and flatten: x.movedim(1, -1).reshape(-1, C)."
        )
    if not logits.is_floating_point():
        raise ValueError(
            "logits must be floating point (float32, float16, bfloat16 or float64); "
            f"got {logits.dtype}"
        )
    if logits.shape[1] == 0:
        raise ValueError(f"logits must have at least one class; got shape {tuple(logits.shape)}")
    return logits


def _check_inplace(logits: torch.Tensor) -> None:
    """``inplace_backward=True`` overwrites the logits with the gradient, so every element must
    have its own memory (rows of unit stride that do not overlap) and the memory must not be a
    leaf tensor's (a parameter's .grad would then be the parameter itself)."""
    n, c = logits.shape
    if logits.stride(1) != 1 or (n > 1 and logits.stride(0) < c):
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


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    inplace_backward: bool = False,
) -> torch.Tensor:
    """Cross-entropy of (N, C) logits and class indices, gradient computed in the forward pass.

    loss_i = logsumexp(z_i) - (1 - eps) z_{i,y_i} - eps/C sum_j z_ij   (0 where y_i == ignore_index)

    ``mean`` divides the sum by the number of non-ignored rows (NaN if there are none), exactly as
    ``torch.nn.functional.cross_entropy``.  float16/bfloat16 logits are accumulated in float32.
    Under ``torch.no_grad()`` (or for logits that do not require grad) only the loss is computed.

    Args:
        logits: (N, C) float32, float16, bfloat16 or float64 tensor.
        target: (N,) integer class indices in [0, C), or ``ignore_index``.
        ignore_index: target value whose rows add nothing to the loss or the gradient.
        reduction: ``"none"`` -> (N,), ``"sum"`` or ``"mean"`` -> scalar.
        label_smoothing: eps in [0, 1], mixing the one-hot target with the uniform distribution.
        inplace_backward: write the gradient over ``logits`` instead of a new buffer (saves one
            N x C allocation; the logits' values are gone afterwards).  Needs logits whose
            elements do not share memory and that are not a leaf requiring grad.

    Returns:
        The loss, in the logits' dtype.

    >>> z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]], requires_grad=True)
    >>> loss = cross_entropy(z, torch.tensor([0, 2]))
    >>> round(loss.item(), 4)
    0.6342
    >>> loss.backward()
    >>> [round(v, 4) for v in z.grad[0].tolist()]
    [-0.0781, 0.0571, 0.021]
    """
    logits = _check_logits(logits)
    target, ignore_index = _check_target(target, logits.shape[1], ignore_index, logits, "logits")
    check_reduction(reduction)
    smoothing = check_label_smoothing(label_smoothing)
    if inplace_backward:
        _check_inplace(logits)
    opts = RowOptions(ignore_index, smoothing, 1.0)  # the scale is set in forward
    return FusedCrossEntropy.apply(
        logits, target, opts, reduction, bool(inplace_backward), torch.is_grad_enabled()
    )


def _check_linear(hidden: Any, weight: Any, bias: Any, chunk_size: Any) -> None:
    """Validate ``linear_cross_entropy``'s (N, H) hidden, (V, H) weight, (V,) bias, chunk size."""
    for name, value in (("hidden", hidden), ("weight", weight)):
        if not is_tensor(value) or value.dim() != 2 or not value.is_floating_point():
            shape = tuple(value.shape) if is_tensor(value) else type(value)
            raise ValueError(f"{name} must be a 2-D floating torch.Tensor; got {shape}")
    if weight.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"weight must have shape (V, {hidden.shape[1]}) to match hidden "
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
    if chunk_size is not None and (
        not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size!r}")


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Cross-entropy of ``hidden @ weight.T + bias`` without materialising the (N, V) logits.

    loss = cross_entropy(hidden W^T + b, target); rows go through in chunks of ``chunk_size``:
    z = h W^T + b, then dL/dz in place (fused kernel), grad_h = (dL/dz) W, grad_W += (dL/dz)^T h,
    grad_b += sum_rows dL/dz -- all in the forward pass, so backward only scales (for
    ``reduction="none"`` backward recomputes the chunks with the per-row incoming gradients).

    Args:
        hidden: (N, H) floating tensor.
        weight: (V, H), same dtype and device.
        target: (N,) integer class indices in [0, V), or ``ignore_index``.
        bias: optional (V,).
        ignore_index: target value whose rows add nothing.
        reduction: ``"none"``, ``"sum"`` or ``"mean"``.
        chunk_size: rows per chunk; default: H rows, at most 128 MiB of float32 logits.

    Returns:
        The loss ((N,) for ``"none"``, else a scalar), in ``hidden``'s dtype.

    >>> h, w = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    >>> round(linear_cross_entropy(h, w, torch.tensor([0, 1])).item(), 4)
    0.5032
    """
    _check_linear(hidden, weight, bias, chunk_size)
    target, ignore_index = _check_target(target, weight.shape[0], ignore_index, hidden, "hidden")
    check_reduction(reduction)
    chunk = chunk_size or default_chunk_rows(*hidden.shape, weight.shape[0])
    # the weight is used with its own strides (a transposed or tied V x H matrix is not copied)
    return FusedLinearCrossEntropy.apply(
        hidden.contiguous(),
        weight,
        bias,
        target,
        ignore_index,
        reduction,
        chunk,
        torch.is_grad_enabled(),
    )
