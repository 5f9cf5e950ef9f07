"""``torch.compile`` support: the fused losses as opaque custom ops (``torch.library``).

Dynamo cannot trace into the C kernel (ctypes and data pointers) or a Triton launch, so while
compiling, :mod:`.api` calls these ops instead of the autograd Functions: each is one node of the
graph, with a fake implementation (shapes only) for tracing and a registered backward.  The
gradient is still made in the forward pass: it is an output of the op, saved for backward,
which only scales it (for the linear loss with ``reduction="none"`` a second op reruns the
chunks).  No gradient buffer is reused here; with ``inplace_backward`` (an op writing over its
input behind autograd's back) the api runs the eager Function instead, as a graph break.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from logloss.fused.autograd import cross_entropy_forward, linear_backward, linear_forward
from logloss.fused.linear import LinearPlan
from logloss.fused.rows import RowOptions, accumulator_dtype


def _options(
    weight: Tensor | None, ignore_index: int, smoothing: float, z_loss: float, softcap: float
) -> RowOptions:
    """RowOptions from the ops' plain arguments (softcap 0: none)."""
    return RowOptions(
        ignore_index, smoothing, weight=weight, z_loss=z_loss, softcap=softcap or None
    )


def _or_empty(t: Tensor | None, like: Tensor) -> Tensor:
    """Ops return tensors only: an absent result is an empty one."""
    return like.new_empty(0) if t is None else t


