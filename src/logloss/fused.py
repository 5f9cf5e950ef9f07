"""Fused cross-entropy for large class counts: loss and gradient in one pass over the logits.

``cross_entropy`` matches ``torch.nn.functional.cross_entropy`` for (N, C) logits and class-index
targets, but its forward pass already writes the gradient

    dL/dz_ij = s (softmax(z_i)_j - (1 - eps) [j == y_i] - eps / C)

(s = 1/N_valid for ``reduction="mean"``, 1 otherwise) into a buffer it owns, or over the logits
with ``inplace_backward=True``; backward only multiplies by the incoming gradient.  Each row is
read from memory once: its max, then (the row now in cache) exp(z - max) and their sum, then the
gradient.  Backends, chosen per call (see docs/fused.md for the measurements behind them):

- CPU, float32/float16/bfloat16: a C kernel (``_fused_kernel.c``: AVX-512 intrinsics where the
  CPU has them, else portable vectorised C; rows split over threads), compiled with the system C
  compiler on first use and cached; without a compiler, a warning and the torch path.
- CUDA with Triton importable: a Triton kernel (checked with Triton's CPU interpreter; not yet
  run on a GPU).
- Anything else (float64, other devices, ``LOGLOSS_FUSED_BACKEND=torch``): the same math in
  torch, in float32 (float64 for float64 logits), chunked over rows.

``linear_cross_entropy`` computes the loss of ``hidden @ weight.T + bias`` chunk by chunk, so
the (N, V) logits never exist at once, and accumulates the three gradients in the forward pass.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from logloss._checks import check_index_target, check_label_smoothing, check_reduction
from logloss._tensors import is_tensor

__all__ = ["cross_entropy", "empty_cache", "kernel_status", "linear_cross_entropy"]

_FAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_SOURCE = Path(__file__).with_name("_fused_kernel.c")
# No -ffast-math: it would let the compiler assume no -inf/NaN logits (and, in a shared library
# built by GCC < 13, switch the whole process to flush-to-zero).  The omp-simd pragmas allow the
# reassociation the reductions need; -fno-trapping-math lets the exp's branches become blends.
_CFLAGS = (
    "-O3",
    "-std=c11",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fopenmp-simd",
    "-fPIC",
    "-shared",
    "-pthread",
)
_ROW_CHUNK_ELEMENTS = 1 << 22  # rows per float32 scratch chunk: ~16 MiB of logits
_C_DTYPES = {torch.float32: 0, torch.bfloat16: 1}  # dtype codes of logloss_ce_forward
_REUSE_MIN_BYTES = 1 << 20  # gradient buffers from this size on are kept for the next call
_STREAM_MIN_BYTES = 1 << 25  # gradients from 32 MiB on bypass the caches (streaming stores)
_PORTABLE_ONLY = False  # tests set this to check the portable C loops on AVX-512 machines too


# --------------------------------------------------------------------------------------------
# The compiled CPU kernel: build once per (source, flags, compiler), cache, load with ctypes.
# --------------------------------------------------------------------------------------------

_kernel_lock = threading.Lock()
_kernel: Any = None  # the ctypes function, False once loading failed, None before trying
_kernel_error = ""


def _cache_dir() -> Path:
    """Per-user cache folder for the compiled kernel (``LOGLOSS_CACHE_DIR`` overrides)."""
    if os.environ.get("LOGLOSS_CACHE_DIR"):
        return Path(os.environ["LOGLOSS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "logloss"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build_kernel(directory: Path) -> Path:
    """Compile ``_fused_kernel.c`` into ``directory`` (atomically) and return the library path."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (looked for $CC, cc, gcc, clang)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join([source, " ".join(_CFLAGS).encode(), version.stdout.encode(), cc.encode()])
        + platform.machine().encode()
    ).hexdigest()[:16]
    target = directory / f"fused_kernel-{key}.so"
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(fd)
    try:
        cmd = [cc, *_CFLAGS, "-o", tmp, str(_SOURCE), "-lm"]
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{run.stderr.strip()[-2000:]}")
        os.replace(tmp, target)  # concurrent builders race harmlessly: same bytes, atomic rename
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _load_kernel() -> Any:
    """The ctypes entry point ``logloss_ce_forward``, or None (with one warning) if unavailable."""
    global _kernel, _kernel_error
    if _kernel is not None:
        return _kernel or None
    with _kernel_lock:
        if _kernel is not None:
            return _kernel or None
        try:
            lib = ctypes.CDLL(str(_build_kernel(_cache_dir())))
            fn = lib.logloss_ce_forward
            p, i64, f32, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
            fn.argtypes = [p, i64, p, i64, p, i64, i64, i64, f32, f32, p, i32, i32, i32]
            fn.restype = ctypes.c_int
            fn.avx512 = bool(lib.logloss_ce_avx512())  # the float32 rows' implementation
            _kernel = fn
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _kernel, _kernel_error = False, str(exc)
            warnings.warn(
                f"logloss.fused: the compiled CPU kernel is unavailable ({exc}); using the slower "
                "pure-torch path. Install a C compiler (gcc) or set LOGLOSS_FUSED_BACKEND=torch "
                "to silence this warning.",
                RuntimeWarning,
                stacklevel=3,
            )
    return _kernel or None


