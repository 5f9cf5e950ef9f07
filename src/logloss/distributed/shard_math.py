"""The per-shard steps: the O(N x V_r) work each rank does on its own columns of the logits.

Rank r holds the columns [offset_r, offset_r + V_r) of the (N, V) logits.  Two passes over them,
each a plain function of local tensors (no collective), so that a faster row kernel can replace
either with a few lines:

1. :func:`shard_row_stats` (forward): per row, the max and log-sum-exp of this shard's
   columns, the target's logit when the target is one of them, and the (class-weighted) sum
   for smoothing.
2. :func:`shard_gradient` (backward): given the *global* per-row max (after the collective)
   and three per-row coefficients, the gradient of this shard's columns.

With softcap, every logit z is first mapped to f = cap * tanh(z / cap); both passes see f.  Rows
go through in chunks of about ``CHUNK_ELEMENTS`` (1 MiB of float32, which stays in the L2 cache
between the chunk's operations), computed in float32 (float64 for float64 logits) through two
scratch buffers reused from chunk to chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CHUNK_ELEMENTS = 1 << 18  # elements per row chunk: 1 MiB of float32 (measured: 2 MiB is 15% slower)
GPU_CHUNK_ELEMENTS = 1 << 24  # on a GPU, fewer and larger chunks (each operation is a launch)


@dataclass(frozen=True)
class ShardOptions:
    """What the per-shard steps need besides the logits and targets.

    ``softcap``: the cap of f = cap * tanh(z / cap), or None.  ``class_weight``: this shard's
    (V_r,) class weights in the accumulation dtype, or None for weight 1.  ``smoothing``: whether
    pass 1 computes the smoothing sum.
    """

    softcap: float | None
    class_weight: torch.Tensor | None
    smoothing: bool


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float32, float16 and bfloat16 are accumulated in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


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


def shard_row_stats(
    z: torch.Tensor, local_target: torch.Tensor, opts: ShardOptions
) -> torch.Tensor:
    """Per-row statistics of this shard's columns, to be combined across ranks.

    stats[0, i] = m_i = max_{j in shard} f_ij                    (-inf for an empty shard)
    stats[1, i] = log sum_{j in shard} exp(f_ij - m_i)           (-inf if m_i = -inf)
    stats[2, i] = f_{i, t_i} if 0 <= t_i (target in this shard) else 0
    stats[3, i] = sum_{j in shard} w_j f_ij if ``opts.smoothing`` else 0

    The log-sum-exp travels as the pair (m_i, log-sum) and is never rounded to one number: in
    float32, m_i + log-sum would lose up to half an ulp of m_i (5e-4 at logits of 1e4, a
    relative error of 5e-4 in every probability).  A row whose largest logit is +inf gets a
    NaN log-sum (F.cross_entropy's row is NaN).

    Args:
        z: (n, V_r) logits of this shard (any float dtype, any strides).
        local_target: (n,) int64, the target's column in this shard, or -1 (another shard's
            class, or an ignored row).
        opts: softcap, class weights, smoothing.

    Returns:
        (4, n) tensor in the accumulation dtype.
    """
    n, v = z.shape
    acc = accumulation_dtype(z.dtype)
    stats = torch.zeros(4, n, dtype=acc, device=z.device)
    if v == 0:
        stats[:2].fill_(-torch.inf)
        return stats
    chunks = row_chunks(n, v, z.device)
    rows = chunks[0][1] - chunks[0][0] if chunks else 0
    scratch = torch.empty(rows, v, dtype=acc, device=z.device)  # f, when it is not z itself
    exps = torch.empty(rows, v, dtype=acc, device=z.device)  # exp(f - max)
    for r0, r1 in chunks:
        if opts.softcap is None:
            f = _in_accumulation(z[r0:r1], scratch)  # (rows, V_r)
        else:
            f = _tanh_of_scaled(z[r0:r1], scratch, opts.softcap).mul_(opts.softcap)
        row_max = torch.amax(f, dim=1, out=stats[0, r0:r1])  # (rows,)
        # an all -inf row would give -inf - -inf = NaN; shifting it by 0 gives log(0) = -inf
        shift = row_max.masked_fill(row_max == -torch.inf, 0.0).unsqueeze(1)  # (rows, 1)
        e = torch.sub(f, shift, out=exps[: r1 - r0]).exp_()
        torch.log(e.sum(dim=1), out=stats[1, r0:r1])
        if opts.smoothing:
            w = opts.class_weight
            stats[3, r0:r1] = f.sum(dim=1) if w is None else f @ w
    stats[2] = _target_values(z, local_target, opts.softcap, acc)
    return stats


def _target_values(
    z: torch.Tensor, local_target: torch.Tensor, softcap: float | None, acc: torch.dtype
) -> torch.Tensor:
    """(n,) f at each row's local target (dtype ``acc``), 0 where the target is elsewhere."""
    here = local_target >= 0  # (n,)
    picked = z.gather(1, local_target.clamp(min=0).unsqueeze(1)).squeeze(1).to(acc)  # (n,)
    if softcap is not None:
        picked = torch.tanh(picked / softcap) * softcap
    return torch.where(here, picked, torch.zeros_like(picked))


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

    with (a, b, c) = ``coef`` and df/dz = 1 - tanh(z / cap)^2 under softcap (else 1).  With the
    global row max as ``shift`` and S_i = sum_j exp(f_ij - shift_i) over all ranks' columns,
    a_i = s_i / S_i makes the first term s_i softmax(f_i)_j, exact to rounding even for large
    logits.  For plain cross-entropy with scale s and smoothing eps over V classes: a = s / S,
    b = s (1 - eps), c = s eps / V, w = 1.

    Args:
        z: (n, V_r) logits of this shard.
        local_target: (n,) int64 column in this shard or -1 (see :func:`shard_row_stats`).
        shift: (n,) the global row max (0 for a row of -inf only), accumulation dtype.
        coef: (3, n) rows a, b, c in the accumulation dtype.
        opts: softcap, class weights, and whether the c term applies (``opts.smoothing``).
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
        if opts.smoothing and opts.class_weight is None:
            g.sub_(c[r0:r1].unsqueeze(1))
        elif opts.smoothing:
            g.addr_(c[r0:r1], opts.class_weight, alpha=-1)
        # adding -0.0 to column 0 of rows whose target is elsewhere leaves them unchanged
        g.scatter_add_(1, safe_target[r0:r1], b_here[r0:r1])
        if opts.softcap is not None:
            g.mul_(y.square_().neg_().add_(1.0))
        if staging is not None:
            out[r0:r1].copy_(g)
