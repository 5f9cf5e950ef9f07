"""What one validated call carries from the checks to the kernels: layout, options, targets."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from logloss.distributed.group import ShardLayout
from logloss.distributed.row_math import LossOptions, RowTerms, row_terms
from logloss.distributed.shard_math import ShardOptions


@dataclass(frozen=True)
class Plan:
    """One call's layout and options, and what the targets give every step.

    ``local_target`` (N,) int64: the target's column in this rank's shard, -1 where it is
    another rank's class or the row is ignored.  ``ignored_rows`` (k,) int64: rows whose
    gradient is set to exactly 0 (even for NaN logits).
    """

    layout: ShardLayout
    options: LossOptions
    terms: RowTerms
    shard: ShardOptions
    local_target: torch.Tensor
    ignored_rows: torch.Tensor


def make_plan(
    layout: ShardLayout, options: LossOptions, target: torch.Tensor, acc: torch.dtype
) -> Plan:
    """The :class:`Plan` for validated (N,) int64 targets (computing in dtype ``acc``)."""
    start, stop = layout.offset, layout.offset + layout.local_size
    terms = row_terms(target, options, acc)
    here = terms.valid & (target >= start) & (target < stop)  # (N,)
    local_target = torch.where(here, target - start, -1)
    weight = options.class_weight
    shard = ShardOptions(
        softcap=options.softcap,
        class_weight=None if weight is None else weight[start:stop],
        smoothing=options.smoothing > 0.0,
    )
    ignored_rows = torch.nonzero(~terms.valid).squeeze(1)
    return Plan(layout, options, terms, shard, local_target, ignored_rows)


def zero_ignored_rows(grad: torch.Tensor, plan: Plan) -> torch.Tensor:
    """The gradient with the ignored rows set to exactly 0 (their logits may be NaN)."""
    if plan.ignored_rows.numel():
        grad.index_fill_(0, plan.ignored_rows, 0.0)
    return grad