def kernel_status() -> dict[str, Any]:
    """Which CPU backend ``cross_entropy`` uses here, and why (for docs, benchmarks, bug reports).

    Returns:
        ``{"backend": "c" | "torch", "detail": str, "simd": str}``; ``simd`` names the C
        kernel's float32/bfloat16 row loops: ``"avx512"`` (intrinsics, on CPUs with AVX-512 F,
        BW and VL) or ``"portable"`` (compiler-vectorised C), or ``"torch"``.

    >>> kernel_status()["backend"] in ("c", "torch")
    True
    """
    if _backend_override() == "torch":
        return {"backend": "torch", "detail": "LOGLOSS_FUSED_BACKEND=torch", "simd": "torch"}
    fn = _load_kernel()
    if fn is None:
        return {"backend": "torch", "detail": _kernel_error, "simd": "torch"}
    simd = "avx512" if fn.avx512 and not _PORTABLE_ONLY else "portable"
    return {"backend": "c", "detail": f"compiled kernel in {_cache_dir()}", "simd": simd}


def _backend_override() -> str:
    value = os.environ.get("LOGLOSS_FUSED_BACKEND", "auto").strip().lower()
    if value not in ("auto", "torch"):
        raise ValueError(f"LOGLOSS_FUSED_BACKEND={value!r}: expected 'auto' or 'torch'")
    return value


# --------------------------------------------------------------------------------------------
# Row kernels: all take z (n, C) and write loss rows (n,) float32 and (optionally) the gradient.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowOptions:
    """What every row kernel needs besides its tensors: ``ignore_index``, the label smoothing eps
    and the gradient pre-scale (1/N_valid for mean, 1 otherwise; a device tensor on CUDA)."""

    ignore_index: int
    smoothing: float
    scale: float | torch.Tensor


@functools.cache
def _triton_available() -> bool:
    import importlib.util

    return "triton" in sys.modules or importlib.util.find_spec("triton") is not None


def _rows_c(
    fn: Any,
    z: torch.Tensor,
    target: torch.Tensor,
    grad: torch.Tensor | None,
    loss: torch.Tensor,
    opts: RowOptions,
) -> None:
    """C kernel on float32 or bfloat16 rows with unit column stride; ``grad`` may be ``z``."""
    n, c = z.shape
    status = fn(
        z.data_ptr(),
        z.stride(0),
        0 if grad is None else grad.data_ptr(),
        0 if grad is None else grad.stride(0),
        target.data_ptr(),
        n,
        c,
        opts.ignore_index,
        opts.smoothing,
        float(opts.scale),
        loss.data_ptr(),
        _C_DTYPES[z.dtype],
        torch.get_num_threads(),
        _kernel_flags(grad),
    )
    if status == -2:
        raise MemoryError(f"logloss.fused: no memory for a {c}-float scratch row")
    if status < 0:
        raise RuntimeError(f"logloss.fused: the C kernel rejected dtype {z.dtype}")


def _kernel_flags(grad: torch.Tensor | None) -> int:
    """Flags of ``logloss_ce_forward``: 1 keeps to the portable C loops (``_PORTABLE_ONLY``, for
    tests), 2 streams a gradient of at least ``_STREAM_MIN_BYTES`` past the caches."""
    flags = 1 if _PORTABLE_ONLY else 0
    if grad is not None and grad.numel() * grad.element_size() >= _STREAM_MIN_BYTES:
        flags |= 2
    return flags


