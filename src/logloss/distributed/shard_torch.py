"""The per-shard passes in torch operations, for what the fused row kernel does not take: class
weights (a shard's gradient needs the whole row's A = (1 - eps) w_y + eps W / V, and the
target's weight may live on another rank; ``RowOptions(shard=True)`` refuses weights).

The same contract as the kernel path of :mod:`shard_math`: :func:`shard_row_stats` gives each
row's (lse_r, loss_r) over this shard's columns, :func:`shard_gradient` the gradient of those
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


def _lse_and_sums(z: torch.Tensor, opts: ShardOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """(lse_r (n,) float64, sum_j w_j f_ij (n,) in the accumulation dtype, 0 without
    smoothing) of this shard's columns; lse_r = -inf for a row of -inf only, NaN for a row
    holding NaN or +inf."""
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
        torch.log(torch.sub(f, shift, out=exps[: r1 - r0]).exp_().sum(dim=1), out=log_sum[r0:r1])
        row_max[r0:r1] = shift.squeeze(1)
        if opts.smoothing > 0.0:
            w = opts.class_weight
            sums[r0:r1] = f.sum(dim=1) if w is None else f @ w
    return row_max.to(STAT_DTYPE) + log_sum.to(STAT_DTYPE), sums


def shard_row_stats(
    z: torch.Tensor, local_target: torch.Tensor, opts: ShardOptions
) -> torch.Tensor:
    """Per row, this shard's lse_r and its loss row with that lse (see ``row_math``):

    loss_r = (1 - eps) w_y [y here] (lse_r - f_y) + eps/V (W_r lse_r - sum_j w_j f_j)

    or, for a row of -inf only (lse_r = -inf), the linear part -(1 - eps) w_y [y here] f_y -
    eps/V sum_j w_j f_j.  The differences are taken in float64 (lse_r - f_y is exact near the
    lse).

    Args:
        z: (n, V_r) logits of this shard (any float dtype, any strides), V_r >= 1.
        local_target: (n,) int64, the target's column in this shard, or negative (another
            shard's class, or an ignored row).
        opts: the shard's options.

    Returns:
        (2, n) float64: lse_r, loss_r.
    """
    eps, v = opts.smoothing, z.shape[1]
    lse, sums = _lse_and_sums(z, opts)
    here = local_target >= 0  # (n,)
    safe = local_target.clamp(min=0)
    f_y = _target_values(z, safe, opts.softcap).to(STAT_DTYPE)  # (n,)
    w = opts.class_weight
    w_y = (torch.ones_like(lse) if w is None else w[safe].to(STAT_DTYPE)) * (1.0 - eps)
    held = torch.where(here, w_y * (lse - f_y), 0.0)
    linear = torch.where(here, w_y * f_y, 0.0)
    if eps > 0.0:  # skipped at 0, as PyTorch: 0 * sum(-inf) would be NaN
        w_sum = float(v) if w is None else float(w.sum())
        held = held + eps / opts.n_classes * (w_sum * lse - sums.to(STAT_DTYPE))
        linear = linear + eps / opts.n_classes * sums.to(STAT_DTYPE)
    return torch.stack((lse, torch.where(lse == -torch.inf, -linear, held)))


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
    b_here = torch.where(local_target >= 0, b, torch.zeros_like(b)).neg_().unsqueeze(1)  # (n, 1)
    safe_target = local_target.clamp(min=0).unsqueeze(1)  # (n, 1)
    for r0, r1 in chunks:
        g = out[r0:r1] if staging is None else staging[: r1 - r0]  # (rows, V_r)
        if opts.softcap is None:
            torch.sub(_in_accumulation(z[r0:r1], scratch), shift[r0:r1].unsqueeze(1), out=g)
        else:
            y = _tanh_of_scaled(z[r0:r1], scratch, opts.softcap)
            torch.mul(y, opts.softcap, out=g).sub_(shift[r0:r1].unsqueeze(1))
        g.exp_().mul_(a[r0:r1].unsqueeze(1))
        if opts.smoothing > 0.0 and opts.class_weight is None:
            g.sub_(c[r0:r1].unsqueeze(1))
        elif opts.smoothing > 0.0:
            g.addr_(c[r0:r1], opts.class_weight, alpha=-1)
        # adding -0.0 to column 0 of rows whose target is elsewhere leaves them unchanged
        g.scatter_add_(1, safe_target[r0:r1], b_here[r0:r1])
        if opts.softcap is not None:
            g.mul_(y.square_().neg_().add_(1.0))
        if staging is not None:
            out[r0:r1].copy_(g)
