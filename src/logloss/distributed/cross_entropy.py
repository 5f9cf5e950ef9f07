"""``vocab_parallel_cross_entropy``: the loss of logits split by class across ranks.

Forward: each rank reduces its (N, V_r) shard to three numbers per row (its log-sum-exp, the
target's logit if the target is one of its classes, the smoothing sum), one all-gather shares
them (3 N numbers per rank), and every rank computes the same loss.  Backward is local: each
rank writes the gradient of its own shard from the global per-row log-sum-exp.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from logloss.distributed import checks
from logloss.distributed.dtensor import local_part, unwrap
from logloss.distributed.group import ShardLayout, all_gather_stacked, message_device, resolve_group
from logloss.distributed.plan import Plan, make_plan, zero_ignored_rows
from logloss.distributed.row_math import (
    LossOptions,
    combine_row_stats,
    gradient_coefficients,
    reduce_losses,
    row_losses,
)
from logloss.distributed.shard_math import accumulation_dtype, shard_gradient, shard_row_stats

_FACT_NAMES = (
    "rows",
    "classes",
    "dtype",
    "device",
    "target_dtype",
    "target_sum",
    "target_mix",
    *checks.OPTION_NAMES,
    "weight_given",
    "weight_sum",
    "weight_mix",
)


def global_row_stats(
    z: torch.Tensor, local_target: torch.Tensor, plan: Plan
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lse, target logit, smoothing sum), each (n,), of rows whose columns are spread over the
    ranks: this shard's statistics (``z`` (n, V_r), ``local_target`` (n,)), one all-gather, the
    combination (the same on every rank)."""
    stats = shard_row_stats(z, local_target, plan.shard)  # (3, n)
    layout = plan.layout
    return combine_row_stats(all_gather_stacked(stats, layout.group, layout.device))


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, plan: Plan) -> torch.Tensor:
        lse, target_logit, smooth_sum = global_row_stats(logits, plan.local_target, plan)
        ce, zl = row_losses(lse, target_logit, smooth_sum, plan.terms, plan.options)
        ctx.save_for_backward(logits)
        ctx.plan, ctx.lse = plan, lse
        return reduce_losses(ce, zl, plan.terms, plan.options.reduction).to(logits.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (logits,) = ctx.saved_tensors
        plan = ctx.plan
        coef = gradient_coefficients(ctx.lse, plan.terms, plan.options, grad_output)  # (3, N)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        shard_gradient(logits, plan.local_target, ctx.lse, coef, plan.shard, grad)
        return zero_ignored_rows(grad, plan), None


def _local_facts(
    logits: Any, target: Any, weight: Any, options: dict[str, Any], found: dict[str, Any]
) -> checks.Facts:
    """This rank's own checks (raising ValueError); validated values are left in ``found``."""
    z = checks.check_float_matrix(logits, "logits_shard", "(N, V_r)")
    found["target"] = checks.check_target(target, z.shape[0], z, "logits_shard")
    option_facts, found["options"] = checks.option_facts(**options)
    found["weight"] = checks.check_class_weight(weight, z)
    return {
        "rows": z.shape[0],
        "classes": z.shape[1],
        "dtype": checks.dtype_code(z.dtype),
        "device": checks.device_code(z.device),
        **checks.tensor_facts(target, "target"),
        **option_facts,
        **checks.tensor_facts(found["weight"], "weight"),
    }


def _check_call(
    logits: Any, target: Any, weight: Any, group: dist.ProcessGroup | None, options: dict
) -> tuple[ShardLayout, LossOptions, torch.Tensor]:
    """Validate on every rank together (see :mod:`checks`): the layout, options and targets."""
    rank, _ = resolve_group(group)
    found: dict[str, Any] = {}
    facts = checks.agree(
        lambda: _local_facts(logits, target, weight, options, found), _FACT_NAMES, group
    )
    rows_rule = "every rank passes the same N rows (its own slice of the classes)"
    checks.require_equal(facts, ("rows",), "the number of rows of logits_shard", rows_rule, str)
    dtype_rule = "use one dtype on every rank"
    checks.require_equal(facts, ("dtype",), "logits_shard's dtype", dtype_rule, checks.dtype_name)
    device_rule = "put every rank's logits on the same kind of device"
    checks.require_equal(facts, ("device",), "the device type", device_rule, checks.device_name)
    checks.require_same_target(facts)
    checks.require_same_options(facts)
    sizes = tuple(f["classes"] for f in facts)
    found_options = found["options"]
    target = checks.check_targets_in_range(
        found["target"], logits, sizes, found_options["ignore_index"]
    )
    checks.check_weight_length(found["weight"], sizes)
    layout = ShardLayout(group, rank, sizes, message_device(group, logits.device))
    options = LossOptions(**found_options, class_weight=found["weight"], n_classes=sum(sizes))
    return layout, options, target


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
    is none) and the z-loss by the number of non-ignored rows.  Only 3 N numbers per rank
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
    layout, loss_options, target = _check_call(local, target, weight, group, options)
    plan = make_plan(layout, loss_options, target, accumulation_dtype(local.dtype))
    return wrap(_VocabParallelCrossEntropy.apply(local, plan))