@torch.library.custom_op("logloss::fused_cross_entropy", mutates_args=())
def _cross_entropy_op(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    smoothing: float,
    z_loss: float,
    softcap: float,
    reduction: str,
    need_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(loss, z-loss part, lse, gradient or empty) of (N, C) logits."""
    opts = _options(weight, ignore_index, smoothing, z_loss, softcap)
    grad = torch.empty_like(logits, memory_format=torch.contiguous_format) if need_grad else None
    loss, z_part, lse, _ = cross_entropy_forward(logits, target, opts, reduction, grad, True)
    return loss, _or_empty(z_part, loss), lse, _or_empty(grad, logits)


@_cross_entropy_op.register_fake
def _(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    smoothing: float,
    z_loss: float,
    softcap: float,
    reduction: str,
    need_grad: bool,
) -> tuple[Tensor, ...]:
    loss = _fake_loss(logits, reduction)
    grad = logits.new_empty(logits.shape if need_grad else (0,))
    z_part = torch.empty_like(loss) if z_loss > 0.0 else loss.new_empty(0)  # not an alias
    return loss, z_part, _fake_rows(logits), grad


def _fake_loss(x: Tensor, reduction: str) -> Tensor:
    return x.new_empty((x.shape[0],) if reduction == "none" else (), dtype=accumulator_dtype(x))


def _fake_rows(x: Tensor) -> Tensor:
    return x.new_empty((x.shape[0],), dtype=accumulator_dtype(x))


def _cross_entropy_setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    ctx.per_row = inputs[7] == "none"
    ctx.save_for_backward(output[3])


def _cross_entropy_backward(ctx: Any, grad_loss: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
    (grad,) = ctx.saved_tensors
    scale = grad_loss.unsqueeze(-1) if ctx.per_row else grad_loss
    return (grad * scale.to(grad.dtype), *(None,) * 8)


_cross_entropy_op.register_autograd(_cross_entropy_backward, setup_context=_cross_entropy_setup)


@torch.library.custom_op("logloss::fused_linear_cross_entropy", mutates_args=())
def _linear_op(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    class_weight: Tensor | None,
    ignore_index: int,
    scalars: list[float],
    reduction: str,
    chunk: int,
    accum_dtype: torch.dtype | None,
    needs: list[bool],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(loss, z-loss part, lse, grad_h, grad_W, grad_b) of ``hidden @ weight.T + bias``
    (empty where not needed); ``scalars``: (smoothing, z_loss, softcap)."""
    opts = _options(class_weight, ignore_index, *scalars)
    plan = LinearPlan(chunk, accum_dtype, hidden.dtype)
    inputs = (hidden, weight, bias, target)
    loss, z_part, lse, grads, _ = linear_forward(inputs, opts, reduction, plan, tuple(needs), True)
    return (
        loss,
        _or_empty(z_part, loss),
        lse,
        *(_or_empty(g, t) for g, t in zip(grads, (hidden, weight, weight), strict=True)),
    )


@_linear_op.register_fake
def _(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    class_weight: Tensor | None,
    ignore_index: int,
    scalars: list[float],
    reduction: str,
    chunk: int,
    accum_dtype: torch.dtype | None,
    needs: list[bool],
) -> tuple[Tensor, ...]:
    loss = _fake_loss(hidden, reduction)
    z_part = torch.empty_like(loss) if scalars[1] > 0.0 else loss.new_empty(0)  # not an alias
    now = needs if reduction != "none" else [False] * 3
    return (loss, z_part, _fake_rows(hidden), *_fake_grads(hidden, weight, bias, now))


def _fake_grads(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, needs: list[bool]
) -> tuple[Tensor, Tensor, Tensor]:
    return (
        hidden.new_empty(hidden.shape if needs[0] else (0,)),
        weight.new_empty(weight.shape if needs[1] else (0,)),
        weight.new_empty(bias.shape if needs[2] and bias is not None else (0,)),
    )


@torch.library.custom_op("logloss::fused_linear_cross_entropy_backward", mutates_args=())
def _linear_backward_op(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    class_weight: Tensor | None,
    ignore_index: int,
    scalars: list[float],
    chunk: int,
    accum_dtype: torch.dtype | None,
    needs: list[bool],
    grad_rows: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """The three gradients of ``reduction="none"``, each row scaled by ``grad_rows`` (N,)."""
    opts = _options(class_weight, ignore_index, *scalars)
    plan = LinearPlan(chunk, accum_dtype, hidden.dtype)
    grads = linear_backward(
        (hidden, weight, bias, target), opts, "none", plan, tuple(needs), grad_rows
    )
    return tuple(_or_empty(g, t) for g, t in zip(grads, (hidden, weight, weight), strict=True))


@_linear_backward_op.register_fake
def _(hidden: Tensor, weight: Tensor, bias: Tensor | None, *args: Any) -> tuple[Tensor, ...]:
    needs = args[-2]  # (target, class_weight, ignore_index, scalars, chunk, accum, needs, rows)
    return _fake_grads(hidden, weight, bias, needs)


def _linear_setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    hidden, weight, bias, target, class_weight, ignore_index, scalars = inputs[:7]
    ctx.args = (ignore_index, scalars, inputs[7], inputs[8], inputs[9], inputs[10])
    ctx.save_for_backward(hidden, weight, bias, target, class_weight, *output[3:])


def _linear_backward(ctx: Any, grad_loss: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
    hidden, weight, bias, target, class_weight, *grads = ctx.saved_tensors
    ignore_index, scalars, reduction, chunk, accum_dtype, needs = ctx.args
    if reduction == "none":
        grads = _linear_backward_op(
            hidden, weight, bias, target, class_weight, ignore_index, scalars, chunk,
            accum_dtype, needs, grad_loss,
        )  # fmt: skip
    else:
        grads = [g * grad_loss.to(g.dtype) for g in grads]
    kept = [g if need else None for g, need in zip(grads, needs, strict=True)]
    return (*kept, *(None,) * 8)


_linear_op.register_autograd(_linear_backward, setup_context=_linear_setup)


def cross_entropy(
    logits: Tensor, target: Tensor, opts: RowOptions, reduction: str
) -> tuple[Tensor, Tensor | None, Tensor]:
    """(loss, z-loss part or None, lse) of (N, C) logits through the custom op."""
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    loss, z_part, lse, _ = _cross_entropy_op(
        logits, target, opts.weight, opts.ignore_index, opts.smoothing, opts.z_loss,
        opts.softcap or 0.0, reduction, need_grad,
    )  # fmt: skip
    return loss, (z_part.detach() if opts.z_loss > 0.0 else None), lse.detach()


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    opts: RowOptions,
    reduction: str,
    plan: LinearPlan,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """(loss, z-loss part or None, lse) of ``hidden @ weight.T + bias`` through the custom op."""
    grad_mode = torch.is_grad_enabled()
    needs = [grad_mode and t is not None and t.requires_grad for t in (hidden, weight, bias)]
    scalars = [opts.smoothing, opts.z_loss, opts.softcap or 0.0]
    loss, z_part, lse, *_ = _linear_op(
        hidden, weight, bias, target, opts.weight, opts.ignore_index, scalars, reduction,
        plan.chunk, plan.accum_dtype, needs,
    )  # fmt: skip
    return loss.to(plan.out_dtype), (z_part.detach() if opts.z_loss > 0.0 else None), lse.detach()
