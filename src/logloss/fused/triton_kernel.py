"""Triton row kernel of ``logloss.fused`` (imported only for logits on a CUDA device).

One program per row, the contract of :mod:`.rows`: a first sweep over column blocks keeps an
online max and sum of exp(z' - max) (z' the capped logits; one exp per logit, the sum rescaled
once per block when the max grows) and the sums of the loss's linear part; a second sweep over
the (cached) row writes g = [(scale A + 2 z_loss z_scale lse) p - scale w q'] dz'/dz.  Same
math as ``_kernel.c``.  Checked on the CPU by Triton's interpreter against PyTorch
(tests/test_fused_triton.py, which skips where Triton is absent) and on a GPU by
benchmarks/gpu_check.py.
"""

from __future__ import annotations

import torch

from logloss.fused.rows import RowOptions

try:  # optional dependency: the kernels exist only where Triton imports (dispatch checks that)
    import triton
    import triton.language as tl
except ImportError:
    triton = None

if triton is not None:

    @triton.jit
    def tanh(y):
        # Cephes' odd polynomial near 0 (no cancellation), 1 - 2 / (exp(2|y|) + 1) elsewhere
        y2 = y * y
        p = -5.70498872745e-3 * y2 + 2.06390887954e-2
        p = (p * y2 - 5.37397155531e-2) * y2 + 1.33314422036e-1
        small = y + y * y2 * ((p * y2) - 3.33332819422e-1)
        big = 1.0 - 2.0 / (tl.exp(2.0 * tl.abs(y)) + 1.0)
        return tl.where(tl.abs(y) < 0.625, small, tl.where(y < 0, -big, big))

    @triton.jit
    def load_z(x_row, cols, mask, softcap, CAPPED: tl.constexpr):
        # the row's (capped) logits in float32; -inf outside the row
        v = tl.load(x_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
        if CAPPED:
            v = tl.where(mask, softcap * tanh(v / softcap), float("-inf"))
        return v

    @triton.jit
    def ce_rows(
        x_ptr, x_stride, g_ptr, g_stride, t_ptr, q_ptr, q_stride, w_ptr,
        loss_ptr, lse_out_ptr, lse_in_ptr, scale_ptr, z_scale_ptr,
        n_cols, ignore_index, eps, eps_c, z_loss, softcap,
        BLOCK: tl.constexpr, WRITE_GRAD: tl.constexpr, SOFT: tl.constexpr,
        HAS_WEIGHT: tl.constexpr, CAPPED: tl.constexpr, SMOOTHING: tl.constexpr,
        LSE_OUT: tl.constexpr, LSE_IN: tl.constexpr, SHARD: tl.constexpr,
    ):  # fmt: skip
        row = tl.program_id(0).to(tl.int64)
        x_row = x_ptr + row * x_stride
        q_row = q_ptr + row * q_stride
        if SOFT:
            t = -1
            ignored = False
            has_t = False
            bad = False
        else:
            t = tl.load(t_ptr + row)
            ignored = t == ignore_index
            has_t = (t >= 0) & (t < n_cols)
            bad = (not SHARD) & (not has_t) & (not ignored)
        m = float("-inf")  # the running max and sum of exp(z' - m): one exp per logit
        s = 0.0
        coef_acc = tl.zeros([BLOCK], tl.float32)  # sum w q' (probabilities) or sum w
        lin_acc = tl.zeros([BLOCK], tl.float32)  # sum w q' z' (probabilities) or sum w z'
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < n_cols
            v = load_z(x_row, cols, mask, softcap, CAPPED)
            m_new = tl.maximum(m, tl.max(v, axis=0))
            shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # avoid (-inf) - (-inf)
            s = s * tl.exp(m - shift) + tl.sum(tl.exp(v - shift), axis=0)
            m = m_new
            w = (
                tl.load(w_ptr + cols, mask=mask, other=0.0)
                if HAS_WEIGHT
                else tl.where(mask, 1.0, 0.0)
            )
            if SOFT:
                wq = w * ((1.0 - eps) * tl.load(q_row + cols, mask=mask, other=0.0) + eps_c)
                wq = tl.where(mask, wq, 0.0)
                coef_acc += wq
                lin_acc += tl.where(mask, wq * v, 0.0)
            elif SMOOTHING:
                coef_acc += w
                lin_acc += tl.where(mask, w * v, 0.0)
        # p = exp((z' - hi) - lo) with lse = hi + lo in float64: hi the max and lo the log-sum,
        # or hi the given lse rounded to float32 and lo the rest; z' - hi is exact near the lse,
        # so p keeps float32 accuracy at any magnitude (a float32 lse of 1e4 is 5e-4 off)
        hi = tl.where(m == float("-inf"), 0.0, m)
        lo = tl.log(s)
        lo64 = lo.to(tl.float64)
        lse = hi.to(tl.float64) + lo64
        if LSE_IN:  # the given lse; a NaN (or +inf) row stays NaN
            lse = tl.where(lse == lse, tl.load(lse_in_ptr + row).to(tl.float64), lse)
            hi = lse.to(tl.float32)
            lo64 = lse - hi.to(tl.float64)
            lo = lo64.to(tl.float32)
        if SOFT:
            coef = tl.sum(coef_acc, axis=0)
            lin = tl.sum(lin_acc, axis=0)
            wt = 0.0
        else:
            t_safe = tl.where(has_t, t, 0)
            wt = tl.where(has_t, 1.0, 0.0)
            if HAS_WEIGHT:
                wt = wt * tl.load(w_ptr + t_safe)
            zt = load_z(x_row, t_safe, True, softcap, CAPPED).to(tl.float64)
            coef = (1.0 - eps) * wt
            lin = tl.where(has_t, (1.0 - eps) * wt * zt, 0.0)  # float64: A lse - lin cancels
            if SMOOTHING:
                coef += eps_c * tl.sum(coef_acc, axis=0)
                lin += eps_c * tl.sum(lin_acc, axis=0).to(tl.float64)
        # (A hi - lin) + A lo: for a target at the row max hi - z_t is exact, so a loss far
        # below the lse's ulp keeps its relative accuracy
        coef64 = coef.to(tl.float64)
        row_loss = (coef64 * hi.to(tl.float64) - lin) + coef64 * lo64
        loss = tl.where(ignored, 0.0, tl.where(bad, float("nan"), row_loss))
        tl.store(loss_ptr + row, loss.to(tl.float32))
        if LSE_OUT:
            tl.store(lse_out_ptr + row, tl.where(ignored, 0.0, tl.where(bad, float("nan"), lse)))
        if WRITE_GRAD:
            # a shard's gradient takes the whole row's A, 1 (its loss row keeps its own share)
            coef_g = 1.0 if SHARD else coef
            scale = tl.load(scale_ptr).to(tl.float32)
            z_coef = 2.0 * z_loss * tl.load(z_scale_ptr).to(tl.float32) * lse.to(tl.float32)
            p_coef = scale * coef_g + z_coef
            row_out = tl.where(ignored, 0.0, tl.where(bad, float("nan"), 1.0))  # 0, NaN or as is
            write_gradient(
                x_row, g_ptr + row * g_stride, q_row, w_ptr, t, wt, hi, lo, p_coef, scale,
                row_out, n_cols, eps, eps_c, softcap, BLOCK, SOFT, HAS_WEIGHT, CAPPED,
            )  # fmt: skip

    @triton.jit
    def write_gradient(
        x_row, g_row, q_row, w_ptr, t, wt, hi, lo, p_coef, scale, row_out,
        n_cols, eps, eps_c, softcap,
        BLOCK: tl.constexpr, SOFT: tl.constexpr, HAS_WEIGHT: tl.constexpr, CAPPED: tl.constexpr,
    ):  # fmt: skip
        # g = [p_coef p - scale w q'] dz'/dz over the row's column blocks (times row_out: 0 for an
        # ignored row, NaN for a bad target)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < n_cols
            v = load_z(x_row, cols, mask, softcap, CAPPED)
            w = tl.load(w_ptr + cols, mask=mask, other=0.0) if HAS_WEIGHT else 1.0
            if SOFT:
                q = tl.load(q_row + cols, mask=mask, other=0.0)
                rest = w * ((1.0 - eps) * q + eps_c)
            else:
                rest = eps_c * w + tl.where(cols == t, (1.0 - eps) * wt, 0.0)
            g = p_coef * tl.exp((v - hi) - lo) - scale * rest
            if CAPPED:
                u = v / softcap
                g = g * (1.0 - u * u)
            g = tl.where(row_out == 1.0, g, row_out)
            tl.store(g_row + cols, g.to(g_row.dtype.element_ty), mask=mask)

    @triton.jit
    def scale_unless_one(g_ptr, factor_ptr, numel, BLOCK: tl.constexpr):
        # g *= factor in place; every program returns at once when factor == 1 (loss.backward()),
        # which the host could only learn by waiting for the GPU
        factor = tl.load(factor_ptr).to(tl.float32)
        if factor != 1.0:
            offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
            mask = offsets < numel
            g = tl.load(g_ptr + offsets, mask=mask).to(tl.float32)
            tl.store(g_ptr + offsets, (g * factor).to(g_ptr.dtype.element_ty), mask=mask)


def scale_in_place(grad: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """grad *= factor (a one-element tensor on grad's device) for a contiguous float32, float16
    or bfloat16 ``grad`` on CUDA, without a pass over ``grad`` when factor is 1."""
    numel, block = grad.numel(), 4096
    scale_unless_one[(triton.cdiv(numel, block),)](grad, factor, numel, BLOCK=block, num_warps=8)
    return grad


def rows(
    z: torch.Tensor,
    target: torch.Tensor,
    grad: torch.Tensor | None,
    loss: torch.Tensor,
    opts: RowOptions,
    lse_out: torch.Tensor | None = None,
    lse_in: torch.Tensor | None = None,
) -> None:
    """The row kernel of :mod:`.rows` on CUDA: loss rows of ``z`` (n, C) into ``loss`` (n,)
    float32, the lse into ``lse_out`` (n,) float64 (``lse_in`` float64 too), the gradient into
    ``grad`` (may be ``z``)."""
    n, c = z.shape
    if z.stride(1) != 1:
        z = z.contiguous()
    soft = target.is_floating_point()
    if soft and target.stride(1) != 1:
        target = target.contiguous()
    # blocks of 128 to 4096 columns: few compiled variants (one per block size and options)
    block = min(max(triton.next_power_of_2(c), 128), 4096)
    g = grad if grad is not None else z  # unused when WRITE_GRAD is False
    ce_rows[(n,)](
        z, z.stride(0), g, g.stride(0),
        loss if soft else target, target if soft else loss, target.stride(0) if soft else 0,
        loss if opts.weight is None else opts.weight,
        loss, loss if lse_out is None else lse_out, loss if lse_in is None else lse_in,
        _device_scalar(opts.scale, z), _device_scalar(opts.z_scale, z),
        c, opts.ignore_index, opts.smoothing, opts.smoothing / (opts.n_classes or c),
        opts.z_loss, opts.softcap or 1.0,
        BLOCK=block, WRITE_GRAD=grad is not None, SOFT=soft,
        HAS_WEIGHT=opts.weight is not None, CAPPED=opts.softcap is not None,
        SMOOTHING=opts.smoothing > 0.0, LSE_OUT=lse_out is not None,
        LSE_IN=lse_in is not None, SHARD=opts.shard,
        num_warps=8 if block >= 2048 else 4,
    )  # fmt: skip


def _device_scalar(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (1,) tensor on ``like``'s device that the kernel reads as float32: a device tensor as
    it is (the mean's 1/N), a number filled in on the device (no copy from the host)."""
    if torch.is_tensor(value) and value.device == like.device:
        return value.reshape(1)
    return torch.full((1,), float(value), dtype=torch.float32, device=like.device)
