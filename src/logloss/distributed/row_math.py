"""The per-row steps: O(N) math on the statistics every rank gathered, the same on every rank.

For row i with global logits f_i (after softcap), target y_i, class weights w (1 without
weights, W = sum_j w_j), smoothing eps over V classes and z-loss scale lam, PyTorch's
``F.cross_entropy`` (plus the z-loss of PaLM) is

    lse_i = log sum_j exp(f_ij)
    ce_i  = (1 - eps) w_{y_i} (lse_i - f_{i,y_i}) + eps/V (W lse_i - sum_j w_j f_ij)
    zl_i  = lam lse_i^2

(both 0 for ignored rows).  ``mean`` is sum(ce) / sum_{valid} w_{y_i} + sum(zl) / N_valid: the
cross-entropy is PyTorch's weighted mean, the z-loss is not weighted.  Each rank contributes
its shard's row max and log-sum-exp, target logit and weighted sum (:mod:`shard_math`); after
the collective every rank holds the same (P, 4, N) statistics and computes the same loss.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

REDUCTIONS = ("none", "mean", "sum")


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
    """Per-row quantities that depend only on the targets (replicated, so equal on all ranks).

    valid (N,) bool; target_weight (N,) w_{y_i} (0 for ignored rows); ce_total 0-d
    sum_{valid} w_{y_i} (N_valid without weights); n_valid 0-d; weight_sum W (V without
    weights).
    """

    valid: torch.Tensor
    target_weight: torch.Tensor
    ce_total: torch.Tensor
    n_valid: torch.Tensor
    weight_sum: float

    def rows(self, r0: int, r1: int) -> RowTerms:
        """The terms of rows [r0, r1) (the totals stay those of all N rows)."""
        return replace(self, valid=self.valid[r0:r1], target_weight=self.target_weight[r0:r1])


def row_terms(target: torch.Tensor, opts: LossOptions, acc: torch.dtype) -> RowTerms:
    """The :class:`RowTerms` of (N,) int64 targets (in [0, V) or ``ignore_index``)."""
    valid = target != opts.ignore_index  # (N,)
    if opts.class_weight is None:
        target_weight = valid.to(acc)
        weight_sum = float(opts.n_classes)
    else:
        safe = torch.where(valid, target, torch.zeros_like(target))
        target_weight = torch.where(valid, opts.class_weight[safe], 0.0).to(acc)
        weight_sum = float(opts.class_weight.sum())
    n_valid = valid.sum().to(acc)
    return RowTerms(valid, target_weight, target_weight.sum(), n_valid, weight_sum)


@dataclass(frozen=True)
class RowStats:
    """The global statistics of each row, (N,) each: ``shift`` the row max (0 for a row of -inf
    only), ``log_sum`` = log sum_j exp(f_ij - shift_i), so lse_i = shift_i + log_sum_i (kept
    apart: their float32 sum would round away up to half an ulp of the max), the target's
    logit and the weighted row sum sum_j w_j f_ij (0 without smoothing)."""

    shift: torch.Tensor
    log_sum: torch.Tensor
    target_logit: torch.Tensor
    smooth_sum: torch.Tensor

    @property
    def lse(self) -> torch.Tensor:
        return self.shift + self.log_sum

    def stacked(self) -> torch.Tensor:
        """(4, N): shift, log_sum, target_logit, smooth_sum (``RowStats(*t)`` is the inverse)."""
        return torch.stack((self.shift, self.log_sum, self.target_logit, self.smooth_sum))

    def rows(self, r0: int, r1: int) -> RowStats:
        """The statistics of rows [r0, r1)."""
        return RowStats(
            self.shift[r0:r1],
            self.log_sum[r0:r1],
            self.target_logit[r0:r1],
            self.smooth_sum[r0:r1],
        )


def combine_row_stats(gathered: torch.Tensor) -> RowStats:
    """Global per-row statistics from every rank's :func:`shard_math.shard_row_stats`.

    shift = max_r m_r (0 when every rank's is -inf), log_sum = log sum_r exp(m_r - shift + l_r)
    (NaN when a rank's is: a +inf logit), target logit = sum_r t_r (one rank holds the target,
    the others add 0), smoothing sum = sum_r s_r.

    Args:
        gathered: (P, 4, N), rank r's statistics at [r].
    """
    row_max, local_log_sum = gathered[:, 0], gathered[:, 1]  # (P, N) each
    shift = row_max.amax(dim=0)  # (N,)
    shift = shift.masked_fill(shift == -torch.inf, 0.0)
    # a rank whose row is all -inf adds exp(-inf) = 0
    log_sum = (row_max - shift + local_log_sum).exp().sum(dim=0).log()
    sums = gathered[:, 2:].sum(dim=0)  # (2, N)
    return RowStats(shift, log_sum, sums[0], sums[1])


def row_losses(
    stats: RowStats, terms: RowTerms, opts: LossOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ce, zl), each (N,): the cross-entropy and z-loss of every row, 0 for ignored rows.

    lse - f_y is computed as (shift - f_y) + log_sum: exact to rounding for large logits.
    """
    eps = opts.smoothing
    gap = (stats.shift - stats.target_logit) + stats.log_sum  # lse - f_{i,y_i}
    ce = (1.0 - eps) * terms.target_weight * gap
    if eps > 0.0:  # skipped at 0: 0 * (-inf) would be NaN
        w_sum = terms.weight_sum
        spread = (w_sum * stats.shift - stats.smooth_sum) + w_sum * stats.log_sum
        ce = ce + eps / opts.n_classes * spread
    zero = torch.zeros_like(ce)
    ce = torch.where(terms.valid, ce, zero)
    if not opts.z_loss:
        return ce, zero
    return ce, torch.where(terms.valid, opts.z_loss * stats.lse.square(), zero)


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


def _row_scale(
    grad_output: torch.Tensor, total: torch.Tensor, terms: RowTerms, reduction: str
) -> torch.Tensor:
    """(N,) d loss / d row loss: grad_output / total for mean (0 when total is 0), grad_output
    for sum, grad_output[i] for none; 0 for ignored rows."""
    g = grad_output.to(terms.target_weight.dtype)
    if reduction == "mean":
        g = torch.where(total > 0, g / total.clamp(min=torch.finfo(total.dtype).tiny), 0.0)
    return torch.where(terms.valid, g.expand(terms.valid.shape), 0.0)


def gradient_coefficients(
    stats: RowStats, terms: RowTerms, opts: LossOptions, grad_output: torch.Tensor
) -> torch.Tensor:
    """(3, N) rows a, b, c of :func:`shard_math.shard_gradient` (with shift = ``stats.shift``):

    d loss / d f_ij = A_i p_ij - b_i [j == y_i] - c_i w_j,  p_ij = exp(f_ij - lse_i), with
    A = s ((1 - eps) w_y + eps W / V) + 2 lam t lse,  b = s (1 - eps) w_y,  c = s eps / V,
    s the scale of row i's cross-entropy and t that of its z-loss (:func:`_row_scale`), and
    a = A exp(-log_sum) (so that a exp(f - shift) = A p).
    """
    eps, n_classes = opts.smoothing, opts.n_classes
    s = _row_scale(grad_output, terms.ce_total, terms, opts.reduction)
    b = s * (1.0 - eps) * terms.target_weight
    a = b + s * (eps * terms.weight_sum / n_classes)
    if opts.z_loss:
        t = _row_scale(grad_output, terms.n_valid, terms, opts.reduction)
        a = a + torch.where(terms.valid, 2.0 * opts.z_loss * t * stats.lse, 0.0)
    return torch.stack((a * torch.exp(-stats.log_sum), b, s * (eps / n_classes)))
