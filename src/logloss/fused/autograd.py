"""The autograd Functions of ``logloss.fused``: the gradient is made in forward, backward scales.

``FusedCrossEntropy`` writes dL/dz into a (reused) buffer or over the logits while computing the
loss, and hands it to autograd on the first backward (a second backward recomputes it from the
saved logits).  ``FusedLinearCrossEntropy`` runs the chunked pass of :mod:`.linear` once in
forward and keeps the three gradients (for ``reduction="none"`` the per-row incoming gradients
are only known in backward, so the chunks rerun there).  Both return (loss, z-loss part, lse);
the last two carry no gradient.  Autocast is off inside: the kernels take the dtypes they are
given.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from logloss.fused import buffers, linear
from logloss.fused.dispatch import compute_rows, scale_in_place
from logloss.fused.rows import RowOptions, accumulator_dtype, lse_like


def scale_for(reduction: str, denominator: torch.Tensor) -> torch.Tensor | float:
    """Gradient pre-scale: 1/denominator for mean (0 when it is 0), 1 for sum and none.

    On CUDA a float64 device tensor (no host sync): float64 rows need 1/N to float64
    accuracy, and the float32 kernels round it once when they load it."""
    if reduction != "mean":
        return 1.0
    if denominator.device.type == "cpu":
        value = float(denominator)
        return 1.0 / value if value else 0.0
    denominator = denominator.to(torch.float64)
    return torch.where(denominator != 0, 1.0 / denominator, 0.0)


def denominators(target: torch.Tensor, opts: RowOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean's denominators of the cross-entropy and the z-loss, as PyTorch and Liger take
    them: sum_i w_{t_i} and N_valid over non-ignored rows for class indices (N_valid twice
    without weights); N and N for probabilities."""
    if target.is_floating_point():
        rows = torch.tensor(float(target.shape[0]), device=target.device)
        return rows, rows
    valid = target != opts.ignore_index  # (N,)
    n_valid = valid.sum()
    if opts.weight is None:
        return n_valid, n_valid
    w_t = opts.weight[target.where(valid, 0)].masked_fill(~valid, 0.0)  # (N,)
    return w_t.sum(dtype=torch.float64), n_valid


def reduce_rows(rows: torch.Tensor, reduction: str, denominator: torch.Tensor) -> torch.Tensor:
    """none -> (N,), sum -> sum, mean -> sum / denominator (NaN when it is 0, as PyTorch)."""
    if reduction == "none":
        return rows
    total = rows.sum(dtype=torch.float64 if rows.dtype == torch.float64 else None)
    if reduction == "sum":
        return total
    denominator = denominator.to(total.dtype)
    return torch.where(denominator != 0, total / denominator, torch.nan)


def scaled(grad: torch.Tensor, grad_output: torch.Tensor, per_row: bool) -> torch.Tensor:
    """grad * dL_out: per row (N, 1) for reduction='none', else one scalar; in place."""
    if per_row:
        return grad.mul_(grad_output.to(grad.dtype).unsqueeze(-1))
    return scale_in_place(grad, grad_output)


