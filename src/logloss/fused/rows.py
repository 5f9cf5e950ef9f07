"""The row-kernel contract of ``logloss.fused``, and its reference implementation in torch.

A row kernel takes logits ``z`` (n, c), targets and a :class:`RowOptions`; it writes each row's
loss into ``loss`` (n,), optionally its log-sum-exp into ``lse_out`` (n,) float64 and, when
``grad`` is given, d(sum_i scale loss_i + z_scale z_loss lse_i^2)/dz into ``grad`` (n, c)
(which may be ``z`` itself).  Targets are class indices (n,) int64 or class probabilities
(n, c) float32.  With eps the label smoothing, C = ``n_classes`` (default c), w the class
weights (1 without) and q_i the one-hot of the target t_i or the row of probabilities:

    z'_ij  = cap tanh(z_ij / cap)   with a softcap, else z_ij
    lse_i  = logsumexp_j z'_ij      (or ``lse_in[i]`` when given)
    q'_ij  = (1 - eps) q_ij + eps / C,        A_i = sum_j w_j q'_ij
    loss_i = A_i lse_i - sum_j w_j q'_ij z'_ij = sum_j w_j q'_ij (lse_i - z'_ij)
    g_ij   = [(scale A_i + 2 z_loss z_scale lse_i) p_ij - scale w_j q'_ij] dz'_ij/dz_ij

with p_ij = exp(z'_ij - lse_i) and dz'/dz = 1 - (z'/cap)^2.  A row whose target is
``ignore_index`` gets loss 0, lse 0 and gradient 0; a row of -inf only has lse -inf (its loss
and gradient are NaN, as PyTorch's); a NaN or +inf logit makes the row's loss, lse and
gradient NaN.  The z-loss z_loss lse_i^2 is *not* in ``loss``: the caller adds it from the lse
(its mean divides by another count than the weighted cross-entropy's).  Without weights,
softcap and probabilities this is
``loss_i = lse_i - (1 - eps) z_it - eps/C sum_j z_ij``, ``torch.nn.functional.cross_entropy``.

Three things a vocabulary-parallel loss (each process holds the columns [c0, c0 + c) of the
logits, of C in all) builds on:

(a) ``lse_out``: each row's log-sum-exp over these columns, float64 for every dtype of z (the
    kernels compute it in double: m + log sum_j exp(z_j - m)).  float32 would not do: rounded
    to float32, an lse of 1e4 is off by up to half an ulp, 4.9e-4, and so would be every
    probability exp(z - lse) computed from it.
(b) ``lse_in``: a given lse per row, float64 (e.g. the global one, after an all-reduce of the
    shards' lse), used instead of computing it: g = scale (exp(z - lse) - (1 - eps) [j == t] -
    eps/C), with ``n_classes=C`` the full class count.  The float32 loops split it into
    hi = float32(lse) and lo = lse - hi and take exp(z - lse) = exp(z - hi) exp(-lo): z - hi is
    exact where it matters (z near the lse), so p keeps float32 accuracy at any magnitude.
(c) ``RowOptions(shard=True)``: a target outside [0, c) that is not ``ignore_index`` is a class
    of another shard (no -z_t term, no one-hot entry here) instead of an error.  Shift the
    targets by -c0 first.  No class weights.  The gradient then takes the whole row's A = 1,
    and with the global lse given, the shards' loss rows add up to the full row's loss (each
    holds A_k lse minus its share of the linear part, and sum_k A_k = 1).

    >>> z, t = torch.tensor([[1.0, 2.0, 0.5, -1.0]]), torch.tensor([2])
    >>> lse = [torch.empty(1, dtype=torch.float64) for _ in (0, 1)]
    >>> opts = RowOptions(shard=True, n_classes=4)
    >>> for k in (0, 1):  # shard k holds columns 2k, 2k + 1; its targets are shifted by -2k
    ...     rows_torch(z[:, 2 * k : 2 * k + 2], t - 2 * k, None, torch.empty(1), opts, lse[k])
    >>> whole = torch.logsumexp(torch.stack(lse), 0)  # (a) + an all-reduce
    >>> loss, grad = [torch.empty(1), torch.empty(1)], torch.empty(1, 4)
    >>> for k in (0, 1):  # (b) + (c)
    ...     part = grad[:, 2 * k : 2 * k + 2]
    ...     rows_torch(z[:, 2 * k : 2 * k + 2], t - 2 * k, part, loss[k], opts, lse_in=whole)
    >>> torch.allclose(loss[0] + loss[1], torch.nn.functional.cross_entropy(z, t))
    True
    >>> torch.allclose(grad, torch.softmax(z, 1) - torch.nn.functional.one_hot(t, 4))
    True

Every backend (the C kernel in ``cpu_kernel``, the Triton kernel in ``triton_kernel``, and
:func:`rows_torch` here) implements exactly this; ``dispatch.compute_rows`` picks one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ROW_CHUNK_ELEMENTS = 1 << 22  # rows per float32 scratch chunk: ~16 MiB of logits
LSE_DTYPE = torch.float64  # of lse_out and lse_in, for every logits dtype (see (a), (b) above)


@dataclass(frozen=True)
class RowOptions:
    """Everything a row kernel needs besides its tensors (validated by the public functions).

    ``scale``/``z_scale``: the gradient pre-scales of the cross-entropy and the z-loss (a
    device tensor on CUDA); ``weight``: (c,) float32 class weights on the rows' device;
    ``softcap``: None or > 0; ``n_classes``: the C of eps/C (None: the rows' own c);
    ``shard``: targets outside [0, c) belong to another shard (see (c) above).
    """

    ignore_index: int = -100
    smoothing: float = 0.0
    scale: float | torch.Tensor = 1.0
    weight: torch.Tensor | None = None
    z_loss: float = 0.0
    z_scale: float | torch.Tensor = 1.0
    softcap: float | None = None
    n_classes: int | None = None
    shard: bool = False

    def __post_init__(self) -> None:
        if self.shard and self.weight is not None:
            raise ValueError(
                "class weights are not supported with shard semantics (a shard's gradient needs "
                "the weight of a target held by another shard); pass weight=None"
            )


def accumulator_dtype(z: torch.Tensor) -> torch.dtype:
    """float64 for float64 logits, float32 (the accumulator) for every other dtype."""
    return torch.float64 if z.dtype == torch.float64 else torch.float32


def lse_like(z: torch.Tensor) -> torch.Tensor:
    """An uninitialised (n,) float64 vector on ``z``'s device, for ``lse_out`` of (n, c) rows."""
    return torch.empty(z.shape[0], dtype=LSE_DTYPE, device=z.device)


def row_chunks(n: int, c: int) -> list[tuple[int, int]]:
    """Row ranges of about ``ROW_CHUNK_ELEMENTS`` elements each (at least one row)."""
    step = max(1, ROW_CHUNK_ELEMENTS // max(c, 1))
    return [(r0, min(n, r0 + step)) for r0 in range(0, max(n, 1), step)]


def _target_terms(
    x: torch.Tensor,
    target: torch.Tensor,
    w: torch.Tensor | float,
    lse_parts: tuple[torch.Tensor, torch.Tensor],
    opts: RowOptions,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A (n,), the loss rows (n,), dL/dz' minus its p part (n, c)) of rows whose log-sum-exp
    is hi + lo (``lse_parts``, (n,) float64 each); A and the loss in float64.

    The loss of index targets is (1 - eps) w_t ((hi - z'_t) + lo) + eps/C ((W hi - sum_j w_j
    z'_j) + W lo): with hi the row max, hi - z'_t is exact, so a loss far below the lse's ulp
    (a confident right answer) keeps its relative accuracy, as PyTorch's.  Products are plain,
    as PyTorch's: a zero coefficient times a -inf logit is NaN.
    """
    c = x.shape[1]
    eps = opts.smoothing
    eps_c = eps / (opts.n_classes or c)
    hi, lo = lse_parts
    if target.is_floating_point():  # (n, c) probabilities
        wq = ((1.0 - eps) * target.to(x.dtype) + eps_c) * w  # (n, c)
        coef = wq.sum(dim=1).to(LSE_DTYPE)
        return coef, (coef * hi - (wq * x).sum(dim=1).to(LSE_DTYPE)) + coef * lo, -wq
    has_t = (target >= 0) & (target < c)  # (n,): a class of these columns
    safe_t = target.where(has_t, 0).unsqueeze(1)  # (n, 1)
    wt = w[safe_t.squeeze(1)] if torch.is_tensor(w) else torch.ones_like(x[:, 0])
    wt = wt.where(has_t, 0.0)  # (n,)
    total_w = float(w.sum()) if torch.is_tensor(w) else float(c)
    held = (1.0 - eps) * wt.to(LSE_DTYPE)  # (n,)
    x_t = x.gather(1, safe_t).squeeze(1).to(LSE_DTYPE)  # (n,)
    loss = (held * ((hi - x_t) + lo)).where(has_t, 0.0)
    if eps > 0.0:  # skipped at 0, as PyTorch: 0 * sum(-inf) would be NaN
        spread = (total_w * hi - (x * w).sum(dim=1).to(LSE_DTYPE)) + total_w * lo
        loss = loss + eps_c * spread
    rest = (-eps_c * w) * torch.ones_like(x)  # (n, c)
    rest.scatter_add_(1, safe_t, (-(1.0 - eps) * wt).unsqueeze(1))
    return held + eps_c * total_w, loss, rest


def rows_torch(
    z: torch.Tensor,
    target: torch.Tensor,
    grad: torch.Tensor | None,
    loss: torch.Tensor,
    opts: RowOptions,
    lse_out: torch.Tensor | None = None,
    lse_in: torch.Tensor | None = None,
) -> None:
    """Reference math in torch (float32, or float64 for float64 z); ``grad`` may be ``z``."""
    x = z.to(accumulator_dtype(z))  # (n, c)
    if opts.softcap is not None:
        x = opts.softcap * torch.tanh(x / opts.softcap)
    # softmax as exp(x - hi) / S, lse = hi + lo: hi the row max (0 for a row of -inf only, whose
    # lse is then log 0 = -inf) and lo = log S, or, with a given lse, hi = lse rounded to x's
    # dtype, lo = lse - hi and S = exp(lo).  x - hi is exact for the entries that do not
    # underflow (Sterbenz), while an lse rounded to float32 is off by up to half an ulp of the
    # logits (4.9e-4 at 1e4).  A NaN or +inf logit makes the row NaN (inf - inf), as PyTorch's.
    if lse_in is None:
        hi = x.amax(dim=1, keepdim=True)  # (n, 1)
        hi = hi.masked_fill(hi == -torch.inf, 0.0)
    else:
        hi = lse_in.to(x.dtype).unsqueeze(1)
    e = torch.exp(x - hi)  # (n, c)
    total = e.sum(dim=1, keepdim=True)  # (n, 1)
    hi64 = hi.squeeze(1).to(LSE_DTYPE)
    if lse_in is None:
        lo = torch.log(total.squeeze(1)).to(LSE_DTYPE)
    else:
        lo = torch.where(total.squeeze(1).isfinite(), lse_in.to(LSE_DTYPE) - hi64, torch.nan)
        total = torch.exp(lo).to(x.dtype).unsqueeze(1)
    lse = hi64 + lo
    w = opts.weight.to(x) if opts.weight is not None else 1.0
    coef, loss_rows, rest = _target_terms(x, target, w, (hi64, lo), opts)
    skip, bad = _row_flags(target, x.shape[1], opts)
    _write_rows(loss, loss_rows, skip, bad)
    if lse_out is not None:
        _write_rows(lse_out, lse, skip, bad)
    if grad is None:
        return
    # a shard's gradient takes the whole row's A, 1 (its loss row keeps its own share of A)
    p_coef = opts.scale * (1.0 if opts.shard else coef) + (2.0 * opts.z_loss) * opts.z_scale * lse
    g = e.div_(total).mul_(p_coef.to(x.dtype).unsqueeze(1)).add_(rest.mul_(opts.scale))
    if opts.softcap is not None:
        g.mul_(1.0 - (x / opts.softcap) ** 2)
    _write_rows(grad, g, skip.unsqueeze(1), bad.unsqueeze(1))


def _row_flags(target: torch.Tensor, c: int, opts: RowOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """(ignored rows, rows whose target is outside [0, c) without shard semantics) (n,)."""
    if target.is_floating_point():
        none = torch.zeros(target.shape[0], dtype=torch.bool, device=target.device)
        return none, none
    skip = target == opts.ignore_index
    outside = (target < 0) | (target >= c)
    return skip, outside & ~skip & (not opts.shard)


def _write_rows(
    out: torch.Tensor, rows: torch.Tensor, skip: torch.Tensor, bad: torch.Tensor
) -> None:
    """out = rows, with 0 on ignored rows and NaN on rows with a bad target (as the C kernel)."""
    out.copy_(rows.masked_fill(skip, 0.0).masked_fill(bad, torch.nan))
