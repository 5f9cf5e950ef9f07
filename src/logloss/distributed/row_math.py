"""The per-row steps: O(N) math on the statistics every rank gathered, the same on every rank.

For row i with global logits f_i (after softcap), target y_i, class weights w (1 without
weights), smoothing eps over V classes and z-loss scale lam, PyTorch's ``F.cross_entropy``
(plus the z-loss of PaLM) is

    lse_i = log sum_j exp(f_ij)
    ce_i  = (1 - eps) w_{y_i} (lse_i - f_{i,y_i}) + eps/V sum_j w_j (lse_i - f_ij)
    zl_i  = lam lse_i^2

(both 0 for ignored rows).  Rank r holds the columns J_r and sends, per row, its
lse_r = log sum_{j in J_r} exp(f_ij) as a pair hi_r + lo_r (the fused kernel's float64 lse and
0, or the row max and the log-sum, which keep float64 logits exact to rounding) and its loss
row with its own lse,

    loss_r = (1 - eps) w_y [y in J_r] (lse_r - f_y) + eps/V sum_{j in J_r} w_j (lse_r - f_j)

(what the fused row kernel's shard mode computes, :mod:`shard_math`).  Since lse - f_j =
(lse_r - f_j) + (lse - lse_r) for j in J_r:

    lse = log sum_r exp(lse_r),   ce = sum_r [loss_r + A_r (lse - lse_r)],
    A_r = (1 - eps) w_y [y in J_r] + eps/V W_r,   W_r = sum_{j in J_r} w_j,

every term >= 0: no cancellation, so float32 loss rows keep float32 accuracy of the loss at any
magnitude of the logits.  A rank whose row is all -inf (lse_r = -inf) sends instead its linear
part -(1 - eps) w_y [y in J_r] f_y - eps/V sum w_j f_j (+inf, 0, or NaN for 0 * -inf, as
PyTorch), and adds that.  ``mean`` is sum(ce) / sum_{valid} w_{y_i} + sum(zl) / N_valid: the
cross-entropy is PyTorch's weighted mean, the z-loss is not weighted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

REDUCTIONS = ("none", "mean", "sum")
STAT_DTYPE = torch.float64  # of the per-row statistics every rank sends (hi_r, lo_r, loss_r)


@dataclass(frozen=True)
class LossOptions:
    """The validated options of one call, the same on every rank.

    ``class_weight`` is the full (V,) weight vector in the accumulation dtype, or None.
    """

    ignore_index: int
    reduction: str
    smoothing: float
    z_loss: float
    softcap: float | None
    class_weight: torch.Tensor | None
    n_classes: int


@dataclass(frozen=True)
class RowTerms:
    """Per-row quantities that depend only on the targets and the split (equal on all ranks).

    valid (N,) bool; target_weight (N,) w_{y_i} (0 for ignored rows); owner (N,) the rank
    holding y_i (0 for ignored rows); ce_total 0-d sum_{valid} w_{y_i} (N_valid without
    weights); n_valid 0-d; weight_sum W (V without weights); shard_weight (P,) float64 W_r.
    """

    valid: torch.Tensor
    target_weight: torch.Tensor
    owner: torch.Tensor
    ce_total: torch.Tensor
    n_valid: torch.Tensor
    weight_sum: float
    shard_weight: torch.Tensor

    def rows(self, r0: int, r1: int) -> RowTerms:
        """The terms of rows [r0, r1) (the totals stay those of all N rows)."""
        return replace(
            self,
            valid=self.valid[r0:r1],
            target_weight=self.target_weight[r0:r1],
            owner=self.owner[r0:r1],
        )


def row_terms(
    target: torch.Tensor, opts: LossOptions, sizes: tuple[int, ...], acc: torch.dtype
) -> RowTerms:
    """The :class:`RowTerms` of (N,) int64 targets (in [0, V) or ``ignore_index``) for shards
    of ``sizes`` classes in rank order."""
    valid = target != opts.ignore_index  # (N,)
    safe = torch.where(valid, target, torch.zeros_like(target))
    bounds = torch.tensor(sizes, device=target.device).cumsum(0)  # (P,) ends of the shards
    owner = torch.bucketize(safe, bounds, right=True)  # (N,): first shard ending after y
    if opts.class_weight is None:
        target_weight = valid.to(acc)
        shard_weight = torch.tensor(sizes, dtype=STAT_DTYPE, device=target.device)
    else:
        target_weight = torch.where(valid, opts.class_weight[safe], 0.0).to(acc)
        parts = opts.class_weight.to(STAT_DTYPE).split(list(sizes))
        shard_weight = torch.stack([part.sum() for part in parts])
    n_valid = valid.sum().to(acc)
    weight_sum = float(shard_weight.sum())
    return RowTerms(
        valid, target_weight, owner, target_weight.sum(), n_valid, weight_sum, shard_weight
    )


@dataclass(frozen=True)
class RowStats:
    """The global per-row results, (N,) float64 each: lse = ``shift`` + ``log_sum`` (kept
    apart: ``shift`` is the largest hi_r, and f - shift is exact to rounding where it matters,
    so exp(f - shift) exp(-log_sum) keeps float64 accuracy for float64 logits) and ``ce``, the
    cross-entropy rows (0 for ignored rows)."""

    shift: torch.Tensor
    log_sum: torch.Tensor
    ce: torch.Tensor

    @property
    def lse(self) -> torch.Tensor:
        return self.shift + self.log_sum

    def stacked(self) -> torch.Tensor:
        """(3, N): shift, log_sum, ce (``RowStats(*t)`` is the inverse)."""
        return torch.stack((self.shift, self.log_sum, self.ce))

    def rows(self, r0: int, r1: int) -> RowStats:
        """The statistics of rows [r0, r1)."""
        return RowStats(self.shift[r0:r1], self.log_sum[r0:r1], self.ce[r0:r1])


def combine_row_stats(gathered: torch.Tensor, terms: RowTerms, opts: LossOptions) -> RowStats:
    """Global lse and cross-entropy rows from every rank's (hi_r, lo_r, loss_r) (see the module
    docstring).

    shift = max_r hi_r (0 when every rank's lse_r is -inf), log_sum = log sum_r exp(lse_r -
    shift) with lse_r - shift = (hi_r - shift) + lo_r, and lse - lse_r = log_sum - (lse_r -
    shift): differences, exact to rounding however small.  NaN when a rank's lse_r is (a NaN or
    +inf logit); a row of -inf only has a NaN cross-entropy, as in PyTorch.

    Args:
        gathered: (P, 3, N) float64, rank r's (hi_r, lo_r, loss_r) at [r].
        terms: the rows' :class:`RowTerms`.
        opts: the call's options.
    """
    hi_r, lo_r, loss_r = gathered.unbind(1)  # (P, N) each
    empty = hi_r + lo_r == -torch.inf  # (P, N): lse_r = -inf (its hi_r may be 0): adds 0
    shift = hi_r.masked_fill(empty, -torch.inf).amax(dim=0)  # (N,)
    shift = shift.masked_fill(shift == -torch.inf, 0.0)
    below = ((hi_r - shift) + lo_r).masked_fill(empty, -torch.inf)  # (P, N): lse_r - shift
    log_sum = below.exp().sum(dim=0).log()  # (N,)
    eps = opts.smoothing
    ranks = torch.arange(hi_r.shape[0], device=hi_r.device).unsqueeze(1)  # (P, 1)
    held = (1.0 - eps) * terms.target_weight.to(STAT_DTYPE)  # (N,)
    a = torch.where(ranks == terms.owner, held, 0.0)  # (P, N): A_r
    if eps > 0.0:
        a = a + (eps / opts.n_classes) * terms.shard_weight.unsqueeze(1)
    share = torch.where(empty, 0.0, a * (log_sum - below))  # (P, N), >= 0
    ce = (loss_r + share).sum(dim=0).masked_fill(shift + log_sum == -torch.inf, torch.nan)
    return RowStats(shift, log_sum, torch.where(terms.valid, ce, 0.0))


def row_losses(
    stats: RowStats, terms: RowTerms, opts: LossOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ce, zl), each (N,) float64: the cross-entropy and the z-loss lam lse^2 of every row,
    0 for ignored rows."""
    zero = torch.zeros_like(stats.ce)
    if not opts.z_loss:
        return stats.ce, zero
    return stats.ce, torch.where(terms.valid, opts.z_loss * stats.lse.square(), zero)