def _rows_torch(
    z: torch.Tensor,
    target: torch.Tensor,
    grad: torch.Tensor | None,
    loss: torch.Tensor,
    opts: RowOptions,
) -> None:
    """Reference math in torch (float32, or float64 for float64 z); ``grad`` may be ``z``."""
    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    eps, scale = opts.smoothing, float(opts.scale)
    x = z.to(acc)  # (n, C)
    c = x.shape[1]
    ignored = target == opts.ignore_index  # (n,)
    safe_t = target.masked_fill(ignored, 0).unsqueeze(1)  # (n, 1)
    lse = torch.logsumexp(x, dim=1)  # (n,)
    # A +inf logit makes PyTorch's row NaN (x - max = inf - inf); logsumexp alone would say inf.
    posinf = torch.isposinf(x).any(dim=1, keepdim=True)  # (n, 1)
    row = lse - (1.0 - eps) * x.gather(1, safe_t).squeeze(1)
    if eps > 0.0:  # skipped at 0: 0 * sum(-inf) would be NaN
        row = row - eps / c * x.sum(dim=1)
    row = row.masked_fill(posinf.squeeze(1), math.nan)
    loss.copy_(row.masked_fill(ignored, 0.0))
    if grad is None:
        return
    g = torch.exp(x - lse.unsqueeze(1)).mul_(scale).masked_fill_(posinf, math.nan)
    if eps > 0.0:
        g.sub_(scale * eps / c)
    g.scatter_add_(1, safe_t, torch.full_like(safe_t, -scale * (1.0 - eps), dtype=acc))
    g.masked_fill_(ignored.unsqueeze(1), 0.0)
    grad.copy_(g)


def _rows(
    z: torch.Tensor,
    target: torch.Tensor,
    grad: torch.Tensor | None,
    loss: torch.Tensor,
    opts: RowOptions,
) -> None:
    """Loss rows (n,) of ``z`` (n, C), and the gradient into ``grad`` (may be ``z``), with the
    fastest backend for its device and dtype."""
    if z.is_cuda and z.dtype in _FAST_DTYPES and _triton_available():
        from logloss import _fused_triton  # CUDA only; not exercised on the CPU-only CI

        _fused_triton.rows(z, target, grad, loss, opts)
        return
    fn = None
    if z.device.type == "cpu" and z.dtype in _FAST_DTYPES and _backend_override() == "auto":
        fn = _load_kernel()
    if fn is None:
        for r0, r1 in _row_chunks(z.shape[0], z.shape[1]):
            g = None if grad is None else grad[r0:r1]
            _rows_torch(z[r0:r1], target[r0:r1], g, loss[r0:r1], opts)
        return
    if z.dtype in _C_DTYPES and z.stride(1) == 1 and (grad is None or grad.stride(1) == 1):
        _rows_c(fn, z, target, grad, loss, opts)
        return
    # float16 (or strided) rows: through a float32 scratch chunk, accumulate in float32
    rows = _row_chunks(z.shape[0], z.shape[1])
    scratch = torch.empty(rows[0][1] - rows[0][0], z.shape[1], dtype=torch.float32)
    for r0, r1 in rows:
        buf = scratch[: r1 - r0]
        buf.copy_(z[r0:r1])
        _rows_c(fn, buf, target[r0:r1], None if grad is None else buf, loss[r0:r1], opts)
        if grad is not None:
            grad[r0:r1].copy_(buf)


