"""The per-shard passes in torch operations, for what the fused row kernel does not take: class
weights (a shard's gradient needs the whole row's A = (1 - eps) w_y + eps W / V, and the
target's weight may live on another rank; ``RowOptions(shard=True)`` refuses weights), and
float64 logits (whose lse stays the pair (row max, log-sum) here; see :mod:`shard_math`).

The same contract as the kernel path of :mod:`shard_math`: :func:`shard_row_stats` gives each
row's (hi_r, lo_r, loss_r) over this shard's columns, :func:`shard_gradient` the gradient of those
columns from the global lse.  With softcap, every logit z is first mapped to
f = cap * tanh(z / cap); both passes see f.  Rows go through in chunks of about
``CHUNK_ELEMENTS`` (1 MiB of float32, which stays in the L2 cache between the chunk's
operations), computed in float32 (float64 for float64 logits) through two scratch buffers
reused from chunk to chunk.
"""

from __future__ import annotations

import torch

from logloss.distributed.plan import ShardOptions
from logloss.distributed.row_math import STAT_DTYPE
from logloss.fused.rows import accumulator_dtype

CHUNK_ELEMENTS = 1 << 18  # elements per row chunk: 1 MiB of float32 (measured: 2 MiB is 15% slower)
GPU_CHUNK_ELEMENTS = 1 << 24  # on a GPU, fewer and larger chunks (each operation is a launch)