def reduce_losses(
    ce: torch.Tensor, zl: torch.Tensor, terms: RowTerms, reduction: str
) -> torch.Tensor:
    """none -> ce + zl (N,); sum -> their sum; mean -> sum(ce) / ce_total + sum(zl) / n_valid.

    A mean with nothing to count (every row ignored) is NaN, as in PyTorch.
    """
    if reduction == "none":
        return ce + zl
    if reduction == "sum":
        return ce.sum() + zl.sum()
    return ce.sum() / terms.ce_total + zl.sum() / terms.n_valid


def gradient_scales(
    grad_output: torch.Tensor, terms: RowTerms, reduction: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, t): d loss / d ce_i and d loss / d zl_i, float64: 0-d for ``mean``
    (grad_output / ce_total and grad_output / n_valid, 0 when that is 0) and ``sum``
    (grad_output), (N,) for ``none`` (grad_output itself)."""
    g = grad_output.to(STAT_DTYPE)
    if reduction != "mean":
        return g, g
    scales = []
    for total in (terms.ce_total, terms.n_valid):
        total = total.to(STAT_DTYPE)
        scales.append(
            torch.where(total > 0, g / total.clamp(min=torch.finfo(total.dtype).tiny), 0.0)
        )
    return scales[0], scales[1]


def gradient_coefficients(
    stats: RowStats, terms: RowTerms, opts: LossOptions, scales: tuple, acc: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift (N,), coef (3, N)), dtype ``acc``, for ``shard_torch.shard_gradient``:

    d loss / d f_ij = A_i p_ij - b_i [j == y_i] - c_i w_j,  p_ij = exp(f_ij - lse_i), with
    A = s ((1 - eps) w_y + eps W / V) + 2 lam t lse,  b = s (1 - eps) w_y,  c = s eps / V
    (s, t = ``scales``, see :func:`gradient_scales`; 0 for ignored rows).  shift: the
    statistics' shift in ``acc`` (a row max of the torch passes: exact) and a = A exp(-(lse -
    shift)), so that a exp(f - shift) = A p with f - shift exact near the lse.
    """
    eps, n_classes = opts.smoothing, opts.n_classes
    s, t = (torch.where(terms.valid, x.expand(terms.valid.shape), 0.0) for x in scales)
    w_y = terms.target_weight.to(STAT_DTYPE)
    b = s * (1.0 - eps) * w_y
    c = s * (eps / n_classes)
    a = b + c * terms.weight_sum  # rounded as the target's b + c w_y (one class: a - that = 0)
    if opts.z_loss:
        a = a + 2.0 * opts.z_loss * t * stats.lse
    shift = stats.shift.to(acc)
    a = a * torch.exp(-((stats.shift - shift.to(STAT_DTYPE)) + stats.log_sum))
    return shift, torch.stack((a, b, c)).to(acc)
