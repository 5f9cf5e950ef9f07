"""The chunked pass of ``linear_cross_entropy``: logits of a row chunk, their gradient in place,
and the three gradients it contributes to, without the (N, V) logits ever existing at once."""

from __future__ import annotations

import torch

from logloss.fused.dispatch import compute_rows
from logloss.fused.rows import RowOptions, accumulator_dtype


def default_chunk_rows(n: int, h: int, v: int) -> int:
    """Rows per chunk: a power of two <= min(H, 128 MiB of float32 logits), within [16, N].

    Matrix products reach full speed from ~512 rows (measured: 256 rows 183, 512 rows 196
    GFLOP/s per core at H=1024, V=32768; the whole N=4096 pass took 5.4 s of CPU with 256-row
    chunks and 4.7 s with 1024); H rows keep the chunk no bigger than the weight matrix.
    """
    rows = min(max(h, 1), (128 << 20) // (4 * max(v, 1)))
    return max(16, min(max(n, 1), 1 << max(rows.bit_length() - 1, 0)))


def loss_rows_like(x: torch.Tensor) -> torch.Tensor:
    """(N,) per-row loss buffer in the accumulator dtype of ``x``."""
    return torch.empty(x.shape[0], dtype=accumulator_dtype(x), device=x.device)


def linear_pass(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    opts: RowOptions,
    chunk: int,
    loss_rows: torch.Tensor | None,
    row_scale: torch.Tensor | None,
    needs: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """One pass over row chunks: loss rows and d loss/d (hidden, weight, bias).

    Per chunk of rows: z = h W^T + b (rows, V); z <- scale * dL/dz in place (times ``row_scale``
    (N,) if given: reduction='none' backward); grad_h = z W; grad_W += z^T h; grad_b += sum z.
    With no gradient needed, one matrix product per chunk and no gradient buffers.  ``weight``
    may have any strides (a transposed or tied matrix is used as it is, not copied).
    """
    n, v = hidden.shape[0], weight.shape[0]
    grad_h = torch.empty_like(hidden) if needs[0] else None
    grad_w = torch.zeros_like(weight) if needs[1] else None
    grad_b = torch.zeros_like(bias) if needs[2] and bias is not None else None
    want_grad = any(needs)
    if loss_rows is None:
        loss_rows = loss_rows_like(hidden)
    z_buf = torch.empty(min(chunk, n), v, dtype=hidden.dtype, device=hidden.device)
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        h = hidden[r0:r1]  # (rows, H)
        z = z_buf[: r1 - r0]  # (rows, V)
        if bias is None:
            torch.mm(h, weight.t(), out=z)
        else:
            torch.addmm(bias, h, weight.t(), out=z)
        compute_rows(z, target[r0:r1], z if want_grad else None, loss_rows[r0:r1], opts)
        if not want_grad:
            continue
        if row_scale is not None:
            z.mul_(row_scale[r0:r1].to(z.dtype).unsqueeze(1))
        if grad_h is not None:
            torch.mm(z, weight, out=grad_h[r0:r1])
        if grad_w is not None:
            grad_w.addmm_(z.t(), h)
        if grad_b is not None:
            grad_b.add_(z.sum(dim=0))
    return grad_h, grad_w, grad_b
