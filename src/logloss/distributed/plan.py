"""What one validated call carries from the checks to the kernels: layout, options, targets."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from logloss.distributed.group import ShardLayout
from logloss.distributed.row_math import LossOptions, RowTerms, row_terms
from logloss.fused.rows import RowOptions

ELSEWHERE = -1  # local target of a row whose class is held by another rank
IGNORED = -2  # local target of an ignored row (never a column index, whatever ignore_index is)


@dataclass(frozen=True)
class ShardOptions:
    """What the per-shard passes need besides the logits and targets.

    ``smoothing``: eps; ``n_classes``: V, the classes of all ranks; ``softcap``: the cap of
    f = cap * tanh(z / cap), or None; ``class_weight``: this shard's (V_r,) class weights in the
    accumulation dtype, or None for weight 1; ``z_loss``: the scale of lam lse^2.
    """

    smoothing: float
    n_classes: int
    softcap: float | None
    class_weight: torch.Tensor | None
    z_loss: float

    def row_options(
        self, scale: float | torch.Tensor = 1.0, z_scale: float | torch.Tensor = 1.0
    ) -> RowOptions:
        """The fused row kernel's options for this shard (shard semantics, V classes in all,
        ignored rows marked :data:`IGNORED`); no class weights (see ``RowOptions``)."""
        return RowOptions(
            ignore_index=IGNORED,
            smoothing=self.smoothing,
            scale=scale,
            z_loss=self.z_loss,
            z_scale=z_scale,
            softcap=self.softcap,
            n_classes=self.n_classes,
            shard=True,
        )


@dataclass(frozen=True)
class Plan:
    """One call's layout and options, and what the targets give every step.

    ``local_target`` (N,) int64: the target's column in this rank's shard, :data:`ELSEWHERE`
    where it is another rank's class, :data:`IGNORED` where the row is ignored.
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
    terms = row_terms(target, options, layout.sizes, acc)
    here = terms.valid & (target >= start) & (target < stop)  # (N,)
    local_target = torch.where(here, target - start, ELSEWHERE).masked_fill(~terms.valid, IGNORED)
    weight = options.class_weight
    shard = ShardOptions(
        smoothing=options.smoothing,
        n_classes=options.n_classes,
        softcap=options.softcap,
        class_weight=None if weight is None else weight[start:stop],
        z_loss=options.z_loss,
    )
    return Plan(layout, options, terms, shard, local_target)