def row_chunks(n: int, v: int, device: torch.device) -> list[tuple[int, int]]:
    """Row ranges [r0, r1) of about ``CHUNK_ELEMENTS`` elements each (``GPU_CHUNK_ELEMENTS`` off
    the CPU), at least one row each."""
    elements = CHUNK_ELEMENTS if device.type == "cpu" else GPU_CHUNK_ELEMENTS
    step = max(1, elements // max(v, 1))
    return [(r0, min(n, r0 + step)) for r0 in range(0, n, step)]


def _in_accumulation(z: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """``z`` (rows, V_r) in the accumulation dtype: itself, or a copy in ``scratch``."""
    if z.dtype == scratch.dtype:
        return z
    return scratch[: z.shape[0]].copy_(z)


def _tanh_of_scaled(z: torch.Tensor, scratch: torch.Tensor, softcap: float) -> torch.Tensor:
    """y = tanh(z / cap) in ``scratch`` (so f = cap y and df/dz = 1 - y^2, as autograd has it)."""
    return scratch[: z.shape[0]].copy_(z).div_(softcap).tanh_()


def _lse_and_sums(z: torch.Tensor, opts: ShardOptions) -> tuple[torch.Tensor, ...]:
    """(shift, log_sum, sum_j w_j (f_ij - shift)), (n,) each, float64: lse_r = shift + log_sum
    over this shard's columns (shift the row max, 0 for a row of -inf only, whose log_sum is
    -inf; NaN for a row holding NaN or +inf), the weighted sum 0 without smoothing (its terms
    are all <= 0: no cancellation, exactly 0 for one class)."""
    n, v = z.shape
    acc = accumulator_dtype(z)
    row_max = torch.empty(n, dtype=acc, device=z.device)
    log_sum = torch.empty(n, dtype=acc, device=z.device)
    sums = torch.zeros(n, dtype=acc, device=z.device)
    chunks = row_chunks(n, v, z.device)
    rows = chunks[0][1] - chunks[0][0] if chunks else 0
    scratch = torch.empty(rows, v, dtype=acc, device=z.device)  # f, when it is not z itself
    exps = torch.empty(rows, v, dtype=acc, device=z.device)  # exp(f - max)
    for r0, r1 in chunks:
        if opts.softcap is None:
            f = _in_accumulation(z[r0:r1], scratch)  # (rows, V_r)
        else:
            f = _tanh_of_scaled(z[r0:r1], scratch, opts.softcap).mul_(opts.softcap)
        torch.amax(f, dim=1, out=row_max[r0:r1])
        # an all -inf row would give -inf - -inf = NaN; shifting it by 0 gives log(0) = -inf
        shift = row_max[r0:r1].masked_fill(row_max[r0:r1] == -torch.inf, 0.0).unsqueeze(1)
        below = torch.sub(f, shift, out=exps[: r1 - r0])  # (rows, V_r), <= 0
        if opts.smoothing > 0.0:
            w = opts.class_weight
            sums[r0:r1] = below.sum(dim=1) if w is None else below @ w
        torch.log(below.exp_().sum(dim=1), out=log_sum[r0:r1])
        row_max[r0:r1] = shift.squeeze(1)
    return row_max.to(STAT_DTYPE), log_sum.to(STAT_DTYPE), sums.to(STAT_DTYPE)


def shard_row_stats(
    z: torch.Tensor, local_target: torch.Tensor, opts: ShardOptions
) -> torch.Tensor:
    """Per row, this shard's lse_r and its loss row with that lse (see ``row_math``):

    loss_r = (1 - eps) w_y [y here] (lse_r - f_y) + eps/V (W_r lse_r - sum_j w_j f_j)

    or, for a row of -inf only (lse_r = -inf), the linear part -(1 - eps) w_y [y here] f_y -
    eps/V sum_j w_j f_j.  In float64, with lse_r = shift + log_sum kept apart:
    lse_r - f_y = (shift - f_y) + log_sum is exact to rounding however small, and so is
    W_r lse_r - sum_j w_j f_j = W_r log_sum - sum_j w_j (f_j - shift).

    Args:
        z: (n, V_r) logits of this shard (any float dtype, any strides), V_r >= 1.
        local_target: (n,) int64, the target's column in this shard, or negative (another
            shard's class, or an ignored row).
        opts: the shard's options.

    Returns:
        (3, n) float64: shift, log_sum (lse_r = shift + log_sum), loss_r.
    """
    eps, v = opts.smoothing, z.shape[1]
    shift, log_sum, sums = _lse_and_sums(z, opts)
    here = local_target >= 0  # (n,)
    safe = local_target.clamp(min=0)
    f_y = _target_values(z, safe, opts.softcap).to(STAT_DTYPE)  # (n,)
    w = opts.class_weight
    w_y = (torch.ones_like(shift) if w is None else w[safe].to(STAT_DTYPE)) * (1.0 - eps)
    held = torch.where(here, w_y * ((shift - f_y) + log_sum), 0.0)
    linear = torch.where(here, w_y * f_y, 0.0)
    if eps > 0.0:  # skipped at 0, as PyTorch: 0 * sum(-inf) would be NaN
        w_sum = float(v) if w is None else float(w.sum())
        held = held + eps / opts.n_classes * (w_sum * log_sum - sums)
        linear = linear + eps / opts.n_classes * sums  # shift = 0 where it is used
    loss = torch.where(log_sum == -torch.inf, -linear, held)
    return torch.stack((shift, log_sum, loss))


def _target_values(z: torch.Tensor, safe_target: torch.Tensor, softcap: float | None):
    """(n,) f at each row's column ``safe_target`` (in [0, V_r)), float32 or float64."""
    picked = z.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    picked = picked.to(accumulator_dtype(z))
    return picked if softcap is None else torch.tanh(picked / softcap) * softcap


def shard_gradient(
    z: torch.Tensor,
    local_target: torch.Tensor,
    shift: torch.Tensor,
    coef: torch.Tensor,
    opts: ShardOptions,
    out: torch.Tensor,
) -> None:
    """The gradient of the loss with respect to this shard's logits, written into ``out``.

    out_ij = (a_i exp(f_ij - shift_i) - b_i [j == t_i] - c_i w_j) * df_ij/dz_ij

    with (a, b, c) = ``coef`` and df/dz = 1 - tanh(z / cap)^2 under softcap (else 1); see
    ``row_math.gradient_coefficients`` (shift: the global lse rounded, a = A exp(shift - lse)).

    Args:
        z: (n, V_r) logits of this shard.
        local_target: (n,) int64 column in this shard or negative (see :func:`shard_row_stats`).
        shift: (n,) accumulation dtype.
        coef: (3, n) rows a, b, c in the accumulation dtype.
        opts: softcap, class weights, and whether the c term applies (smoothing > 0).
        out: (n, V_r) tensor with unit column stride; may be ``z`` itself (written in place).
    """
    n, v = z.shape
    acc = shift.dtype
    chunks = row_chunks(n, v, z.device)
    if not chunks or v == 0:
        return
    rows = chunks[0][1] - chunks[0][0]
    scratch = torch.empty(rows, v, dtype=acc, device=z.device)  # f or tanh(z / cap)
    staging = None if out.dtype == acc else torch.empty(rows, v, dtype=acc, device=z.device)
    a, b, c = coef
    here = (local_target >= 0).unsqueeze(1)  # (n, 1)
    safe_target = local_target.clamp(min=0).unsqueeze(1)  # (n, 1)
    w_t = 1.0 if opts.class_weight is None else opts.class_weight[safe_target.squeeze(1)]
    # the target's entry a p - (b + c w_t), rounded as a = b + c W: exactly 0 for one class
    off_t = (b + c * w_t if opts.smoothing > 0.0 else b).unsqueeze(1)  # (n, 1)
    for r0, r1 in chunks:
        g = out[r0:r1] if staging is None else staging[: r1 - r0]  # (rows, V_r)
        if opts.softcap is None:
            torch.sub(_in_accumulation(z[r0:r1], scratch), shift[r0:r1].unsqueeze(1), out=g)
        else:
            y = _tanh_of_scaled(z[r0:r1], scratch, opts.softcap)
            torch.mul(y, opts.softcap, out=g).sub_(shift[r0:r1].unsqueeze(1))
        g.exp_().mul_(a[r0:r1].unsqueeze(1))
        at_target = g.gather(1, safe_target[r0:r1]) - off_t[r0:r1]  # (rows, 1)
        if opts.smoothing > 0.0 and opts.class_weight is None:
            g.sub_(c[r0:r1].unsqueeze(1))
        elif opts.smoothing > 0.0:
            g.addr_(c[r0:r1], opts.class_weight, alpha=-1)
        # column 0 of rows whose target is elsewhere gets its own value back
        kept = torch.where(here[r0:r1], at_target, g.gather(1, safe_target[r0:r1]))
        g.scatter_(1, safe_target[r0:r1], kept)
        if opts.softcap is not None:
            g.mul_(y.square_().neg_().add_(1.0))
        if staging is not None:
            out[r0:r1].copy_(g)
