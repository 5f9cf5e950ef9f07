"""The Triton kernel of ``logloss.fused`` (CUDA), against PyTorch.

``fused.cross_entropy`` sends CUDA tensors to ``triton_kernel.rows``.  Without a GPU, Triton's
interpreter (``TRITON_INTERPRET=1``) runs the same kernel on CPU tensors, one program at a time,
with NumPy: slow, but the kernel's arithmetic, masks and loops are the ones a GPU would run.
With ``LOGLOSS_TEST_DEVICE=cuda`` (benchmarks/gpu_check.py) the same tests run the compiled
kernel on the GPU.  Triton is ~1 GB installed, so it is not a dev dependency: these tests skip
where it is absent (as in CI) and are run by hand with Triton installed (see docs/fused.md).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

ON_GPU = os.environ.get("LOGLOSS_TEST_DEVICE", "cpu") == "cuda"
if not ON_GPU:  # read when triton is imported: set before the import below
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="Triton is not installed (pip install triton)")

from logloss.fused import triton_kernel  # noqa: E402
from logloss.fused.rows import RowOptions  # noqa: E402
from test_fused_options import composed  # noqa: E402

DEVICE = torch.device("cuda" if ON_GPU else "cpu")


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
    zd, td = z.to(DEVICE), target.to(DEVICE)
    loss = torch.empty(n, device=DEVICE)
    grad = zd.clone() if inplace else torch.empty_like(zd)
    scale = torch.tensor(0.25, device=DEVICE)  # on CUDA the mean's 1/N_valid is a device tensor
    triton_kernel.rows(grad if inplace else zd, td, grad, loss, RowOptions(-100, eps, scale))
    expected_loss, expected_grad = reference(z, target, eps, 0.25)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(
        loss.cpu().double(), expected_loss, rtol=tol, atol=tol * 10, equal_nan=True
    )
    # half-precision gradients: the float32 value rounded once, within half an ulp; except
    # that the interpreter's float32 -> bfloat16 cast truncates (triton/runtime/interpreter.py
    # cast_impl, no rounding mode; a GPU rounds to nearest even), so one ulp for bfloat16
    rtol = {torch.float32: 1e-5, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-11}[dtype]
    torch.testing.assert_close(
        grad.cpu().double(), expected_grad, rtol=rtol + 1e-5, atol=1e-7, equal_nan=True
    )
    if n > 3:
        assert torch.isnan(loss[[1, 2, 3]]).all()  # NaN, all -inf and +inf rows, as PyTorch


def test_triton_rows_without_gradient_leave_the_logits_alone() -> None:
    z = torch.randn(4, 50, device=DEVICE)
    before = z.clone()
    loss = torch.empty(4, device=DEVICE)
    target = torch.tensor([1, 2, -100, 49])
    triton_kernel.rows(z, target.to(DEVICE), None, loss, RowOptions(-100, 0.0, 1.0))
    assert torch.equal(z, before)
    torch.testing.assert_close(loss.cpu().double(), reference(z.cpu(), target, 0.0, 1.0)[0])


OPTIONS = [
    {"label_smoothing": 0.1, "z_loss": 1e-3, "softcap": 5.0, "weight": "rand"},
    {"z_loss": 0.01},
    {"softcap": 2.0},
    {"label_smoothing": 0.2, "weight": "rand"},
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("options", OPTIONS)
def test_triton_rows_with_options_match_pytorch(dtype, soft, options) -> None:
    # per-row losses (+ the z-loss from the lse) and the gradient of their sum, against the
    # float64 PyTorch composition of tests/test_fused_options.py; 5000 classes: two blocks
    gen = torch.Generator().manual_seed(21)
    n, c = 5, 5000
    z = (torch.randn(n, c, generator=gen) * 4).to(dtype)
    z[1, :100] = float("-inf")
    if soft:
        target = torch.softmax(torch.randn(n, c, generator=gen, dtype=torch.float64), dim=1)
    else:
        target = torch.randint(0, c, (n,), generator=gen)
        target[2] = -100
    opts = dict(options, reduction="none")
    if opts.get("weight") == "rand":
        opts["weight"] = torch.rand(c, generator=gen) + 0.5
    expected = composed(z.double(), target, **opts)
    loss, lse = torch.empty(n, device=DEVICE), torch.empty(n, dtype=torch.float64, device=DEVICE)
    grad = torch.empty(n, c, dtype=dtype, device=DEVICE)
    weight = opts.get("weight")
    row_options = RowOptions(
        -100,
        opts.get("label_smoothing", 0.0),
        weight=None if weight is None else weight.to(DEVICE),
        z_loss=opts.get("z_loss", 0.0),
        softcap=opts.get("softcap"),
    )
    rows_target = target.float() if soft else target
    triton_kernel.rows(z.to(DEVICE), rows_target.to(DEVICE), grad, loss, row_options, lse)
    total = loss.cpu().double() + opts.get("z_loss", 0.0) * lse.cpu().double().square()
    torch.testing.assert_close(total, expected["loss"], rtol=2e-5, atol=1e-4, equal_nan=True)
    # bfloat16: the gradient is rounded once (the interpreter truncates: one ulp)
    rtol = 1e-5 if dtype == torch.float32 else 2.0**-7
    atol = 1e-6 * float(expected["grad"].abs().max()) + 4 * 2.0**-23 * expected["scale"]
    torch.testing.assert_close(
        grad.cpu().double(), expected["grad"], rtol=rtol, atol=atol, equal_nan=True
    )


@pytest.mark.parametrize("near_1e4", [False, True])
def test_triton_shards_give_the_full_gradient(near_1e4: bool) -> None:
    # (a) lse per shard, (b) the global lse given, (c) targets of the other shard; near_1e4:
    # near ties at 1e4 on both shards, where an lse rounded to float32 is off by 4.9e-4
    gen = torch.Generator().manual_seed(22)
    z = torch.randn(4, 300, generator=gen)
    if near_1e4:
        z[:, 3], z[:, 160], z[:, 290] = 10000.3, 10000.0, 9999.6
    target = torch.tensor([0, 150, 299, -100])
    lse = [torch.empty(4, dtype=torch.float64, device=DEVICE) for _ in range(2)]
    shards = [(0, 150), (150, 300)]
    opts = RowOptions(-100, 0.1, shard=True, n_classes=300)
    for k, (c0, c1) in enumerate(shards):
        t = torch.where(target == -100, -100, target - c0).to(DEVICE)
        part = z[:, c0:c1].contiguous().to(DEVICE)
        triton_kernel.rows(part, t, None, torch.empty(4, device=DEVICE), opts, lse[k])
    whole = torch.logsumexp(torch.stack(lse), dim=0)
    grads, losses = [], []
    for c0, c1 in shards:
        t = torch.where(target == -100, -100, target - c0).to(DEVICE)
        part = z[:, c0:c1].contiguous().to(DEVICE)
        grad, loss = torch.empty_like(part), torch.empty(4, device=DEVICE)
        triton_kernel.rows(part, t, grad, loss, opts, lse_in=whole)
        grads.append(grad.cpu())
        losses.append(loss.cpu())
    x = z.double().requires_grad_()
    expected = F.cross_entropy(x, target, label_smoothing=0.1, reduction="none")
    expected.sum().backward()
    torch.testing.assert_close(torch.cat(grads, 1).double(), x.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(
        (losses[0] + losses[1]).double(), expected.detach(), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("factor", [1.0, 0.5, -3.0, 0.0])
def test_triton_scale_in_place_matches_torch_mul(dtype, factor) -> None:
    # 9000 elements: three blocks of 4096, the last one masked; factor 1 must leave every bit
    g = (torch.randn(9000, generator=torch.Generator().manual_seed(1)) * 3).to(dtype)
    expected = (g.float() * factor).to(dtype)  # PyTorch's mul_ by a float32 scalar tensor
    gd = g.to(DEVICE)
    out = triton_kernel.scale_in_place(gd, torch.tensor([factor], device=DEVICE))
    assert out.data_ptr() == gd.data_ptr()
    # Triton's interpreter truncates float32 to bfloat16 where a GPU rounds: one ulp, 2^-7
    rtol = 2**-7 if dtype == torch.bfloat16 and not ON_GPU else 0.0
    torch.testing.assert_close(gd.cpu(), expected, rtol=rtol, atol=0)
    if factor == 1.0:
        assert torch.equal(gd.cpu(), g)