def _row_chunks(n: int, c: int) -> list[tuple[int, int]]:
    """Row ranges of about ``_ROW_CHUNK_ELEMENTS`` elements each (at least one row)."""
    step = max(1, _ROW_CHUNK_ELEMENTS // max(c, 1))
    return [(r0, min(n, r0 + step)) for r0 in range(0, max(n, 1), step)]


# --------------------------------------------------------------------------------------------
# cross_entropy
# --------------------------------------------------------------------------------------------


def _scale_for(reduction: str, n_valid: torch.Tensor) -> torch.Tensor | float:
    """Gradient pre-scale: 1/N_valid for mean (0 when nothing counts), 1 for sum and none."""
    if reduction != "mean":
        return 1.0
    if n_valid.device.type == "cpu":
        count = int(n_valid)
        return 1.0 / count if count else 0.0
    return torch.where(n_valid > 0, 1.0 / n_valid.clamp(min=1), 0.0).to(torch.float32)


def _reduce(loss_rows: torch.Tensor, reduction: str, n_valid: torch.Tensor) -> torch.Tensor:
    """none -> (N,), sum -> sum, mean -> sum / N_valid (NaN when every target is ignored)."""
    if reduction == "none":
        return loss_rows
    total = loss_rows.sum(dtype=torch.float64 if loss_rows.dtype == torch.float64 else None)
    if reduction == "sum":
        return total
    return total / n_valid.to(total.dtype)


_buffer_lock = threading.Lock()
# at most one (buffer, the refcount of its memory when nothing but the slot refers to it)
_buffer_slot: list[tuple[torch.Tensor, int]] = []


def _storage_refs(t: torch.Tensor) -> int:
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


def _new_buffer(like: torch.Tensor) -> torch.Tensor:
    """An uninitialised contiguous tensor shaped like ``like`` for the gradient.

    A fresh N x C buffer costs a page fault per 4 KiB on its first write, measured here as more
    than the kernel itself (0.18 s vs 0.12 s of CPU for 512 MiB).  So, like PyTorch's CUDA
    caching allocator, the last large CPU buffer is kept and handed out again once nothing else
    refers to its memory (the gradient from the previous step was consumed and dropped); each
    handle given out holds a reference, so a buffer still in use is never reused.
    ``empty_cache()`` releases it.
    """
    nbytes = like.numel() * like.element_size()
    if (
        like.device.type != "cpu"
        or nbytes < _REUSE_MIN_BYTES
        or not hasattr(torch._C, "_storage_Use_Count")
    ):
        return torch.empty(like.shape, dtype=like.dtype, device=like.device)
    with _buffer_lock:
        if _buffer_slot:
            kept, alone = _buffer_slot[0]
            same_size = kept.dtype == like.dtype and kept.numel() == like.numel()
            if same_size and _storage_refs(kept) == alone:
                return kept.view(like.shape)  # a new handle: counts while it lives
        _buffer_slot.clear()  # the old buffer's memory goes before the new one is made
        fresh = torch.empty(like.numel(), dtype=like.dtype)
        _buffer_slot[:] = [(fresh, _storage_refs(fresh))]
        return fresh.view(like.shape)


def empty_cache() -> None:
    """Release the gradient buffer ``cross_entropy`` keeps for reuse between calls.

    >>> empty_cache()
    """
    with _buffer_lock:
        _buffer_slot.clear()


class _GradBuffer:
    """Holds a gradient computed in forward until the first backward hands it to autograd."""

    def __init__(self, grad: torch.Tensor | None) -> None:
        self.grad = grad

    def take(self) -> torch.Tensor | None:
        grad, self.grad = self.grad, None
        # detach(): with inplace_backward the buffer is the logits tensor itself, which autograd
        # would copy before storing as .grad; a fresh handle on the same memory it stores as is
        return None if grad is None else grad.detach()


def _loss_rows(x: torch.Tensor) -> torch.Tensor:
    """(N,) per-row loss buffer: float64 for float64 inputs, float32 (the accumulator) else."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.empty(x.shape[0], dtype=dtype, device=x.device)


def _scaled(grad: torch.Tensor, grad_output: torch.Tensor, per_row: bool) -> torch.Tensor:
    """grad * dL_out: per row (N, 1) for reduction='none', else one scalar; in place."""
    if per_row:
        return grad.mul_(grad_output.to(grad.dtype).unsqueeze(-1))
    if grad_output.device.type == "cpu" and float(grad_output) == 1.0:
        return grad  # loss.backward(): nothing to do
    return grad.mul_(grad_output.to(grad.dtype))


class _FusedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        logits: torch.Tensor,
        target: torch.Tensor,
        opts: RowOptions,
        reduction: str,
        inplace_backward: bool,
        grad_enabled: bool,
    ) -> torch.Tensor:
        # needs_input_grad says whether logits require grad, not whether grad mode is on (inside
        # forward it is always off): under torch.no_grad() no gradient is made or written
        need_grad = grad_enabled and ctx.needs_input_grad[0]
        n_valid = (target != opts.ignore_index).sum()
        opts = RowOptions(opts.ignore_index, opts.smoothing, _scale_for(reduction, n_valid))
        loss_rows = _loss_rows(logits)
        grad = None
        if need_grad:
            grad = logits if inplace_backward else _new_buffer(logits)
        _rows(logits, target, grad, loss_rows, opts)
        if need_grad and inplace_backward:
            # the logits now hold the gradient: autograd errors if anything else saved them
            torch.autograd.graph.increment_version(logits)
        ctx.buffer = _GradBuffer(grad)
        # a second backward (retain_graph=True, gradcheck) recomputes from the saved logits
        ctx.save_for_backward(None if inplace_backward else logits, target)
        ctx.options = (opts, reduction)
        return _reduce(loss_rows, reduction, n_valid).to(logits.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        opts, reduction = ctx.options
        grad = ctx.buffer.take()
        if grad is None:
            logits, target = ctx.saved_tensors
            if logits is None:
                raise RuntimeError(
                    "logloss.fused.cross_entropy: a second backward through a loss computed with "
                    "inplace_backward=True is impossible (the logits were overwritten by the "
                    "gradient); use inplace_backward=False to backpropagate more than once"
                )
            grad = _new_buffer(logits)
            _rows(logits, target, grad, _loss_rows(logits), opts)
        return _scaled(grad, grad_output, reduction == "none"), None, None, None, None, None


def _check_target(
    target: Any, num_classes: int, ignore_index: Any, like: torch.Tensor, against: str
) -> tuple[torch.Tensor, int]:
    """Validate (N,) integer class indices in [0, num_classes) or ``ignore_index``, on the device
    of ``like`` (N, ...); ``against`` names ``like`` in messages.  Returns (int64 target, int).

    The ignore_index rule (an int or NumPy integer, not a bool) and the range check are
    ``logloss.losses``' own, so both modules accept and reject the same values.
    """
    n = like.shape[0]
    if not is_tensor(target):
        raise ValueError(f"target must be a torch.Tensor of shape ({n},); got {type(target)}")
    if target.dim() != 1 or target.shape[0] != n:
        raise ValueError(
            f"target must have shape ({n},) to match {against} {tuple(like.shape)}; "
            f"got {tuple(target.shape)}"
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(
            f"target must hold integer class indices (int64); got {target.dtype}. "
            "Probability targets are not supported by the fused loss: use "
            "torch.nn.functional.cross_entropy."
        )
    if target.device != like.device:
        raise ValueError(
            f"target is on {target.device} but {against} is on {like.device}; move both to one "
            "device"
        )
    # like's shape without its second axis is (N,), which target has (checked above)
    target, _ = check_index_target(target, like, num_classes, ignore_index, against)
    return target.contiguous(), int(ignore_index)


def _check_logits(logits: Any) -> torch.Tensor:
    """Validate (N, C) floating logits with C >= 1."""
    if not is_tensor(logits):
        raise ValueError(f"logits must be a torch.Tensor of shape (N, C); got {type(logits)}")
    if logits.dim() != 2:
        raise ValueError(
            f"logits must be 2-D (N, C); got shape {tuple(logits.shape)}. For (N, C, d1, ...) "
            "logits move the class axis last and flatten: x.movedim(1, -1).reshape(-1, C)."
        )
    if not logits.is_floating_point():
        raise ValueError(
            "logits must be floating point (float32, float16, bfloat16 or float64); "
            f"got {logits.dtype}"
        )
    if logits.shape[1] == 0:
        raise ValueError(f"logits must have at least one class; got shape {tuple(logits.shape)}")
    return logits


def _check_inplace(logits: torch.Tensor) -> None:
    """``inplace_backward=True`` overwrites the logits with the gradient, so every element must
    have its own memory (rows of unit stride that do not overlap) and the memory must not be a
    leaf tensor's (a parameter's .grad would then be the parameter itself)."""
    n, c = logits.shape
    if logits.stride(1) != 1 or (n > 1 and logits.stride(0) < c):
        raise ValueError(
            "inplace_backward=True needs logits whose elements each have their own memory "
            f"(unit stride along classes, rows not overlapping); got shape {tuple(logits.shape)} "
            f"with strides {logits.stride()} (e.g. from .expand()). Call .contiguous() first or "
            "leave inplace_backward=False."
        )
    base = logits if logits._base is None else logits._base
    if torch.is_grad_enabled() and base.is_leaf and base.requires_grad:
        raise ValueError(
            "inplace_backward=True would overwrite a leaf tensor that requires grad (e.g. a "
            "parameter, or a view of one) with its own gradient, so .grad would share its memory; "
            "pass the output of an operation (the logits of a layer), or leave "
            "inplace_backward=False."
        )


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    inplace_backward: bool = False,
) -> torch.Tensor:
    """Cross-entropy of (N, C) logits and class indices, gradient computed in the forward pass.

    loss_i = logsumexp(z_i) - (1 - eps) z_{i,y_i} - eps/C sum_j z_ij   (0 where y_i == ignore_index)

    ``mean`` divides the sum by the number of non-ignored rows (NaN if there are none), exactly as
    ``torch.nn.functional.cross_entropy``.  float16/bfloat16 logits are accumulated in float32.
    Under ``torch.no_grad()`` (or for logits that do not require grad) only the loss is computed.

    Args:
        logits: (N, C) float32, float16, bfloat16 or float64 tensor.
        target: (N,) integer class indices in [0, C), or ``ignore_index``.
        ignore_index: target value whose rows add nothing to the loss or the gradient.
        reduction: ``"none"`` -> (N,), ``"sum"`` or ``"mean"`` -> scalar.
        label_smoothing: eps in [0, 1], mixing the one-hot target with the uniform distribution.
        inplace_backward: write the gradient over ``logits`` instead of a new buffer (saves one
            N x C allocation; the logits' values are gone afterwards).  Needs logits whose
            elements do not share memory and that are not a leaf requiring grad.

    Returns:
        The loss, in the logits' dtype.

    >>> z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]], requires_grad=True)
    >>> loss = cross_entropy(z, torch.tensor([0, 2]))
    >>> round(loss.item(), 4)
    0.6342
    >>> loss.backward()
    >>> [round(v, 4) for v in z.grad[0].tolist()]
    [-0.0781, 0.0571, 0.021]
    """
    logits = _check_logits(logits)
    target, ignore_index = _check_target(target, logits.shape[1], ignore_index, logits, "logits")
    check_reduction(reduction)
    smoothing = check_label_smoothing(label_smoothing)
    if inplace_backward:
        _check_inplace(logits)
    opts = RowOptions(ignore_index, smoothing, 1.0)  # the scale is set in forward
    return _FusedCrossEntropy.apply(
        logits, target, opts, reduction, bool(inplace_backward), torch.is_grad_enabled()
    )


# --------------------------------------------------------------------------------------------
# linear_cross_entropy
# --------------------------------------------------------------------------------------------


def _default_chunk_rows(n: int, h: int, v: int) -> int:
    """Rows per chunk: a power of two <= min(H, 128 MiB of float32 logits), within [16, N].

    Matrix products reach full speed from ~512 rows (measured: 256 rows 183, 512 rows 196
    GFLOP/s per core at H=1024, V=32768; the whole N=4096 pass took 5.4 s of CPU with 256-row
    chunks and 4.7 s with 1024); H rows keep the chunk no bigger than the weight matrix.
    """
    rows = min(max(h, 1), (128 << 20) // (4 * max(v, 1)))
    return max(16, min(max(n, 1), 1 << max(rows.bit_length() - 1, 0)))


def _linear_pass(
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
        loss_rows = _loss_rows(hidden)
    z_buf = torch.empty(min(chunk, n), v, dtype=hidden.dtype, device=hidden.device)
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        h = hidden[r0:r1]  # (rows, H)
        z = z_buf[: r1 - r0]  # (rows, V)
        if bias is None:
            torch.mm(h, weight.t(), out=z)
        else:
            torch.addmm(bias, h, weight.t(), out=z)
        _rows(z, target[r0:r1], z if want_grad else None, loss_rows[r0:r1], opts)
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


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        target: torch.Tensor,
        ignore_index: int,
        reduction: str,
        chunk: int,
        grad_enabled: bool,
    ) -> torch.Tensor:
        # needs_input_grad reflects requires_grad, not grad mode: no gradients under no_grad()
        needs = tuple(grad_enabled and bool(need) for need in ctx.needs_input_grad[:3])
        n_valid = (target != ignore_index).sum()
        opts = RowOptions(ignore_index, 0.0, _scale_for(reduction, n_valid))
        loss_rows = _loss_rows(hidden)
        # reduction='none': the per-row incoming gradients are only known in backward, so the
        # chunks rerun there; otherwise all gradients are made here and backward only scales
        needs_now = (False, False, False) if reduction == "none" else needs
        grads = _linear_pass(hidden, weight, bias, target, opts, chunk, loss_rows, None, needs_now)
        ctx.buffers = [_GradBuffer(g) for g in grads]
        ctx.save_for_backward(hidden, weight, bias, target)
        ctx.options = (opts, reduction, chunk, needs)
        return _reduce(loss_rows, reduction, n_valid).to(hidden.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        opts, reduction, chunk, needs = ctx.options
        grads = [b.take() for b in ctx.buffers]
        if any(need and g is None for need, g in zip(needs, grads, strict=True)):
            # reduction='none', or a second backward: rerun the chunks from the saved inputs
            hidden, weight, bias, target = ctx.saved_tensors
            row_scale = grad_output if reduction == "none" else None
            grads = list(
                _linear_pass(hidden, weight, bias, target, opts, chunk, None, row_scale, needs)
            )
        if reduction != "none":
            grads = [None if g is None else _scaled(g, grad_output, False) for g in grads]
        return (*grads, None, None, None, None, None)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Cross-entropy of ``hidden @ weight.T + bias`` without materialising the (N, V) logits.

    loss = cross_entropy(hidden W^T + b, target); rows go through in chunks of ``chunk_size``:
    z = h W^T + b, then dL/dz in place (fused kernel), grad_h = (dL/dz) W, grad_W += (dL/dz)^T h,
    grad_b += sum_rows dL/dz -- all in the forward pass, so backward only scales (for
    ``reduction="none"`` backward recomputes the chunks with the per-row incoming gradients).

    Args:
        hidden: (N, H) floating tensor.
        weight: (V, H), same dtype and device.
        target: (N,) integer class indices in [0, V), or ``ignore_index``.
        bias: optional (V,).
        ignore_index: target value whose rows add nothing.
        reduction: ``"none"``, ``"sum"`` or ``"mean"``.
        chunk_size: rows per chunk; default: H rows, at most 128 MiB of float32 logits.

    Returns:
        The loss ((N,) for ``"none"``, else a scalar), in ``hidden``'s dtype.

    >>> h, w = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    >>> round(linear_cross_entropy(h, w, torch.tensor([0, 1])).item(), 4)
    0.5032
    """
    for name, value in (("hidden", hidden), ("weight", weight)):
        if not is_tensor(value) or value.dim() != 2 or not value.is_floating_point():
            shape = tuple(value.shape) if is_tensor(value) else type(value)
            raise ValueError(f"{name} must be a 2-D floating torch.Tensor; got {shape}")
    if weight.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"weight must have shape (V, {hidden.shape[1]}) to match hidden "
            f"{tuple(hidden.shape)}; got {tuple(weight.shape)}"
        )
    if weight.shape[0] == 0:
        raise ValueError(
            f"weight must have at least one row (one per class); got shape {tuple(weight.shape)}"
        )
    if weight.dtype != hidden.dtype or weight.device != hidden.device:
        raise ValueError(
            f"weight ({weight.dtype}, {weight.device}) must match hidden ({hidden.dtype}, "
            f"{hidden.device})"
        )
    if bias is not None and (
        not is_tensor(bias)
        or tuple(bias.shape) != (weight.shape[0],)
        or bias.dtype != hidden.dtype
        or bias.device != hidden.device
    ):
        got = (tuple(bias.shape), bias.dtype, bias.device) if is_tensor(bias) else type(bias)
        raise ValueError(
            f"bias must be a ({weight.shape[0]},) tensor of {hidden.dtype} on {hidden.device}; "
            f"got {got}"
        )
    if chunk_size is not None and (
        not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size!r}")
    target, ignore_index = _check_target(target, weight.shape[0], ignore_index, hidden, "hidden")
    check_reduction(reduction)
    chunk = chunk_size or _default_chunk_rows(*hidden.shape, weight.shape[0])
    # the weight is used with its own strides (a transposed or tied V x H matrix is not copied)
    return _FusedLinearCrossEntropy.apply(
        hidden.contiguous(),
        weight,
        bias,
        target,
        ignore_index,
        reduction,
        chunk,
        torch.is_grad_enabled(),
    )
