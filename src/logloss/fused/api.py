"""The public functions of ``logloss.fused``; the checks of their arguments are in :mod:`.checks`.

``cross_entropy`` matches ``torch.nn.functional.cross_entropy`` (class weights, label smoothing,
``ignore_index``, probability targets, (N, C, d1, ...) inputs) and adds a z-loss, a logit
softcap, the per-row log-sum-exp and (B, T, V) inputs (``class_dim=-1``); its forward pass
already writes the gradient into a buffer it owns (or over the logits with
``inplace_backward=True``), and backward only multiplies by the incoming gradient.
``linear_cross_entropy`` computes the loss of ``hidden @ weight.T + bias`` chunk by chunk, so
the (N, V) logits never exist at once.  Under ``torch.compile`` both run as opaque custom ops
(:mod:`.compiled`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from logloss.fused import checks, compiled
from logloss.fused.autograd import FusedCrossEntropy, FusedLinearCrossEntropy
from logloss.fused.linear import LinearPlan, default_chunk_rows
from logloss.fused.rows import RowOptions


class LossOutput(NamedTuple):
    """What ``return_lse`` / ``return_z_loss`` return: the loss (differentiable), the z-loss
    part of it (reduced as the loss; None unless asked), the per-row log-sum-exp (shaped as the
    unreduced loss, float32; None unless asked).  The last two carry no gradient."""

    loss: torch.Tensor
    z_loss: torch.Tensor | None
    lse: torch.Tensor | None


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    class_dim: int = 1,
    return_lse: bool = False,
    return_z_loss: bool = False,
    inplace_backward: bool = False,
) -> torch.Tensor | LossOutput:
    """Cross-entropy of logits and class indices or probabilities, gradient made in forward.

    With z' = softcap tanh(z / softcap) (z without a softcap), q' = (1 - eps) q + eps / C (q the
    one-hot of the target or its probabilities) and w the class weights (1 without):

        loss_i = sum_j w_j q'_ij (logsumexp(z'_i) - z'_ij) + z_loss logsumexp(z'_i)^2

    ``mean`` divides the cross-entropy by sum_i w_{y_i} over non-ignored rows (by N for
    probabilities) and the z-loss by the number of non-ignored rows, as PyTorch and Liger
    Kernel do; ignored rows add nothing (NaN mean when every row is ignored, as PyTorch).
    float16/bfloat16 logits are accumulated in float32.  Under ``torch.no_grad()`` (or for
    logits that do not require grad) only the loss is computed.

    Args:
        logits: (N, C), (C,) or (N, C, d1, ...) floating tensor; (N, ..., C) with
            ``class_dim=-1`` (language-model (B, T, V) logits).
        target: class indices, the logits' shape without the class dimension (values in
            [0, C) or ``ignore_index``), or class probabilities of the logits' shape (>= 0,
            summing to 1 over the classes).
        weight: optional (C,) class weights, >= 0.
        ignore_index: class-index target whose rows add nothing (class indices only).
        reduction: ``"none"`` (the target's shape), ``"sum"`` or ``"mean"``.
        label_smoothing: eps in [0, 1], PyTorch's: the target mixed with 1/C everywhere.
        z_loss: scale of the z-loss logsumexp^2 (PaLM; Liger's ``lse_square_scale``), >= 0.
        softcap: None or > 0: logits become softcap * tanh(logits / softcap) (Gemma 2).
        class_dim: where the classes are: 1 (PyTorch's; 0 for 1-D logits) or -1 (last).
        return_lse: also return each row's logsumexp(z') (float32; 0 for ignored rows).
        return_z_loss: also return the z-loss part of the loss, reduced as the loss.
        inplace_backward: write the gradient over ``logits`` instead of a new buffer (saves one
            N x C allocation; the logits' values are gone afterwards).  Needs logits whose
            elements do not share memory and that are not a leaf requiring grad.

    Returns:
        The loss (float32 under autocast, else the logits' dtype), or with ``return_lse`` /
        ``return_z_loss`` a :class:`LossOutput` ``(loss, z_loss, lse)``.

    >>> z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]], requires_grad=True)
    >>> loss = cross_entropy(z, torch.tensor([0, 2]))
    >>> round(loss.item(), 4)
    0.6342
    >>> loss.backward()
    >>> [round(v, 4) for v in z.grad[0].tolist()]
    [-0.0781, 0.0571, 0.021]
    """
    call = checks.check_cross_entropy(
        logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
        label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap, class_dim=class_dim,
        flags=(return_lse, return_z_loss, inplace_backward),
    )  # fmt: skip
    opts = _row_options(call)
    out_dtype = _loss_dtype(logits)
    if torch.compiler.is_compiling() and not call.inplace:
        loss, z_part, lse = compiled.cross_entropy(call.logits, call.target, opts, reduction)
        loss = loss.to(out_dtype)
    else:
        loss, z_part, lse = _eager_cross_entropy(call, opts, reduction, out_dtype)
    return _finish(loss, z_part, lse, call.row_shape, reduction, call)


# With inplace_backward=True, which writes over its input behind autograd's back, the loss is not
# traced by torch.compile: it runs eagerly (a graph break), as it would without compiling.
@torch.compiler.disable
def _eager_cross_entropy(
    call: checks.Call, opts: RowOptions, reduction: str, out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    flags = (call.inplace, torch.is_grad_enabled(), call.return_lse)
    return FusedCrossEntropy.apply(call.logits, call.target, opts, reduction, flags, out_dtype)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    class_weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    shift_labels: bool = False,
    return_lse: bool = False,
    return_z_loss: bool = False,
    chunk_size: int | None = None,
    accum_dtype: torch.dtype | None = None,
) -> torch.Tensor | LossOutput:
    """Cross-entropy of ``hidden @ weight.T + bias`` without materialising the (N, V) logits.

    loss = cross_entropy(hidden W^T + b, target, ...) with the options of
    :func:`cross_entropy`; rows go through in chunks of ``chunk_size``: z = h W^T + b, then
    dL/dz in place (fused kernel), grad_h = (dL/dz) W, grad_W += (dL/dz)^T h,
    grad_b += sum_rows dL/dz -- all in the forward pass, so backward only scales (for
    ``reduction="none"`` backward recomputes the chunks with the per-row incoming gradients).

    Args:
        hidden: (..., H) floating tensor (e.g. (B, T, H) hidden states).
        weight: (V, H), same dtype and device (any strides: a tied embedding's ``.t()`` is used
            without a copy).
        target: (...) integer class indices in [0, V), or ``ignore_index``.
        bias: optional (V,).
        class_weight: optional (V,) class weights (``weight`` of ``F.cross_entropy``).
        ignore_index, reduction, label_smoothing, z_loss, softcap, return_lse, return_z_loss:
            as in :func:`cross_entropy`.
        shift_labels: causal language modelling: position t predicts ``target[..., t + 1]``
            (the targets are shifted, hidden is not copied); the loss and lse then have
            shape (..., T - 1).
        chunk_size: rows per chunk; default: H rows, at most 128 MiB of float32 logits.
        accum_dtype: dtype the weight and bias gradients are summed in over the chunks (e.g.
            ``torch.float32`` for bfloat16 weights); default: the weight's.

    Returns:
        The loss ((...) for ``"none"``, else a scalar; float32 under autocast, else ``hidden``'s
        dtype), or a :class:`LossOutput` with ``return_lse`` / ``return_z_loss``.

    >>> h, w = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    >>> round(linear_cross_entropy(h, w, torch.tensor([0, 1])).item(), 4)
    0.5032
    """
    hidden, weight, bias = checks.autocast_linear(hidden, weight, bias)
    call = checks.check_linear(
        hidden, weight, target, bias=bias, class_weight=class_weight, ignore_index=ignore_index,
        reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
        shift_labels=shift_labels, flags=(return_lse, return_z_loss),
        sizes=(chunk_size, accum_dtype),
    )  # fmt: skip
    opts = _row_options(call)
    rows = call.logits  # the (N, H) hidden states
    plan = LinearPlan(
        chunk_size or default_chunk_rows(*rows.shape, weight.shape[0]),
        accum_dtype,
        _loss_dtype(hidden),
    )
    if torch.compiler.is_compiling():
        loss, z_part, lse = compiled.linear_cross_entropy(
            rows, weight, bias, call.target, opts, reduction, plan
        )
    else:
        flags = (torch.is_grad_enabled(), call.return_lse)
        loss, z_part, lse = FusedLinearCrossEntropy.apply(
            rows, weight, bias, call.target, opts, reduction, plan, flags
        )
    return _finish(loss, z_part, lse, call.row_shape, reduction, call)


def _row_options(call: checks.Call) -> RowOptions:
    """The row kernels' options of a checked call (the gradient scales are set per batch)."""
    return RowOptions(
        call.ignore_index, call.smoothing, weight=call.weight, z_loss=call.z_loss,
        softcap=call.softcap,
    )  # fmt: skip


def _loss_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 under autocast (as autocast gives PyTorch's cross_entropy), else x's dtype."""
    return torch.float32 if torch.is_autocast_enabled(x.device.type) else x.dtype


def _finish(
    loss: torch.Tensor,
    z_part: torch.Tensor | None,
    lse: torch.Tensor | None,
    row_shape: tuple[int, ...],
    reduction: str,
    call: checks.Call,
) -> torch.Tensor | LossOutput:
    """Rows back to the caller's shape (``row_shape``; the shifted-out last position dropped)
    and the outputs asked for."""

    def shaped(rows: torch.Tensor) -> torch.Tensor:
        rows = rows.reshape(row_shape)
        return rows[..., :-1] if call.shifted else rows

    if reduction == "none":
        loss = shaped(loss)
        z_part = None if z_part is None else shaped(z_part)
    if not (call.return_lse or call.return_z_loss):
        return loss
    z_out = z_part if z_part is not None else torch.zeros_like(loss.detach())
    return LossOutput(
        loss,
        z_out if call.return_z_loss else None,
        shaped(lse) if call.return_lse else None,
    )
