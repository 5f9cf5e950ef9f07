"""The autograd Functions of ``logloss.fused``: the gradient is made in forward, backward scales.

``FusedCrossEntropy`` writes dL/dz into a (reused) buffer or over the logits while computing the
loss, and hands it to autograd on the first backward (a second backward recomputes it from the
saved logits).  ``FusedLinearCrossEntropy`` runs the chunked pass of :mod:`.linear` once in
forward and keeps the three gradients (for ``reduction="none"`` the per-row incoming gradients
are only known in backward, so the chunks rerun there).
"""

from __future__ import annotations

from typing import Any

import torch

from logloss.fused import buffers, linear
from logloss.fused.dispatch import compute_rows
from logloss.fused.rows import RowOptions


def scale_for(reduction: str, n_valid: torch.Tensor) -> torch.Tensor | float:
    """Gradient pre-scale: 1/N_valid for mean (0 when nothing counts), 1 for sum and none."""
    if reduction != "mean":
        return 1.0
    if n_valid.device.type == "cpu":
        count = int(n_valid)
        return 1.0 / count if count else 0.0
    return torch.where(n_valid > 0, 1.0 / n_valid.clamp(min=1), 0.0).to(torch.float32)


def reduce_rows(loss_rows: torch.Tensor, reduction: str, n_valid: torch.Tensor) -> torch.Tensor:
    """none -> (N,), sum -> sum, mean -> sum / N_valid (NaN when every target is ignored)."""
    if reduction == "none":
        return loss_rows
    total = loss_rows.sum(dtype=torch.float64 if loss_rows.dtype == torch.float64 else None)
    if reduction == "sum":
        return total
    return total / n_valid.to(total.dtype)


def scaled(grad: torch.Tensor, grad_output: torch.Tensor, per_row: bool) -> torch.Tensor:
    """grad * dL_out: per row (N, 1) for reduction='none', else one scalar; in place."""
    if per_row:
        return grad.mul_(grad_output.to(grad.dtype).unsqueeze(-1))
    if grad_output.device.type == "cpu" and float(grad_output) == 1.0:
        return grad  # loss.backward(): nothing to do
    return grad.mul_(grad_output.to(grad.dtype))


class GradBuffer:
    """Holds a gradient computed in forward until the first backward hands it to autograd."""

    def __init__(self, grad: torch.Tensor | None) -> None:
        self.grad = grad

    def take(self) -> torch.Tensor | None:
        grad, self.grad = self.grad, None
        # detach(): with inplace_backward the buffer is the logits tensor itself, which autograd
        # would copy before storing as .grad; a fresh handle on the same memory it stores as is
        return None if grad is None else grad.detach()


class FusedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        logits: torch.Tensor,
        target: torch.Tensor,
        opts: RowOptions,
        reduction: str,
        inplace_backward: bool,
        grad_enabled: bool,
    ) -> torch.Tensor:
        # needs_input_grad says whether logits require grad, not whether grad mode is on (inside
        # forward it is always off): under torch.no_grad() no gradient is made or written
        need_grad = grad_enabled and ctx.needs_input_grad[0]
        n_valid = (target != opts.ignore_index).sum()
        opts = RowOptions(opts.ignore_index, opts.smoothing, scale_for(reduction, n_valid))
        loss_rows = linear.loss_rows_like(logits)
        grad = None
        if need_grad:
            grad = logits if inplace_backward else buffers.new_buffer(logits)
        compute_rows(logits, target, grad, loss_rows, opts)
        if need_grad and inplace_backward:
            # the logits now hold the gradient: autograd errors if anything else saved them
            torch.autograd.graph.increment_version(logits)
        ctx.buffer = GradBuffer(grad)
        # a second backward (retain_graph=True, gradcheck) recomputes from the saved logits
        ctx.save_for_backward(None if inplace_backward else logits, target)
        ctx.options = (opts, reduction)
        return reduce_rows(loss_rows, reduction, n_valid).to(logits.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
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
            compute_rows(logits, target, grad, linear.loss_rows_like(logits), opts)
        return scaled(grad, grad_output, reduction == "none"), None, None, None, None, None


class FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        target: torch.Tensor,
        ignore_index: int,
        reduction: str,
        chunk: int,
        grad_enabled: bool,
    ) -> torch.Tensor:
        # needs_input_grad reflects requires_grad, not grad mode: no gradients under no_grad()
        needs = tuple(grad_enabled and bool(need) for need in ctx.needs_input_grad[:3])
        n_valid = (target != ignore_index).sum()
        opts = RowOptions(ignore_index, 0.0, scale_for(reduction, n_valid))
        loss_rows = linear.loss_rows_like(hidden)
        # reduction='none': the per-row incoming gradients are only known in backward, so the
        # chunks rerun there; otherwise all gradients are made here and backward only scales
        needs_now = (False, False, False) if reduction == "none" else needs
        grads = linear.linear_pass(
            hidden, weight, bias, target, opts, chunk, loss_rows, None, needs_now
        )
        ctx.buffers = [GradBuffer(g) for g in grads]
        ctx.save_for_backward(hidden, weight, bias, target)
        ctx.options = (opts, reduction, chunk, needs)
        return reduce_rows(loss_rows, reduction, n_valid).to(hidden.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        opts, reduction, chunk, needs = ctx.options
        grads = [b.take() for b in ctx.buffers]
        if any(need and g is None for need, g in zip(needs, grads, strict=True)):
            # reduction='none', or a second backward: rerun the chunks from the saved inputs
            hidden, weight, bias, target = ctx.saved_tensors
            row_scale = grad_output if reduction == "none" else None
            grads = list(
                linear.linear_pass(
                    hidden, weight, bias, target, opts, chunk, None, row_scale, needs
                )
            )
        if reduction != "none":
            grads = [None if g is None else scaled(g, grad_output, False) for g in grads]
        return (*grads, None, None, None, None, None)
