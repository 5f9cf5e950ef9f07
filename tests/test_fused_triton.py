"""The Triton kernel of ``logloss.fused`` (CUDA), run on the CPU by Triton's interpreter.

``fused.cross_entropy`` sends CUDA tensors to ``triton_kernel.rows``.  Without a GPU, Triton's
interpreter (``TRITON_INTERPRET=1``) runs the same kernel on CPU tensors, one program at a time,
with NumPy: slow, but the kernel's arithmetic, masks and loops are the ones a GPU would run.
Triton is ~1 GB installed, so it is not a dev dependency: these tests skip where it is absent
(as in CI) and are run by hand with ``pip install triton`` (see docs/fused.md).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

# read when triton is imported: set before the import below (a CUDA-less process either way)
os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="Triton is not installed (pip install triton)")

from logloss.fused import triton_kernel
from logloss.fused.rows import RowOptions


@pytest.fixture(autouse=True)
def interpreted_kernel():
    """The kernel decorated under TRITON_INTERPRET=1 (rebuilt for these tests, then dropped)."""
    triton_kernel._kernel.cache_clear()
    yield
    triton_kernel._kernel.cache_clear()


def reference(z, target, eps, scale):
    """PyTorch in float64: per-row losses and d(sum_i scale * loss_i)/dz, 0 on ignored rows."""
    x = z.double().requires_grad_()
    loss = F.cross_entropy(x, target, label_smoothing=eps, reduction="none")
    loss.backward(torch.full_like(loss, scale))
    grad = x.grad
    grad[target == -100] = 0.0
    return loss.detach(), grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("n", "c"), [(5, 1), (7, 10), (6, 1000), (4, 9000)])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("inplace", [False, True])
def test_triton_rows_match_pytorch(dtype, n, c, eps, inplace) -> None:
    # 9000 classes: three column blocks of 4096, the last one masked
    gen = torch.Generator().manual_seed(n * c)
    z = torch.randn(n, c, generator=gen) * 3
    target = torch.randint(0, c, (n,), generator=gen)
    target[0] = -100
    if n > 3:
        z[1, c // 2] = float("nan")
        z[2] = float("-inf")
        z[3, 0] = float("inf")
    z = z.to(dtype)
    loss = torch.empty(n)
    grad = z.clone() if inplace else torch.empty_like(z)
    scale = torch.tensor(0.25)  # on CUDA the mean's 1/N_valid is a device tensor
    triton_kernel.rows(grad if inplace else z, target, grad, loss, RowOptions(-100, eps, scale))
    expected_loss, expected_grad = reference(z, target, eps, 0.25)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(
        loss.double(), expected_loss, rtol=tol, atol=tol * 10, equal_nan=True
    )
    # half-precision gradients: the float32 value rounded once, within half an ulp; except
    # that the interpreter's float32 -> bfloat16 cast truncates (triton/runtime/interpreter.py
    # cast_impl, no rounding mode; a GPU rounds to nearest even), so one ulp for bfloat16
    rtol = {torch.float32: 1e-5, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-11}[dtype]
    torch.testing.assert_close(
        grad.double(), expected_grad, rtol=rtol + 1e-5, atol=1e-7, equal_nan=True
    )
    if n > 3:
        assert torch.isnan(loss[[1, 2, 3]]).all()  # NaN, all -inf and +inf rows, as PyTorch


def test_triton_rows_without_gradient_leave_the_logits_alone() -> None:
    z = torch.randn(4, 50)
    before = z.clone()
    loss = torch.empty(4)
    target = torch.tensor([1, 2, -100, 49])
    triton_kernel.rows(z, target, None, loss, RowOptions(-100, 0.0, 1.0))
    assert torch.equal(z, before)
    torch.testing.assert_close(loss.double(), reference(z, target, 0.0, 1.0)[0])
