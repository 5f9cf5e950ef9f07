"""Which row kernel runs: the C kernel on CPU, Triton on CUDA, the torch rows everywhere else.

- CPU, float32/bfloat16 rows with unit column stride: the C kernel straight on the tensors;
  float16 (or strided) rows through a float32 scratch chunk.  Without a compiler, or with
  ``LOGLOSS_FUSED_BACKEND=torch``, the torch rows.
- CUDA with Triton importable, float32/float16/bfloat16: the Triton kernel.
- Anything else (float64, MPS, CUDA without Triton): the torch rows, chunked over rows.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from typing import Any

import torch

from logloss.fused import cpu_kernel
from logloss.fused.rows import RowOptions, row_chunks, rows_torch

FAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def backend_override() -> str:
    value = os.environ.get("LOGLOSS_FUSED_BACKEND", "auto").strip().lower()
    if value not in ("auto", "torch"):
        raise ValueError(f"LOGLOSS_FUSED_BACKEND={value!r}: expected 'auto' or 'torch'")
    return value


@functools.cache
def triton_available() -> bool:
    return "triton" in sys.modules or importlib.util.find_spec("triton") is not None


def kernel_status() -> dict[str, Any]:
    """Which CPU backend ``cross_entropy`` uses here, and why (for docs, benchmarks, bug reports).

    Returns:
        ``{"backend": "c" | "torch", "detail": str, "simd": str}``; ``simd`` names the C
        kernel's float32/bfloat16 row loops: ``"avx512"`` (intrinsics, on CPUs with AVX-512 F,
        BW and VL) or ``"portable"`` (compiler-vectorised C), or ``"torch"``.

    >>> kernel_status()["backend"] in ("c", "torch")
    True
    """
    if backend_override() == "torch":
        return {"backend": "torch", "detail": "LOGLOSS_FUSED_BACKEND=torch", "simd": "torch"}
    fn = cpu_kernel.load_kernel()
    if fn is None:
        return {"backend": "torch", "detail": cpu_kernel.load_error(), "simd": "torch"}
    detail = f"compiled kernel in {cpu_kernel.cache_dir()}"
    return {"backend": "c", "detail": detail, "simd": cpu_kernel.simd(fn)}


def scale_in_place(grad: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """grad *= factor (one element, the incoming gradient of a reduced loss), in place.

    Skipped when factor is 1, the common ``loss.backward()``: on the CPU by reading it, on CUDA
    by a Triton kernel that returns at once (reading it on the host would wait for the GPU)."""
    if grad.is_cuda and grad.dtype in FAST_DTYPES and grad.is_contiguous() and triton_available():
        from logloss.fused import triton_kernel  # optional dependency, CUDA only

        return triton_kernel.scale_in_place(grad, factor.reshape(1))
    if factor.device.type == "cpu" and float(factor) == 1.0:
        return grad
    return grad.mul_(factor.to(grad.dtype))


def compute_rows(
    z: torch.Tensor,
    target: torch.Tensor,
    grad: torch.Tensor | None,
    loss: torch.Tensor,
    opts: RowOptions,
    lse_out: torch.Tensor | None = None,
    lse_in: torch.Tensor | None = None,
) -> None:
    """The row kernel of :mod:`.rows` on ``z`` (n, C) with the fastest backend for its device
    and dtype: loss rows into ``loss``, the lse into ``lse_out``, the gradient into ``grad``
    (which may be ``z``); ``lse_in`` replaces the computed lse."""
    if z.is_cuda and z.dtype in FAST_DTYPES and triton_available():
        from logloss.fused import triton_kernel  # optional dependency, CUDA only

        triton_kernel.rows(z, target, grad, loss, opts, lse_out, lse_in)
        return
    fn = None
    if z.device.type == "cpu" and z.dtype in FAST_DTYPES and backend_override() == "auto":
        fn = cpu_kernel.load_kernel()
    chunks = row_chunks(z.shape[0], z.shape[1])
    if fn is None:
        for r0, r1 in chunks:
            g = None if grad is None else grad[r0:r1]
            rows_torch(
                z[r0:r1], target[r0:r1], g, loss[r0:r1], opts, *_part(lse_out, lse_in, r0, r1)
            )
        return
    if z.dtype in cpu_kernel.C_DTYPES and _unit_stride(z, grad, target):
        cpu_kernel.rows_c(fn, z, target, grad, loss, opts, lse_out, lse_in)
        return
    # float16 (or strided) rows: through a float32 scratch chunk, accumulate in float32
    scratch = torch.empty(chunks[0][1] - chunks[0][0], z.shape[1], dtype=torch.float32)
    for r0, r1 in chunks:
        buf = scratch[: r1 - r0]
        buf.copy_(z[r0:r1])
        g = None if grad is None else buf
        t = target[r0:r1] if target.ndim == 1 else target[r0:r1].contiguous()
        cpu_kernel.rows_c(fn, buf, t, g, loss[r0:r1], opts, *_part(lse_out, lse_in, r0, r1))
        if grad is not None:
            grad[r0:r1].copy_(buf)


def _unit_stride(z: torch.Tensor, grad: torch.Tensor | None, target: torch.Tensor) -> bool:
    """Whether the C kernel can take the rows as they are (unit stride along classes)."""
    tensors = [z, *([] if grad is None else [grad]), *([target] if target.ndim == 2 else [])]
    return all(t.stride(1) == 1 or t.shape[1] == 1 for t in tensors)


def _part(
    lse_out: torch.Tensor | None, lse_in: torch.Tensor | None, r0: int, r1: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    return (None if lse_out is None else lse_out[r0:r1], None if lse_in is None else lse_in[r0:r1])
