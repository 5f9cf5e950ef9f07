"""The row-kernel contract of ``logloss.fused``, and its reference implementation in torch.

A row kernel takes logits ``z`` (n, C), class-index targets (n,) and a :class:`RowOptions`, and
writes each row's loss into ``loss`` (n,) and, when ``grad`` is given, the gradient of
``sum_i scale * loss_i`` into ``grad`` (n, C) (which may be ``z`` itself):

    loss_i = logsumexp(z_i) - (1 - eps) z_{i,t_i} - eps/C sum_j z_ij        (0 if t_i ignored)
    g_ij   = scale (softmax(z_i)_j - (1 - eps) [j == t_i] - eps/C)          (0 if t_i ignored)

Every backend (the C kernel in ``cpu_kernel``, the Triton kernel in ``triton_kernel``, and
:func:`rows_torch` here) implements exactly this; ``dispatch.compute_rows`` picks one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ROW_CHUNK_ELEMENTS = 1 << 22  # rows per float32 scratch chunk: ~16 MiB of logits


@dataclass(frozen=True)
class RowOptions:
    """What every row kernel needs besides its tensors: ``ignore_index``, the label smoothing eps
    and the gradient pre-scale (1/N_valid for mean, 1 otherwise; a device tensor on CUDA)."""

    ignore_index: int
    smoothing: float
    scale: float | torch.Tensor


def accumulator_dtype(z: torch.Tensor) -> torch.dtype:
    """float64 for float64 logits, float32 (the accumulator) for every other dtype."""
    return torch.float64 if z.dtype == torch.float64 else torch.float32


def row_chunks(n: int, c: int) -> list[tuple[int, int]]:
    """Row ranges of about ``ROW_CHUNK_ELEMENTS`` elements each (at least one row)."""
    step = max(1, ROW_CHUNK_ELEMENTS // max(c, 1))
    return [(r0, min(n, r0 + step)) for r0 in range(0, max(n, 1), step)]


def rows_torch(
    z: torch.Tensor,
    target: torch.Tensor,
    grad: torch.Tensor | None,
    loss: torch.Tensor,
    opts: RowOptions,
) -> None:
    """Reference math in torch (float32, or float64 for float64 z); ``grad`` may be ``z``."""
    acc = accumulator_dtype(z)
    eps, scale = opts.smoothing, float(opts.scale)
    x = z.to(acc)  # (n, C)
    c = x.shape[1]
    ignored = target == opts.ignore_index  # (n,)
    safe_t = target.masked_fill(ignored, 0).unsqueeze(1)  # (n, 1)
    # softmax as exp(x - max) / sum, not exp(x - lse): x - max is exact for the entries that do
    # not underflow (Sterbenz), while lse is rounded at the logits' magnitude (2e-12 relative at
    # 1e4 in float64).  A +inf logit or an all -inf row gives NaN (inf - inf), as PyTorch's row.
    top = x.amax(dim=1, keepdim=True)  # (n, 1)
    e = torch.exp(x - top)  # (n, C)
    total = e.sum(dim=1, keepdim=True)  # (n, 1)
    lse = (top + torch.log(total)).squeeze(1)  # (n,)
    row = lse - (1.0 - eps) * x.gather(1, safe_t).squeeze(1)
    if eps > 0.0:  # skipped at 0: 0 * sum(-inf) would be NaN
        row = row - eps / c * x.sum(dim=1)
    loss.copy_(row.masked_fill(ignored, 0.0))
    if grad is None:
        return
    g = e.div_(total).mul_(scale)
    if eps > 0.0:
        g.sub_(scale * eps / c)
    g.scatter_add_(1, safe_t, torch.full_like(safe_t, -scale * (1.0 - eps), dtype=acc))
    g.masked_fill_(ignored.unsqueeze(1), 0.0)
    grad.copy_(g)
