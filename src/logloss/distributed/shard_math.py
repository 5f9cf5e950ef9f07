"""The per-shard passes: the O(N x V_r) work each rank does on its own columns of the logits.

Rank r holds the columns [offset_r, offset_r + V_r) of the (N, V) logits.  Two passes over
them, each a function of local tensors (no collective):

1. :func:`shard_row_stats` (forward, one read of the shard): per row, this shard's
   lse_r = log sum_{j here} exp(f_ij) (as a pair hi_r + lo_r) and its loss row with that lse,
   loss_r (``row_math`` combines them across ranks into the loss).
2. :func:`shard_gradient` (backward, one read and one write): the gradient of this shard's
   columns from the *global* lse and the incoming gradient's scales.

Both run the fused row kernel (``logloss.fused``: C on CPU, Triton on CUDA, torch rows
otherwise) in its shard mode: targets of other ranks' classes carry no one-hot term here,
eps/V spreads over all V classes, ``lse_out`` gives lse_r and ``lse_in`` takes the global lse,
both float64, so that exp(f - lse) keeps float32 accuracy at any magnitude.  The kernel's loss
row is loss_r = A_r lse_r - lin_r with A_r = (1 - eps) [y here] + eps V_r / V, exactly the
loss_r of ``row_math``.  Two exceptions take the torch operations of :mod:`shard_torch` for
both passes: class weights, which the kernel's shard mode refuses (a shard's gradient needs the
target's weight, which another rank may hold); and float64 logits, whose "kernel" is torch
operations anyway, and which need the lse as the pair (row max, log-sum) that the torch passes
keep: one float64 lse is rounded at the logits' magnitude, and p - 1 of a confident row (a loss
of 1e-10 at logits of 50) would lose 1e-5 of its relative accuracy.
"""

from __future__ import annotations

import torch

from logloss.distributed import shard_torch
from logloss.distributed.plan import Plan, ShardOptions
from logloss.distributed.row_math import STAT_DTYPE, RowStats, gradient_coefficients
from logloss.fused.dispatch import compute_rows
from logloss.fused.rows import accumulator_dtype


def kernel_applies(opts: ShardOptions, z: torch.Tensor) -> bool:
    """Whether the fused row kernel takes the shard ``z``: all but class weights and float64."""
    return opts.class_weight is None and z.dtype != torch.float64


def shard_row_stats(
    z: torch.Tensor, local_target: torch.Tensor, opts: ShardOptions
) -> torch.Tensor:
    """(3, n) float64: this shard's hi_r, lo_r and loss_r per row (see ``row_math``); through
    the kernel hi_r = lse_r (its ``lse_out``) and lo_r = 0.

    lse_r is -inf for a row of -inf only (and for an empty shard, whose loss_r is 0); such a
    row's loss_r is its linear part instead, -(1 - eps) [y here] f_y - eps/V sum_j f_j (+inf,
    0, or NaN for 0 * -inf, as PyTorch), from the kernel with lse_in = 0 (loss = A 0 - lin).
    NaN for a row holding NaN or +inf.  Ignored rows (``plan.IGNORED``) get (0, 0, 0).

    Args:
        z: (n, V_r) logits of this shard, any float dtype and strides.
        local_target: (n,) int64, the target's column in this shard, ``plan.ELSEWHERE`` or
            ``plan.IGNORED``.
        opts: the shard's options.
    """
    n, v = z.shape
    stats = torch.zeros(3, n, dtype=STAT_DTYPE, device=z.device)
    if v == 0:
        stats[0].fill_(-torch.inf)
        return stats
    if not kernel_applies(opts, z):
        return shard_torch.shard_row_stats(z, local_target, opts)
    loss = torch.empty(n, dtype=accumulator_dtype(z), device=z.device)
    compute_rows(z, local_target, None, loss, opts.row_options(), lse_out=stats[0])
    stats[2] = loss
    empty = torch.nonzero(stats[0] == -torch.inf).squeeze(1)  # rows of -inf only here
    if empty.numel():
        zeros = torch.zeros(empty.numel(), dtype=STAT_DTYPE, device=z.device)
        linear = torch.empty(empty.numel(), dtype=loss.dtype, device=z.device)
        compute_rows(z[empty], local_target[empty], None, linear, opts.row_options(), None, zeros)
        stats[2, empty] = linear.to(STAT_DTYPE)
    return stats


def shard_gradient(
    z: torch.Tensor,
    plan: Plan,
    rows: tuple[int, int],
    stats: RowStats,
    scales: tuple[torch.Tensor, torch.Tensor],
    out: torch.Tensor,
) -> None:
    """d loss / d z for this shard's columns of the rows [r0, r1) of ``plan``, into ``out``.

    g_ij = [(s A_i + 2 lam t lse_i) p_ij - s ((1 - eps) w_y [j == y_i] + eps/V w_j)] df/dz,
    p_ij = exp(f_ij - lse_i), 0 for ignored rows.

    Args:
        z: (n, V_r) this shard's logits of those rows.
        plan: the call's plan; rows: (r0, r1) with r1 - r0 = n.
        stats: those rows' global :class:`RowStats`.
        scales: (s, t) of ``row_math.gradient_scales``, 0-d or (n,) (then the rows are scaled
            after the kernel, one more pass).
        out: (n, V_r), unit column stride; may be ``z`` itself.
    """
    r0, r1 = rows
    local_target = plan.local_target[r0:r1]
    if z.shape[1] == 0:
        return
    if not kernel_applies(plan.shard, z):
        terms = plan.terms.rows(r0, r1)
        acc = accumulator_dtype(z)
        shift, coef = gradient_coefficients(stats, terms, plan.options, scales, acc)
        shard_torch.shard_gradient(z, local_target, shift, coef, plan.shard, out)
        ignored = torch.nonzero(~terms.valid).squeeze(1)
        out.index_fill_(0, ignored, 0.0)  # exactly 0, even for NaN logits
        return
    s, t = scales
    per_row = s.dim() > 0
    opts = plan.shard.row_options(*((1.0, 1.0) if per_row else (s, t)))
    loss = torch.empty(z.shape[0], dtype=accumulator_dtype(z), device=z.device)
    compute_rows(z, local_target, out, loss, opts, lse_in=stats.lse)
    if per_row:  # reduction='none': the incoming gradient of each row
        out.mul_(s.to(out.dtype).unsqueeze(1))
