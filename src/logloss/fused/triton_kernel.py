"""Triton row kernel of ``logloss.fused`` (imported only for logits on a CUDA device).

One program per row: an online max/sum over column blocks gives logsumexp, a second sweep over
the (cached) row writes dL/dz = s (softmax - (1 - eps) onehot - eps/C).  Same math as
``_kernel.c``.  Not run on a GPU yet (none was available): checked on the CPU by Triton's
interpreter against PyTorch (tests/test_fused_triton.py, which skips where Triton is absent).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from logloss.fused.rows import RowOptions


@functools.lru_cache(maxsize=1)
def _kernel() -> Any:
    import triton
    import triton.language as tl

    @triton.jit
    def ce_rows(
        x_ptr,
        x_stride,
        g_ptr,
        g_stride,
        t_ptr,
        loss_ptr,
        scale_ptr,
        n_cols,
        ignore_index,
        eps,
        BLOCK: tl.constexpr,
        WRITE_GRAD: tl.constexpr,
        SMOOTHING: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        x_row = x_ptr + row * x_stride
        t = tl.load(t_ptr + row)
        ignored = t == ignore_index
        m = tl.full([BLOCK], float("-inf"), tl.float32)
        s = tl.zeros([BLOCK], tl.float32)
        sx = tl.zeros([BLOCK], tl.float32)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < n_cols
            v = tl.load(x_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, v)
            shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # avoid (-inf) - (-inf)
            s = s * tl.exp(m - shift) + tl.exp(v - shift)
            m = m_new
            if SMOOTHING:
                sx += tl.where(mask, v, 0.0)
        mx = tl.max(m, axis=0)
        mx_shift = tl.where(mx == float("-inf"), 0.0, mx)
        lse = mx_shift + tl.log(tl.sum(s * tl.exp(m - mx_shift), axis=0))
        t_safe = tl.where(ignored, 0, t)
        xt = tl.load(x_row + t_safe).to(tl.float32)
        loss = lse - (1.0 - eps) * xt
        if SMOOTHING:
            loss = loss - eps / n_cols * tl.sum(sx, axis=0)
        tl.store(loss_ptr + row, tl.where(ignored, 0.0, loss))
        if WRITE_GRAD:
            g_row = g_ptr + row * g_stride
            scale = tl.load(scale_ptr).to(tl.float32)
            for start in range(0, n_cols, BLOCK):
                cols = start + tl.arange(0, BLOCK)
                mask = cols < n_cols
                v = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
                g = tl.exp(v - lse) - tl.where(cols == t, 1.0 - eps, 0.0) - eps / n_cols
                g = tl.where(ignored, 0.0, g * scale)
                tl.store(g_row + cols, g.to(g_ptr.dtype.element_ty), mask=mask)

    return ce_rows


def rows(
    z: torch.Tensor,
    target: torch.Tensor,
    grad: torch.Tensor | None,
    loss: torch.Tensor,
    opts: RowOptions,
) -> None:
    """Loss rows of ``z`` (n, C) into ``loss`` (n,) float32; gradient into ``grad`` (may be z)."""
    import triton

    n, c = z.shape
    if z.stride(1) != 1:
        z = z.contiguous()
    scale_t = torch.as_tensor(opts.scale, dtype=torch.float32, device=z.device).reshape(1)
    block = min(triton.next_power_of_2(c), 4096)
    g = grad if grad is not None else z  # unused when WRITE_GRAD is False
    _kernel()[(n,)](
        z,
        z.stride(0),
        g,
        g.stride(0),
        target,
        loss,  # float32: linear.loss_rows_like for the float16/bfloat16/float32 logits sent here
        scale_t,
        c,
        opts.ignore_index,
        opts.smoothing,
        BLOCK=block,
        WRITE_GRAD=grad is not None,
        SMOOTHING=opts.smoothing > 0.0,
        num_warps=8 if block >= 2048 else 4,
    )
