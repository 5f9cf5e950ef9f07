"""The compiled CPU row kernel: ``_kernel.c`` built once per (source, flags, compiler), cached,
loaded with ctypes (which releases the GIL), and called on float32 or bfloat16 rows.

The build goes to ``~/.cache/logloss/`` (``$XDG_CACHE_HOME``, ``$LOGLOSS_CACHE_DIR``), keyed by a
hash of the source, the flags and the compiler's version, written to a temporary file and renamed
(concurrent first calls are safe).  Without a compiler: one ``RuntimeWarning`` and ``None``, so
that the caller falls back to the torch rows.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from logloss.fused.rows import RowOptions

SOURCE = Path(__file__).with_name("_kernel.c")
# No -ffast-math: it would let the compiler assume no -inf/NaN logits (and, in a shared library
# built by GCC < 13, switch the whole process to flush-to-zero).  The omp-simd pragmas allow the
# reassociation the reductions need; -fno-trapping-math lets the exp's branches become blends.
CFLAGS = (
    "-O3",
    "-std=c11",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fopenmp-simd",
    "-fPIC",
    "-shared",
    "-pthread",
)
C_DTYPES = {torch.float32: 0, torch.bfloat16: 1}  # dtype codes of logloss_ce_rows
STREAM_MIN_BYTES = 1 << 25  # gradients from 32 MiB on bypass the caches (streaming stores)
PORTABLE_ONLY = False  # tests set this to check the portable C loops on AVX-512 machines too

_lock = threading.Lock()
_kernel: Any = None  # the ctypes function, False once loading failed, None before trying
_error = ""


def cache_dir() -> Path:
    """Per-user cache folder for the compiled kernel (``LOGLOSS_CACHE_DIR`` overrides)."""
    if os.environ.get("LOGLOSS_CACHE_DIR"):
        return Path(os.environ["LOGLOSS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "logloss"


def compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def build_kernel(directory: Path) -> Path:
    """Compile ``_kernel.c`` into ``directory`` (atomically) and return the library's path."""
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (looked for $CC, cc, gcc, clang)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
    key = hashlib.sha256(
        b"\0".join([SOURCE.read_bytes(), " ".join(CFLAGS).encode(), version.stdout.encode()])
        + cc.encode()
        + platform.machine().encode()
    ).hexdigest()[:16]
    target = directory / f"fused_kernel-{key}.so"
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(fd)
    try:
        cmd = [cc, *CFLAGS, "-o", tmp, str(SOURCE), "-lm"]
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{run.stderr.strip()[-2000:]}")
        os.replace(tmp, target)  # concurrent builders race harmlessly: same bytes, atomic rename
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


class CeArgs(ctypes.Structure):
    """The C kernel's ``ce_args_t``, field by field (see ``_kernel.c``)."""

    _fields_ = [
        *((name, ctypes.c_void_p) for name in ("x", "g", "target", "probs", "weight")),
        *((name, ctypes.c_void_p) for name in ("loss", "lse_out", "lse_in")),
        *((name, ctypes.c_int64) for name in ("ldx", "ldg", "ldp", "n", "c")),
        *((name, ctypes.c_int64) for name in ("ignore_index", "n_classes")),
        *((name, ctypes.c_float) for name in ("smoothing", "scale", "z_loss", "z_scale")),
        ("softcap", ctypes.c_float),
        *((name, ctypes.c_int32) for name in ("dtype", "nthreads", "flags")),
    ]


def load_kernel() -> Any:
    """The ctypes entry point ``logloss_ce_rows``, or None (with one warning) if unavailable."""
    global _kernel, _error
    if _kernel is not None:
        return _kernel or None
    with _lock:
        if _kernel is not None:
            return _kernel or None
        try:
            lib = ctypes.CDLL(str(build_kernel(cache_dir())))
            fn = lib.logloss_ce_rows
            fn.argtypes = [ctypes.POINTER(CeArgs)]
            fn.restype = ctypes.c_int
            fn.avx512 = bool(lib.logloss_ce_avx512())  # the float32 rows' implementation
            _kernel = fn
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _kernel, _error = False, str(exc)
            warnings.warn(
                f"logloss.fused: the compiled CPU kernel is unavailable ({exc}); using the slower "
                "pure-torch path. Install a C compiler (gcc) or set LOGLOSS_FUSED_BACKEND=torch "
                "to silence this warning.",
                RuntimeWarning,
                stacklevel=4,
            )
    return _kernel or None


def load_error() -> str:
    """Why the kernel could not be loaded ('' when it was, or was not tried yet)."""
    return _error


def simd(fn: Any) -> str:
    """The row loops the loaded kernel ``fn`` runs here: ``"avx512"`` or ``"portable"``."""
    return "avx512" if fn.avx512 and not PORTABLE_ONLY else "portable"


def rows_c(
    fn: Any,
    z: torch.Tensor,
    target: torch.Tensor,
    grad: torch.Tensor | None,
    loss: torch.Tensor,
    opts: RowOptions,
    lse_out: torch.Tensor | None = None,
    lse_in: torch.Tensor | None = None,
) -> None:
    """C kernel on float32 or bfloat16 rows with unit column stride; ``grad`` may be ``z``.

    ``target``: (n,) int64, or (n, c) float32 probabilities with unit column stride; the
    weights and ``loss``: contiguous float32, the lse vectors contiguous float64 (the callers
    see to it).
    """
    n, c = z.shape
    probs = target.is_floating_point()
    args = CeArgs(
        x=z.data_ptr(),
        g=None if grad is None else grad.data_ptr(),
        target=None if probs else target.data_ptr(),
        probs=target.data_ptr() if probs else None,
        weight=None if opts.weight is None else opts.weight.data_ptr(),
        loss=loss.data_ptr(),
        lse_out=None if lse_out is None else lse_out.data_ptr(),
        lse_in=None if lse_in is None else lse_in.data_ptr(),
        ldx=z.stride(0),
        ldg=0 if grad is None else grad.stride(0),
        ldp=target.stride(0) if probs else 0,
        n=n,
        c=c,
        ignore_index=opts.ignore_index,
        n_classes=opts.n_classes or c,
        smoothing=opts.smoothing,
        scale=float(opts.scale),
        z_loss=opts.z_loss,
        z_scale=float(opts.z_scale),
        softcap=opts.softcap or 0.0,
        dtype=C_DTYPES[z.dtype],
        nthreads=torch.get_num_threads(),
        flags=kernel_flags(grad, opts.shard),
    )
    status = fn(ctypes.byref(args))
    if status == -2:
        raise MemoryError(f"logloss.fused: no memory for the {c}-float scratch rows")
    if status < 0:
        raise RuntimeError(f"logloss.fused: the C kernel rejected dtype {z.dtype}")


def kernel_flags(grad: torch.Tensor | None, shard: bool = False) -> int:
    """Flags of ``logloss_ce_rows``: 1 keeps to the portable C loops (``PORTABLE_ONLY``, for
    tests), 2 streams a gradient of at least ``STREAM_MIN_BYTES`` past the caches, 4 reads
    targets outside [0, c) as classes of another shard."""
    flags = (1 if PORTABLE_ONLY else 0) | (4 if shard else 0)
    if grad is not None and grad.numel() * grad.element_size() >= STREAM_MIN_BYTES:
        flags |= 2
    return flags
