"""The chunked pass of ``linear_cross_entropy``: logits of a row chunk, their gradient in place,
and the three gradients it contributes to, without the (N, V) logits ever existing at once.
The vocabulary-parallel linear loss (``logloss.distributed.linear``) runs its chunks with the
same pieces: :func:`chunk_logits`, :func:`gradient_buffers`, :func:`add_chunk_gradients`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from logloss.fused.dispatch import compute_rows
from logloss.fused.rows import RowOptions, accumulator_dtype


@dataclass(frozen=True)
class LinearPlan:
    """How the pass runs: rows per chunk, the dtype the weight and bias gradients accumulate in
    over the chunks (None: theirs), the dtype of the returned loss."""

    chunk: int
    accum_dtype: torch.dtype | None
    out_dtype: torch.dtype


def default_chunk_rows(n: int, h: int, v: int) -> int:
    """Rows per chunk: a power of two <= min(H, 128 MiB of float32 logits), within [16, N].

    Matrix products reach full speed from ~512 rows (measured: 256 rows 183, 512 rows 196
    GFLOP/s per core at H=1024, V=32768; the whole N=4096 pass took 5.4 s of CPU with 256-row
    chunks and 4.7 s with 1024); H rows keep the chunk no bigger than the weight matrix.
    """
    rows = min(max(h, 1), (128 << 20) // (4 * max(v, 1)))
    return max(16, min(max(n, 1), 1 << max(rows.bit_length() - 1, 0)))


def rows_like(x: torch.Tensor) -> torch.Tensor:
    """An (N,) buffer for the loss rows, in the accumulator dtype of ``x``."""
    return torch.empty(x.shape[0], dtype=accumulator_dtype(x), device=x.device)


def _accumulator(t: torch.Tensor | None, needed: bool, dtype: torch.dtype | None):
    """A zeroed gradient accumulator like ``t`` (in ``dtype`` if given), or None."""
    if t is None or not needed:
        return None
    return torch.zeros(t.shape, dtype=dtype or t.dtype, device=t.device)


Grads = list  # [grad_hidden, grad_weight, grad_bias], each a tensor or None


def gradient_buffers(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    needs: tuple[bool, bool, bool],
    accum_dtype: torch.dtype | None = None,
) -> Grads:
    """The gradients a chunked pass fills: grad_h (written chunk by chunk), grad_W and grad_b
    (zeroed accumulators, in ``accum_dtype`` if given); None where not ``needs``."""
    return [
        torch.empty_like(hidden) if needs[0] else None,
        _accumulator(weight, needs[1], accum_dtype),
        _accumulator(bias, needs[2], accum_dtype),
    ]


def chunk_logits(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor
) -> torch.Tensor:
    """z = h W^T + b into ``out`` (rows, V), for h (rows, H) and W (V, H) with any strides."""
    if bias is None:
        return torch.mm(h, weight.t(), out=out)
    return torch.addmm(bias, h, weight.t(), out=out)


def add_chunk_gradients(
    z: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, grads: Grads, r0: int
) -> None:
    """A chunk's part of each gradient, from dL/dz in ``z`` (rows, V) and its hidden rows h
    (rows, H) starting at row ``r0``: grad_h[rows] = z W; grad_W += z^T h; grad_b += sum_rows z
    (grad_W and grad_b in the accumulators' dtype: the products in the chunk's, then added, so a
    bfloat16 weight's gradient sums its chunks in float32)."""
    grad_h, grad_w, grad_b = grads
    if grad_h is not None:
        torch.mm(z, weight, out=grad_h[r0 : r0 + z.shape[0]])
    if grad_w is not None:
        if grad_w.dtype == z.dtype:
            grad_w.addmm_(z.t(), h)
        else:
            grad_w.add_(torch.mm(z.t(), h))
    if grad_b is not None:
        grad_b.add_(z.sum(dim=0, dtype=grad_b.dtype))


def linear_pass(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    opts: RowOptions,
    plan: LinearPlan,
    outs: tuple[torch.Tensor | None, torch.Tensor | None],
    row_scale: torch.Tensor | None,
    needs: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """One pass over row chunks: loss rows and lse (float64) into ``outs`` (either may be
    None), and d loss/d (hidden, weight, bias).

    Per chunk of rows: z = h W^T + b (rows, V); z <- scale * dL/dz in place (times ``row_scale``
    (N,) if given: reduction='none' backward); grad_h = z W; grad_W += z^T h; grad_b += sum z
    (grad_W and grad_b in ``plan.accum_dtype``).  With no gradient needed, one matrix product
    per chunk and no gradient buffers.  ``weight`` may have any strides (a transposed or tied
    matrix is used as it is, not copied).
    """
    n, v = hidden.shape[0], weight.shape[0]
    grads = gradient_buffers(hidden, weight, bias, needs, plan.accum_dtype)
    want_grad = any(needs)
    loss_rows = rows_like(hidden) if outs[0] is None else outs[0]
    lse = outs[1]
    z_buf = torch.empty(min(plan.chunk, n), v, dtype=hidden.dtype, device=hidden.device)
    for r0 in range(0, n, plan.chunk):
        r1 = min(n, r0 + plan.chunk)
        h = hidden[r0:r1]  # (rows, H)
        z = chunk_logits(h, weight, bias, z_buf[: r1 - r0])  # (rows, V)
        lse_rows = None if lse is None else lse[r0:r1]
        grad = z if want_grad else None
        compute_rows(z, target[r0:r1], grad, loss_rows[r0:r1], opts, lse_out=lse_rows)
        if not want_grad:
            continue
        if row_scale is not None:
            z.mul_(row_scale[r0:r1].to(z.dtype).unsqueeze(1))
        add_chunk_gradients(z, h, weight, grads, r0)
    grad_h, grad_w, grad_b = grads
    return grad_h, _cast(grad_w, weight), _cast(grad_b, bias)


def _cast(grad: torch.Tensor | None, like: torch.Tensor | None) -> torch.Tensor | None:
    """The accumulated gradient in its parameter's dtype."""
    return None if grad is None else grad.to(like.dtype)
