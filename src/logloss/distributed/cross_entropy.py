"""``vocab_parallel_cross_entropy``: the loss of logits split by class across ranks.

Forward: each rank reads its (N, V_r) shard once (the fused row kernel: its lse and loss row
per row), one all-gather shares those numbers (3 N float64 per rank: the lse as a pair, the
loss row), and every rank combines them into the same loss.  Backward is local: each rank
reads its shard again and writes its gradient, from the global lse.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from logloss.distributed import checks
from logloss.distributed.dtensor import local_part, unwrap
from logloss.distributed.group import all_gather_stacked
from logloss.distributed.plan import Plan, make_plan
from logloss.distributed.row_math import (
    RowStats,
    combine_row_stats,
    gradient_scales,
    reduce_losses,
    row_losses,
)
from logloss.distributed.shard_math import shard_gradient, shard_row_stats
from logloss.fused import buffers
from logloss.fused.rows import accumulator_dtype


def global_row_stats(z: torch.Tensor, plan: Plan, rows: tuple[int, int]) -> RowStats:
    """The statistics of the rows [r0, r1) of ``plan``, whose columns are spread over the
    ranks: this shard's (``z`` (r1 - r0, V_r)), one all-gather, the combination (the same on
    every rank)."""
    r0, r1 = rows
    stats = shard_row_stats(z, plan.local_target[r0:r1], plan.shard)  # (3, n)
    gathered = all_gather_stacked(stats, plan.layout.group, plan.layout.device)  # (P, 3, n)
    return combine_row_stats(gathered, plan.terms.rows(r0, r1), plan.options)


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, plan: Plan) -> torch.Tensor:
        stats = global_row_stats(logits, plan, (0, logits.shape[0]))
        ce, zl = row_losses(stats, plan.terms, plan.options)
        ctx.save_for_backward(logits)
        ctx.plan, ctx.stats = plan, stats
        return reduce_losses(ce, zl, plan.terms, plan.options.reduction).to(logits.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (logits,) = ctx.saved_tensors
        plan = ctx.plan
        scales = gradient_scales(grad_output, plan.terms, plan.options.reduction)
        grad = buffers.new_buffer(logits)  # fused's kept buffer: no page faults when reused
        shard_gradient(logits, plan, (0, logits.shape[0]), ctx.stats, scales, grad)
        return grad, None


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
    is none) and the z-loss by the number of non-ignored rows.  Only 3 N float64 numbers per
    rank cross the network (one all-gather), plus one all-gather of ~25 integers that checks
    the inputs on every rank together: a bad input raises the same ``ValueError`` on every
    rank.  Backward is local; ignored rows get a gradient of exactly 0.

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
    plan = make_plan(layout, loss_options, target, accumulator_dtype(local))
    return wrap(_VocabParallelCrossEntropy.apply(local, plan))
