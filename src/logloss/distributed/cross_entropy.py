"""``vocab_parallel_cross_entropy``: the loss of logits split by class across ranks.

Forward: each rank reduces its (N, V_r) shard to four numbers per row (its max and
log-sum-exp, the target's logit if the target is one of its classes, the smoothing sum), one
all-gather shares them (4 N numbers per rank), and every rank computes the same loss.
Backward is local: each rank writes the gradient of its own shard from the global per-row
statistics.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from logloss.distributed import checks
from logloss.distributed.dtensor import local_part, unwrap
from logloss.distributed.group import all_gather_stacked
from logloss.distributed.plan import Plan, make_plan, zero_ignored_rows
from logloss.distributed.row_math import (
    RowStats,
    combine_row_stats,
    gradient_coefficients,
    reduce_losses,
    row_losses,
)
from logloss.distributed.shard_math import accumulation_dtype, shard_gradient, shard_row_stats


def global_row_stats(z: torch.Tensor, local_target: torch.Tensor, plan: Plan) -> RowStats:
    """The statistics of rows whose columns are spread over the ranks: this shard's (``z``
    (n, V_r), ``local_target`` (n,)), one all-gather, the combination (the same on every rank)."""
    stats = shard_row_stats(z, local_target, plan.shard)  # (4, n)
    layout = plan.layout
    return combine_row_stats(all_gather_stacked(stats, layout.group, layout.device))


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, plan: Plan) -> torch.Tensor:
        stats = global_row_stats(logits, plan.local_target, plan)
        ce, zl = row_losses(stats, plan.terms, plan.options)
        ctx.save_for_backward(logits)
        ctx.plan, ctx.stats = plan, stats
        return reduce_losses(ce, zl, plan.terms, plan.options.reduction).to(logits.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (logits,) = ctx.saved_tensors
        plan, stats = ctx.plan, ctx.stats
        coef = gradient_coefficients(stats, plan.terms, plan.options, grad_output)  # (3, N)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        shard_gradient(logits, plan.local_target, stats.shift, coef, plan.shard, grad)
        return zero_ignored_rows(grad, plan.terms.valid), None


def _local_facts(
    logits: Any, target: Any, weight: Any, options: dict[str, Any], found: dict[str, Any]
) -> checks.Facts:
    """This rank's own checks (raising ValueError), for :func:`checks.check_call`."""
    z = checks.check_float_matrix(logits, "logits_shard", "(N, V_r)")
    return {
        **checks.common_facts(z, "logits_shard", target, weight, options, found),
        "classes": z.shape[1],
    }


def vocab_parallel_cross_entropy(
    logits_shard: torch.Tensor,
    target: torch.Tensor,
    *,
    group: dist.ProcessGroup | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    weight: torch.Tensor | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
) -> torch.Tensor:
    """Cross-entropy of logits split by class across the ranks of ``group``, never gathered.

    With the shards in rank order forming the (N, V) logits z, f = z (or cap * tanh(z / cap)),
    lse_i = log sum_j exp(f_ij) and class weights w (default 1, W = sum w):

        loss_i = (1 - eps) w_{y_i} (lse_i - f_{i,y_i}) + eps/V (W lse_i - sum_j w_j f_ij)
                 + z_loss * lse_i^2                              (0 where y_i == ignore_index)

    the value of ``F.cross_entropy(z, target, weight=w, label_smoothing=eps, ...)`` on the
    gathered logits (plus the z-loss, not weighted).  ``mean`` divides the cross-entropy by the
    sum of the non-ignored rows' target weights (their number without weights; NaN when there
    is none) and the z-loss by the number of non-ignored rows.  Only 4 N numbers per rank
    cross the network (one all-gather), plus one all-gather of ~25 integers that checks the
    inputs on every rank together: a bad input raises the same ``ValueError`` on every rank.
    Backward is local; ignored rows get a gradient of exactly 0.

    Args:
        logits_shard: (N, V_r) this rank's columns [offset_r, offset_r + V_r) of the logits,
            shards in rank order, sizes may differ by rank (0 included); any float dtype
            (float16/bfloat16 accumulate in float32).  Or a DTensor placed Shard(1) on a 1-D
            device mesh (e.g. from ``ColwiseParallel(use_local_output=False)``): then the loss
            is a Replicate() DTensor and ``group`` must be None.
        target: (N,) global class indices in [0, V) or ``ignore_index``, the same on every
            rank (checked by checksums); a tensor or a Replicate() DTensor.
        group: the process group (default: the default group).
        ignore_index, reduction, label_smoothing: as in ``F.cross_entropy``.
        weight: (V,) class weights (finite, >= 0), the same on every rank, or None.
        z_loss: scale of the z-loss lse^2 (PaLM); 0 turns it off.
        softcap: cap of logit soft-capping f = cap * tanh(z / cap) (Gemma 2), or None.

    Returns:
        The loss in the logits' dtype, identical on every rank: (N,) for ``"none"``, else a
        scalar.
    """
    local, group, wrap = unwrap(logits_shard, 1, "logits_shard", group)
    target = local_part(target, None, "target")
    weight = local_part(weight, None, "weight")
    options = {
        "ignore_index": ignore_index,
        "reduction": reduction,
        "label_smoothing": label_smoothing,
        "z_loss": z_loss,
        "softcap": softcap,
    }
    layout, loss_options, target = checks.check_call(
        lambda found: _local_facts(local, target, weight, options, found), (), (), group
    )
    plan = make_plan(layout, loss_options, target, accumulation_dtype(local.dtype))
    return wrap(_VocabParallelCrossEntropy.apply(local, plan))