def loss_parts(
    loss_rows: torch.Tensor,
    lse: torch.Tensor | None,
    opts: RowOptions,
    reduction: str,
    dens: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the loss, its z-loss part) reduced: the cross-entropy rows over their denominator plus
    the z-loss rows z_loss lse_i^2 (0 on ignored rows, whose lse is 0) over theirs."""
    loss = reduce_rows(loss_rows, reduction, dens[0])
    z_part = None
    if opts.z_loss > 0.0:
        z_part = reduce_rows(opts.z_loss * lse.square(), reduction, dens[1])
        loss = loss + z_part
    return loss, z_part


def with_scales(
    opts: RowOptions, reduction: str, dens: tuple[torch.Tensor, torch.Tensor]
) -> RowOptions:
    """``opts`` with the gradient pre-scales of this batch (1/denominator for a mean)."""
    scale = scale_for(reduction, dens[0])
    z_scale = scale if dens[1] is dens[0] else scale_for(reduction, dens[1])
    return dataclasses.replace(opts, scale=scale, z_scale=z_scale)


def cross_entropy_forward(
    logits: torch.Tensor,
    target: torch.Tensor,
    opts: RowOptions,
    reduction: str,
    grad: torch.Tensor | None,
    want_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, RowOptions]:
    """(loss, z-loss part, lse, the options with this batch's scales) of (N, C) logits, and
    the gradient into ``grad`` (if given; may be ``logits``).  The loss is in the accumulator
    dtype; the lse is computed (in float64, the row kernels' contract) when asked or needed for
    the z-loss, and returned in the accumulator dtype."""
    dens = denominators(target, opts)
    opts = with_scales(opts, reduction, dens)
    loss_rows = linear.rows_like(logits)
    lse = lse_like(logits) if want_lse or opts.z_loss > 0.0 else None
    with torch.autocast(logits.device.type, enabled=False):
        compute_rows(logits, target, grad, loss_rows, opts, lse_out=lse)
        lse = None if lse is None else lse.to(accumulator_dtype(logits))
        loss, z_part = loss_parts(loss_rows, lse, opts, reduction, dens)
    return loss, z_part, lse, opts


def linear_forward(
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor],
    opts: RowOptions,
    reduction: str,
    plan: linear.LinearPlan,
    needs: tuple[bool, bool, bool],
    want_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, tuple, RowOptions]:
    """(loss, z-loss part, lse, (grad_h, grad_W, grad_b), the scaled options) of
    ``hidden @ weight.T + bias`` for ``inputs`` = (hidden, weight, bias, target); the
    gradients ``needs`` asks for (none for ``reduction="none"``: they need the incoming
    per-row gradients, so backward reruns the chunks)."""
    hidden, weight, bias, target = inputs
    dens = denominators(target, opts)
    opts = with_scales(opts, reduction, dens)
    loss_rows = linear.rows_like(hidden)
    lse = lse_like(hidden) if want_lse or opts.z_loss > 0.0 else None
    needs_now = (False, False, False) if reduction == "none" else needs
    with torch.autocast(hidden.device.type, enabled=False):
        grads = linear.linear_pass(
            hidden, weight, bias, target, opts, plan, (loss_rows, lse), None, needs_now
        )
        lse = None if lse is None else lse.to(accumulator_dtype(hidden))
        loss, z_part = loss_parts(loss_rows, lse, opts, reduction, dens)
    return loss, z_part, lse, grads, opts


class GradBuffer:
    """Holds a gradient computed in forward until the first backward hands it to autograd."""

    def __init__(self, grad: torch.Tensor | None) -> None:
        self.grad = grad

    def take(self) -> torch.Tensor | None:
        grad, self.grad = self.grad, None
        # detach(): with inplace_backward the buffer is the logits tensor itself, which autograd
        # would copy before storing as .grad; a fresh handle on the same memory it stores as is
        return None if grad is None else grad.detach()


def _outputs(
    ctx: Any,
    loss: torch.Tensor,
    z_part: torch.Tensor | None,
    lse: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The Functions' outputs; the z-loss part and the lse are for reading, not differentiable."""
    ctx.mark_non_differentiable(*(t for t in (z_part, lse) if t is not None))
    return loss.to(out_dtype), z_part, lse


class FusedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        logits: torch.Tensor,
        target: torch.Tensor,
        opts: RowOptions,
        reduction: str,
        flags: tuple[bool, bool, bool],
        out_dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(loss, z-loss part, lse) of (N, C) logits; ``flags``: (inplace_backward,
        grad_enabled, want_lse)."""
        inplace, grad_enabled, want_lse = flags
        # needs_input_grad says whether logits require grad, not whether grad mode is on (inside
        # forward it is always off): under torch.no_grad() no gradient is made or written
        need_grad = grad_enabled and ctx.needs_input_grad[0]
        grad = None
        if need_grad:
            grad = logits if inplace else buffers.new_buffer(logits)
        loss, z_part, lse, opts = cross_entropy_forward(
            logits, target, opts, reduction, grad, want_lse
        )
        if need_grad and inplace:
            # the logits now hold the gradient: autograd errors if anything else saved them
            torch.autograd.graph.increment_version(logits)
        ctx.buffer = GradBuffer(grad)
        # a second backward (retain_graph=True, gradcheck) recomputes from the saved logits
        ctx.save_for_backward(None if inplace else logits, target)
        ctx.options = (opts, reduction)
        return _outputs(ctx, loss, z_part, lse if want_lse else None, out_dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        opts, reduction = ctx.options
        grad = ctx.buffer.take()
        if grad is None:
            logits, target = ctx.saved_tensors
            if logits is None:
                raise RuntimeError(
                    "logloss.fused.cross_entropy: a second backward through a loss computed with "
                    "inplace_backward=True is impossible (the logits were overwritten by the "
                    "gradient); use inplace_backward=False to backpropagate more than once"
                )
            grad = buffers.new_buffer(logits)
            compute_rows(logits, target, grad, linear.rows_like(logits), opts)
        return scaled(grad, grad_output, reduction == "none"), None, None, None, None, None


class FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        target: torch.Tensor,
        opts: RowOptions,
        reduction: str,
        plan: linear.LinearPlan,
        flags: tuple[bool, bool],
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(loss, z-loss part, lse) of ``hidden @ weight.T + bias``; ``flags``: (grad_enabled,
        want_lse)."""
        grad_enabled, want_lse = flags
        # needs_input_grad reflects requires_grad, not grad mode: no gradients under no_grad()
        needs = tuple(grad_enabled and bool(need) for need in ctx.needs_input_grad[:3])
        inputs = (hidden, weight, bias, target)
        loss, z_part, lse, grads, opts = linear_forward(
            inputs, opts, reduction, plan, needs, want_lse
        )
        ctx.buffers = [GradBuffer(g) for g in grads]
        ctx.save_for_backward(*inputs)
        ctx.options = (opts, reduction, plan, needs)
        return _outputs(ctx, loss, z_part, lse if want_lse else None, plan.out_dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        opts, reduction, plan, needs = ctx.options
        grads = [b.take() for b in ctx.buffers]
        if any(need and g is None for need, g in zip(needs, grads, strict=True)):
            # reduction='none', or a second backward: rerun the chunks from the saved inputs
            grads = list(
                linear_backward(ctx.saved_tensors, opts, reduction, plan, needs, grad_output)
            )
        if reduction != "none":
            grads = [None if g is None else scaled(g, grad_output, False) for g in grads]
        return (*grads, None, None, None, None, None)


def linear_backward(
    inputs: tuple[torch.Tensor, ...],
    opts: RowOptions,
    reduction: str,
    plan: linear.LinearPlan,
    needs: tuple[bool, bool, bool],
    grad_output: torch.Tensor,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The three gradients recomputed from the inputs, times the per-row incoming gradients for
    ``reduction="none"`` (otherwise unscaled)."""
    hidden, weight, bias, target = inputs
    row_scale = grad_output if reduction == "none" else None
    with torch.autocast(hidden.device.type, enabled=False):
        return linear.linear_pass(
            hidden, weight, bias, target, opts, plan, (None, None), row_scale, needs
        )
