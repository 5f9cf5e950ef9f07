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
    another rank's class or the row is ignored.
    """

    layout: ShardLayout
    options: LossOptions
    terms: RowTerms
    shard: ShardOptions
    local_target: torch.Tensor


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
    return Plan(layout, options, terms, shard, local_target)


def zero_ignored_rows(grad: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``grad`` (n, V_r) with the rows where ``valid`` (n,) is False set to exactly 0 (the
    gradient of an ignored row is 0 even when its logits are NaN)."""
    ignored = torch.nonzero(~valid).squeeze(1)
    if ignored.numel():
        grad.index_fill_(0, ignored, 0.0)
    return grad
