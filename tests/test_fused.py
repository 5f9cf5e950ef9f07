"""logloss.fused against torch.nn.functional.cross_entropy (the independent reference).

Values and gradients are compared with PyTorch in float64 (tolerance set by the input dtype),
for the compiled C kernel (float32/float16/bfloat16 on CPU) and for the pure-torch path
(float64, or forced with LOGLOSS_FUSED_BACKEND=torch).  With ``LOGLOSS_TEST_DEVICE=cuda``
(benchmarks/gpu_check.py) the comparisons made through ``ours``/``linear_ours`` run the fused
losses on the GPU (the Triton kernel) instead; the C-kernel tests stay on the CPU.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logloss import fused
from logloss.fused import buffers, cpu_kernel, linear
from logloss.fused.rows import RowOptions

DEVICE = torch.device(os.environ.get("LOGLOSS_TEST_DEVICE", "cpu"))
if DEVICE.type == "cuda" and not torch.cuda.is_available():
    raise RuntimeError("LOGLOSS_TEST_DEVICE=cuda, but torch sees no CUDA device")


def on_device(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """The tensors on DEVICE (None stays None): where ``ours`` runs the fused losses."""
    return [None if t is None else t.to(DEVICE) for t in tensors]


@pytest.fixture(params=["native", "portable"])
def kernel_rows(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The tests that reach the C kernel's row loops run twice: with its fastest float32/bfloat16
    rows for this CPU (AVX-512 intrinsics where available) and with its portable C loops, so
    both stay checked.  (Validation, autograd and float64 tests never reach those loops.)"""
    monkeypatch.setattr(cpu_kernel, "PORTABLE_ONLY", request.param == "portable")
    return request.param


c_loops = pytest.mark.usefixtures("kernel_rows")


def dtype_and_rows(*dtypes: torch.dtype) -> list:
    """(dtype, kernel_rows) pairs: both row loops for the C kernel's dtypes, float64 once."""
    pairs = []
    for dtype in dtypes:
        loops = ["native"] if dtype == torch.float64 else ["native", "portable"]
        pairs += [pytest.param(dtype, rows, id=f"{rows}-{dtype}") for rows in loops]
    return pairs


# losses: relative tolerance per input dtype, and an absolute floor for losses near zero
RTOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}
ATOL = {torch.float64: 1e-14, torch.float32: 1e-7, torch.bfloat16: 1e-2, torch.float16: 1e-3}
# gradients, element by element: a half-precision gradient is the float32 value rounded once,
# so within half an ulp (2^-8 relative for bfloat16, 2^-11 for float16) of the exact one; the
# absolute part is relative to max|grad| (float32 arithmetic, and the cancellation in
# p_j - eps/C), plus float16's subnormal spacing 2^-24 for entries that small
GRAD_RTOL = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.bfloat16: 2.0**-8 + 1e-5,
    torch.float16: 2.0**-11 + 1e-5,
}
GRAD_ATOL = {torch.float64: 1e-13, torch.float32: 1e-6, torch.bfloat16: 1e-6, torch.float16: 1e-6}
GRAD_FLOOR = {torch.float16: 2.0**-24}


def reference(
    logits: torch.Tensor,
    target: torch.Tensor,
    grad_output: torch.Tensor | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's loss and d loss / d logits, computed in float64.

    The gradient of an ignored row is 0 by definition (the row is not in the loss); PyTorch
    gives NaN there when the row's logits are all -inf or hold a NaN (its log_softmax backward
    multiplies the zero incoming gradient by NaN), so those rows are set to 0.
    """
    z = logits.detach().double().requires_grad_()
    loss = F.cross_entropy(z, target, **kwargs)
    loss.backward(torch.ones_like(loss) if grad_output is None else grad_output.double())
    grad = z.grad
    grad[target == kwargs.get("ignore_index", -100)] = 0.0
    return loss.detach(), grad


def ours(
    logits: torch.Tensor,
    target: torch.Tensor,
    grad_output: torch.Tensor | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    z, target, grad_output = on_device(logits.detach().clone(), target, grad_output)
    z.requires_grad_()
    kwargs = {k: (v.to(DEVICE) if torch.is_tensor(v) else v) for k, v in kwargs.items()}
    loss = fused.cross_entropy(z, target, **kwargs)
    loss.backward(torch.ones_like(loss) if grad_output is None else grad_output.to(loss.dtype))
    return loss.detach().cpu(), z.grad.cpu()


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, magnitude: float = 1.0
) -> None:
    """Equal within the dtype's tolerance; ``magnitude`` scales the absolute part, because a loss
    like logsumexp(z) - z_y cancels terms as large as the largest logit."""
    atol = ATOL[dtype] + RTOL[dtype] * magnitude
    torch.testing.assert_close(
        actual.double(), expected.double(), rtol=RTOL[dtype], atol=atol, equal_nan=True
    )


def assert_grad_close(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float = 0.0
) -> None:
    """Every gradient entry within GRAD_RTOL of the reference, up to GRAD_ATOL * max|grad|.

    ``scale`` (the factor s of dL/dz = s (p - onehot): 1/N_valid for a mean) adds four ulps of
    1 in ``dtype`` times s: p_t - 1 for a confident row is computed from p_t rounded near 1 (and
    from an exp good to ~1 ulp), as PyTorch in that dtype computes it, so that absolute error
    remains when every gradient entry is tiny (max|grad| ~ 1e-8 for a row whose target
    dominates).
    """
    finite = expected[torch.isfinite(expected)].abs()
    biggest = float(finite.max()) if finite.numel() else 0.0
    atol = GRAD_ATOL[dtype] * biggest + GRAD_FLOOR.get(dtype, 0.0)
    atol += 4 * torch.finfo(dtype).eps * scale
    torch.testing.assert_close(
        actual.double(), expected.double(), rtol=GRAD_RTOL[dtype], atol=atol, equal_nan=True
    )


def gradient_scale(
    target: torch.Tensor, *, reduction: str, ignore_index: int, **_: object
) -> float:
    """The factor s of dL/dz = s (p - onehot): 1/N_valid for a mean, else 1 (for "none" the
    incoming gradients the tests draw are <= 1)."""
    n_valid = int((target != ignore_index).sum())
    return 1.0 / max(n_valid, 1) if reduction == "mean" else 1.0


def largest(logits: torch.Tensor) -> float:
    """The largest finite |logit| (at least 1): the scale of the loss's cancellation error."""
    finite = logits[torch.isfinite(logits)].abs()
    return max(1.0, float(finite.max())) if finite.numel() else 1.0


@st.composite
def cases(draw: st.DrawFn, max_rows: int = 6, max_classes: int = 40) -> dict:
    n = draw(st.integers(0, max_rows))
    c = draw(st.integers(1, max_classes))
    scale = draw(st.sampled_from([1.0, 10.0, 1e4]))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=gen, dtype=torch.float64) * scale
    if draw(st.booleans()):  # some logits -inf (possibly a whole row, or the target's)
        logits[torch.rand(n, c, generator=gen) < 0.3] = float("-inf")
    target = torch.randint(0, c, (n,), generator=gen)
    ignore = draw(st.sampled_from([-100, 0, 3]))
    for i in range(n):  # some rows ignored (possibly all)
        if draw(st.booleans()):
            target[i] = ignore
    return {
        "logits": logits,
        "target": target,
        "ignore_index": ignore,
        "reduction": draw(st.sampled_from(["mean", "sum", "none"])),
        "label_smoothing": draw(st.sampled_from([0.0, 0.1, 1.0])),
    }


@pytest.mark.parametrize(
    ("dtype", "kernel_rows"),
    dtype_and_rows(torch.float32, torch.float64, torch.bfloat16, torch.float16),
    indirect=["kernel_rows"],
)
# the fixture only sets which row loops run: the same for every example, so sharing it is right
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=cases())
def test_matches_pytorch(case: dict, dtype: torch.dtype, kernel_rows: str) -> None:
    logits, target = case.pop("logits").to(dtype), case.pop("target")
    go = torch.rand(logits.shape[0], dtype=torch.float64) if case["reduction"] == "none" else None
    expected = reference(logits, target, go, **case)
    actual = ours(logits, target, go, **case)
    assert actual[0].dtype == dtype
    # a float16 sum beyond 65504 is inf in float16 (as PyTorch's): compare with the rounded value
    beyond = expected[0].abs() > torch.finfo(dtype).max
    expected_loss = torch.where(beyond, expected[0].to(dtype).double(), expected[0])
    assert_close(actual[0], expected_loss, dtype, largest(logits))
    assert_grad_close(actual[1], expected[1], dtype, gradient_scale(target, **case))


@c_loops
def test_a_confident_row_rounds_its_target_gradient_as_pytorch_float32_does() -> None:
    # found by hypothesis: p_0 = 1 - 1.08e-8 rounds to 1 in float32, so d/dz_0 is 0, not the
    # exact -5.4e-9; PyTorch's float32 gives the same bits (the other entries stay exact)
    logits = torch.tensor([[15.41, -2.9343, -21.7879], [5.6843, -10.8452, -13.986]])
    target = torch.tensor([0, 0])
    z = logits.clone().requires_grad_()
    F.cross_entropy(z, target).backward()
    grad = ours(logits, target)[1]
    assert grad[0, 0].item() == z.grad[0, 0].item() == 0.0
    assert grad[1, 0].item() == z.grad[1, 0].item()  # -2^-24: 1 - p_0 rounded the same way
    assert_grad_close(grad, reference(logits, target)[1], torch.float32, 0.5)


@settings(max_examples=25, deadline=None)
@given(case=cases())
def test_torch_backend_matches_pytorch(case: dict) -> None:
    logits, target = case.pop("logits").float(), case.pop("target")
    expected = reference(logits, target, **case)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOGLOSS_FUSED_BACKEND", "torch")
        actual = ours(logits, target, **case)
    assert_close(actual[0], expected[0], torch.float32, largest(logits))
    assert_grad_close(actual[1], expected[1], torch.float32, gradient_scale(target, **case))


@c_loops
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_half_precision_accumulates_in_float32(dtype: torch.dtype, reduction: str) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(64, 3000, generator=gen) * 4).to(dtype)
    target = torch.randint(0, 3000, (64,), generator=gen)
    target[5] = -100
    # reference: the same half-precision values, upcast, in float64
    expected = reference(logits, target, reduction=reduction, label_smoothing=0.05)
    actual = ours(logits, target, reduction=reduction, label_smoothing=0.05)
    assert actual[0].dtype == dtype
    assert actual[1].dtype == dtype
    assert_close(actual[0], expected[0], dtype)
    assert_grad_close(actual[1], expected[1], dtype)


@c_loops
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_ignored_matches_pytorch(reduction: str) -> None:
    logits = torch.randn(4, 7)
    target = torch.full((4,), -100)
    expected = reference(logits, target, reduction=reduction, label_smoothing=0.2)
    actual = ours(logits, target, reduction=reduction, label_smoothing=0.2)
    if reduction == "mean":
        assert torch.isnan(actual[0])  # 0 / 0, as PyTorch
    assert_close(actual[0], expected[0], torch.float32)
    assert_grad_close(actual[1], expected[1], torch.float32)


@c_loops
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_extreme_and_infinite_logits(smoothing: float) -> None:
    logits = torch.tensor(
        [
            [1e4, -1e4, 0.0, 5.0],
            [-1e4, -1e4, -1e4, -1e4],
            [float("-inf"), 2.0, float("-inf"), -3.0],
            [3.0, float("-inf"), 1.0, 0.0],
        ]
    )
    target = torch.tensor([1, 2, 1, 0])
    for reduction in ("none", "sum"):
        expected = reference(logits, target, reduction=reduction, label_smoothing=smoothing)
        actual = ours(logits, target, reduction=reduction, label_smoothing=smoothing)
        assert_close(actual[0], expected[0], torch.float32, largest(logits))
        assert_grad_close(actual[1], expected[1], torch.float32)
    # row 0: loss = logsumexp - z_1 = 2e4 (hand-derived, no smoothing)
    if smoothing == 0.0:
        loss = fused.cross_entropy(logits, target, reduction="none")
        assert loss[0].item() == pytest.approx(2e4, rel=1e-6)


@c_loops
def test_huge_class_count_float32() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 131072, generator=gen) * 3
    target = torch.tensor([0, 131071, 65536])
    expected = reference(logits, target, label_smoothing=0.1)
    actual = ours(logits, target, label_smoothing=0.1)
    assert_close(actual[0], expected[0], torch.float32)
    assert_grad_close(actual[1], expected[1], torch.float32)


@c_loops
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_uniform_logits_give_exactly_log_c(dtype: torch.dtype) -> None:
    # all-zero logits over 3000 classes: loss ln 3000 = 8.006 (hand-derived), gradient
    # (1/3000 - [j == y]) / 4.  A sum of the 3000 exp(0) = 1 kept in bfloat16 would stop growing
    # at 256 (loss 5.55), in float16 at 2048 (loss 7.62): this checks the float32 accumulator.
    logits = torch.zeros(4, 3000, dtype=dtype, requires_grad=True)
    target = torch.tensor([0, 2999, 1234, 7])
    loss = fused.cross_entropy(logits, target)
    loss.backward()
    assert loss.item() == torch.tensor(math.log(3000), dtype=dtype).item()
    expected = torch.full((4, 3000), 1 / 3000 / 4, dtype=torch.float64)
    expected[torch.arange(4), target] -= 1 / 4
    assert_grad_close(logits.grad, expected, dtype)


@c_loops
def test_matches_pytorch_float32_with_rows_split_over_four_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 768 x 4096 = 3 * 2^20 elements: enough work for the kernel to start 4 threads (it uses
    # one per ~1M elements, up to torch.get_num_threads()), whatever the machine's core count
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(768, 4096, generator=gen) * 5
    target = torch.randint(0, 4096, (768,), generator=gen)
    target[::7] = -100
    expected = reference(logits, target)
    actual = ours(logits, target)
    assert_close(actual[0], expected[0], torch.float32)
    assert_grad_close(actual[1], expected[1], torch.float32)


@c_loops
def test_non_contiguous_logits() -> None:
    logits = torch.randn(9, 5).t()  # (5, 9), column stride 5
    target = torch.tensor([0, 8, 3, 3, -100])
    expected = reference(logits, target)
    actual = ours(logits, target)
    assert_close(actual[0], expected[0], torch.float32)
    assert_grad_close(actual[1], expected[1], torch.float32)


def test_gradcheck_float64() -> None:
    z = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([1, -100, 5, 0])
    for reduction in ("mean", "none"):
        assert torch.autograd.gradcheck(
            lambda x, r=reduction: fused.cross_entropy(x, target, reduction=r, label_smoothing=0.1),
            (z,),
        )


def test_second_backward_recomputes() -> None:
    z = torch.randn(5, 11, requires_grad=True)
    target = torch.randint(0, 11, (5,))
    loss = fused.cross_entropy(z, target)
    loss.backward(retain_graph=True)
    first = z.grad.clone()
    loss.backward()
    torch.testing.assert_close(z.grad, 2 * first)


@c_loops
def test_inplace_backward_overwrites_logits_with_gradient() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 50, generator=gen, requires_grad=True)
    target = torch.randint(0, 50, (6,), generator=gen)
    expected = reference(2 * x, target)
    logits = 2 * x  # mul by a constant saves no tensor for its backward
    loss = fused.cross_entropy(logits, target, inplace_backward=True)
    assert_close(loss.detach(), expected[0], torch.float32)
    assert_grad_close(logits.detach(), expected[1], torch.float32)  # the logits now hold dL/dz
    loss.backward()
    assert_grad_close(x.grad, 2 * expected[1], torch.float32)


def test_inplace_backward_is_caught_when_logits_are_needed() -> None:
    x = torch.randn(3, 8, requires_grad=True)
    logits = x.exp()  # exp saves its output for backward
    loss = fused.cross_entropy(logits, torch.tensor([0, 1, 2]), inplace_backward=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@c_loops
def test_no_grad_forward() -> None:
    logits = torch.randn(4, 9, requires_grad=True)
    target = torch.tensor([0, 1, 2, 8])
    with torch.no_grad():
        loss = fused.cross_entropy(logits, target)
    assert not loss.requires_grad
    assert_close(loss, reference(logits, target)[0], torch.float32)


@pytest.mark.parametrize(
    ("logits", "target", "kwargs", "message"),
    [
        (torch.randn(2, 3, 4), torch.zeros(2, dtype=torch.long), {}, r"shape \(2, 4\) to match"),
        (torch.randn(2, 3), torch.zeros(2, dtype=torch.long), {"class_dim": 2}, "class_dim=2"),
        (torch.randn(2, 5, 3), torch.zeros(2, 5, dtype=torch.long), {}, "pass class_dim=-1"),
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long), {}, "floating"),
        (torch.randn(2, 3), torch.zeros(3, dtype=torch.long), {}, r"shape \(2,\)"),
        (torch.randn(2, 3), torch.zeros(2), {}, "read as class probabilities"),
        (torch.randn(2, 3), torch.zeros(2, dtype=torch.bool), {}, "integer class indices"),
        (torch.randn(2, 3), torch.tensor([0, 3]), {}, r"target value 3 at index \[1\]"),
        (torch.randn(2, 3), torch.tensor([0, -1]), {}, r"value -1 .* must be in \[0, 3\)"),
        (torch.randn(2, 3), torch.tensor([0, 1]), {"reduction": "avg"}, "reduction='avg' is not"),
        (torch.randn(2, 3), torch.tensor([0, 1]), {"label_smoothing": 1.5}, r"outside \[0, 1\]"),
        (torch.randn(2, 3), torch.tensor([0, 1]), {"label_smoothing": None}, "must be a number"),
        (torch.randn(2, 3), torch.tensor([0, 1]), {"ignore_index": 1.5}, "ignore_index must be"),
        (torch.randn(2, 3), torch.tensor([0, 1]), {"ignore_index": True}, "ignore_index must be"),
        (torch.randn(2, 0), torch.tensor([0, 1]), {}, "at least one class"),
        (
            torch.randn(2, 3).t(),
            torch.tensor([0, 1, 1]),
            {"inplace_backward": True},
            "unit stride along classes",
        ),
        (
            torch.randn(1, 3).expand(4, 3),
            torch.tensor([0, 1, 1, 2]),
            {"inplace_backward": True},
            "rows not overlapping",
        ),
        ([[1.0, 2.0]], torch.tensor([0]), {}, "must be a torch.Tensor"),
        (
            torch.randn(2, 3),
            torch.zeros(2, dtype=torch.long, device="meta"),
            {},
            "move both to one device",
        ),
    ],
)
def test_bad_input_raises_value_error(logits, target, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        fused.cross_entropy(logits, target, **kwargs)


def test_missing_compiler_falls_back_with_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setattr(cpu_kernel, "_kernel", None)
    monkeypatch.setattr(cpu_kernel, "compiler", lambda: None)
    monkeypatch.setenv("LOGLOSS_CACHE_DIR", str(tmp_path))
    # on the CPU whatever LOGLOSS_TEST_DEVICE says: the C kernel serves only CPU tensors
    logits = torch.randn(3, 5, requires_grad=True)
    target = torch.tensor([0, 4, 2])
    with pytest.warns(RuntimeWarning, match="no C compiler found"):
        loss = fused.cross_entropy(logits, target)
    loss.backward()
    assert fused.kernel_status()["backend"] == "torch"
    expected = reference(logits.detach(), target)
    assert_close(loss.detach(), expected[0], torch.float32)
    assert_grad_close(logits.grad, expected[1], torch.float32)


def test_kernel_build_is_cached(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    if cpu_kernel.compiler() is None:
        pytest.skip("no C compiler on this machine")
    first = cpu_kernel.build_kernel(tmp_path)
    mtime = first.stat().st_mtime_ns
    assert cpu_kernel.build_kernel(tmp_path) == first
    assert first.stat().st_mtime_ns == mtime  # not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp files left


def test_compiled_kernel_is_used_here() -> None:
    # the fast path must really be the C kernel in CI, not a silent fallback
    from conftest import require

    require(cpu_kernel.compiler() is not None, "no C compiler (apt-get install gcc)")
    status = fused.kernel_status()
    assert status["backend"] == "c"
    assert status["detail"] == f"compiled kernel in {cpu_kernel.cache_dir()}"


def test_avx512_rows_are_used_where_the_cpu_has_avx512(kernel_rows: str) -> None:
    # independent of the kernel's own CPU detection: the flags Linux reports for the CPU
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file() or fused.kernel_status()["backend"] != "c":
        pytest.skip("needs Linux and the compiled kernel")
    flags = set(cpuinfo.read_text().split())
    has_avx512 = {"avx512f", "avx512bw", "avx512vl"} <= flags
    expected = "avx512" if has_avx512 and kernel_rows == "native" else "portable"
    assert fused.kernel_status()["simd"] == expected


@c_loops
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("c", [1, 15, 17, 1000, 4099])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_streamed_gradient_matches_pytorch(
    monkeypatch: pytest.MonkeyPatch, c: int, smoothing: float, dtype: torch.dtype
) -> None:
    # streaming stores normally start at 32 MiB of gradient; from 0 bytes here, so that short,
    # odd-length rows (not 64-byte aligned: masked head and tail) take that path too, beside
    # ignored rows, a NaN row, an all -inf row and targets at both ends of a row
    monkeypatch.setattr(cpu_kernel, "STREAM_MIN_BYTES", 0)
    gen = torch.Generator().manual_seed(c)
    n = 37
    logits = torch.randn(n, c, generator=gen) * 4
    target = torch.randint(0, c, (n,), generator=gen)
    target[::5] = -100
    target[1], target[2] = 0, c - 1
    logits[3, c // 2] = float("nan")
    logits[4] = float("-inf")
    logits = logits.to(dtype)
    for reduction in ("none", "mean"):
        kwargs = {"reduction": reduction, "label_smoothing": smoothing}
        expected = reference(logits, target, **kwargs)
        actual = ours(logits, target, **kwargs)
        assert actual[1].dtype == dtype
        assert_close(actual[0], expected[0], dtype, largest(logits))
        assert_grad_close(actual[1], expected[1], dtype)


# --------------------------------------------------------------------------------------------
# linear_cross_entropy vs the unfused computation cross_entropy(hidden @ weight.T + bias)
# --------------------------------------------------------------------------------------------


def unfused(hidden, weight, bias, target, grad_output=None, **kwargs):
    h, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    b = None if bias is None else bias.detach().clone().requires_grad_()
    logits = h @ w.t() if b is None else h @ w.t() + b
    loss = F.cross_entropy(logits, target, **kwargs)
    loss.backward(grad_output)
    return loss.detach(), h.grad, w.grad, None if b is None else b.grad


def linear_ours(hidden, weight, bias, target, grad_output=None, **kwargs):
    h, w, b, target, grad_output = on_device(hidden, weight, bias, target, grad_output)
    h, w = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    b = None if b is None else b.detach().clone().requires_grad_()
    kwargs = {k: (v.to(DEVICE) if torch.is_tensor(v) else v) for k, v in kwargs.items()}
    loss = fused.linear_cross_entropy(h, w, target, bias=b, **kwargs)
    loss.backward(grad_output)
    grads = (h.grad, w.grad, None if b is None else b.grad)
    return loss.detach().cpu(), *(None if g is None else g.cpu() for g in grads)


@pytest.mark.parametrize(
    ("dtype", "kernel_rows"),
    dtype_and_rows(torch.float64, torch.float32),
    indirect=["kernel_rows"],
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_matches_unfused(dtype, kernel_rows, reduction, with_bias) -> None:
    gen = torch.Generator().manual_seed(4)
    n, h, v = 37, 16, 300
    hidden = torch.randn(n, h, generator=gen, dtype=dtype)
    weight = torch.randn(v, h, generator=gen, dtype=dtype) / 2
    bias = torch.randn(v, generator=gen, dtype=dtype) if with_bias else None
    target = torch.randint(0, v, (n,), generator=gen)
    target[3::5] = -100
    go = torch.rand(n, generator=gen, dtype=dtype) if reduction == "none" else None
    expected = unfused(hidden, weight, bias, target, go, reduction=reduction)
    actual = linear_ours(hidden, weight, bias, target, go, reduction=reduction, chunk_size=8)
    for a, e in zip(actual, expected, strict=True):
        if e is None:
            assert a is None
        else:
            rtol = 1e-12 if dtype == torch.float64 else 2e-5
            torch.testing.assert_close(a, e, rtol=rtol, atol=rtol * 1e-2)


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 20),
    v=st.integers(1, 30),
    chunk=st.integers(1, 25),
    seed=st.integers(0, 2**31 - 1),
)
def test_linear_chunking_does_not_change_the_result(n, v, chunk, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    weight = torch.randn(v, 5, generator=gen, dtype=torch.float64)
    target = torch.randint(0, v, (n,), generator=gen)
    expected = unfused(hidden, weight, None, target)
    actual = linear_ours(hidden, weight, None, target, chunk_size=chunk)
    for a, e in zip(actual[:3], expected[:3], strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-14)


def test_linear_gradcheck_and_second_backward() -> None:
    hidden = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 6, -100, 2, 2, 5])
    assert torch.autograd.gradcheck(
        lambda h, w, b: fused.linear_cross_entropy(h, w, target, bias=b, chunk_size=4),
        (hidden, weight, bias),
    )
    # a second backward through one graph recomputes the chunks: the gradients add up to twice
    loss = fused.linear_cross_entropy(hidden, weight, target, bias=bias, chunk_size=4)
    loss.backward(retain_graph=True)
    first = [t.grad.clone() for t in (hidden, weight, bias)]
    loss.backward()
    for t, g in zip((hidden, weight, bias), first, strict=True):
        torch.testing.assert_close(t.grad, 2 * g, rtol=1e-12, atol=1e-14)


def test_linear_all_ignored_mean_is_nan_like_pytorch() -> None:
    hidden, weight = torch.randn(4, 3), torch.randn(5, 3)
    target = torch.full((4,), -100)
    expected = unfused(hidden, weight, None, target)
    actual = linear_ours(hidden, weight, None, target)
    assert torch.isnan(actual[0])
    for a, e in zip(actual[1:3], expected[1:3], strict=True):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize(
    ("hidden", "weight", "kwargs", "message"),
    [
        (torch.randn(4, 3), torch.randn(5, 2), {}, r"shape \(V, 3\)"),
        (torch.randn(4, 3), torch.randn(5, 3, dtype=torch.float64), {}, "must match hidden"),
        (torch.randn(4, 3, 1), torch.randn(5, 3), {}, r"shape \(V, 1\)"),
        (torch.ones(4, 3, dtype=torch.long), torch.randn(5, 3), {}, "hidden must be floating"),
        (torch.randn(4, 3), torch.randn(5, 3), {"bias": torch.randn(4)}, r"bias must be a \(5,\)"),
        (torch.randn(4, 3), torch.randn(5, 3), {"chunk_size": 0}, "chunk_size must be"),
    ],
)
def test_linear_bad_input_raises_value_error(hidden, weight, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        fused.linear_cross_entropy(hidden, weight, torch.tensor([0, 1, 2, 3]), **kwargs)


@pytest.mark.parametrize(
    ("hidden", "weight", "target", "kwargs", "message"),
    [
        (torch.randn(2, 3), torch.randn(5, 3), torch.tensor([0, 5]), {}, "target value 5 at"),
        (torch.randn(2, 3), torch.randn(5, 3), torch.tensor([0]), {}, r"match hidden \(2, 3\)"),
        (torch.randn(2, 3), torch.randn(5, 3), torch.tensor([0.0, 1]), {}, "integer class"),
        (torch.randn(2, 3), torch.randn(0, 3), torch.tensor([0, 1]), {}, "at least one row"),
        (torch.randn(2, 3), torch.randn(5, 3), [0, 1], {}, r"target must be a torch.Tensor"),
        (torch.randn(2, 3), torch.randn(5, 3), torch.tensor([0, 1]), {"reduction": "x"}, "'x'"),
        (torch.randn(2, 3), torch.randn(5, 3), torch.tensor([0, 1]), {"ignore_index": "a"}, "int"),
    ],
)
def test_linear_errors_name_hidden_and_weight_not_logits(
    hidden, weight, target, kwargs, message
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        fused.linear_cross_entropy(hidden, weight, target, **kwargs)
    assert "logits" not in str(info.value)


def test_linear_with_zero_hidden_features_is_the_loss_of_the_bias() -> None:
    # H = 0: hidden @ weight.T is all zeros, so the logits are the bias (PyTorch agrees)
    hidden, weight, bias = torch.randn(4, 0), torch.randn(5, 0), torch.randn(5)
    target = torch.tensor([0, 4, 2, 2])
    expected = unfused(hidden, weight, bias, target)
    actual = linear_ours(hidden, weight, bias, target)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e)


def test_numpy_integer_ignore_index_is_accepted_like_logloss_losses() -> None:
    from logloss import losses

    logits, target = torch.randn(3, 4), torch.tensor([1, -100, 3])
    ignore = np.int64(-100)
    expected = reference(logits, target)
    actual = ours(logits, target, ignore_index=ignore)
    assert_close(actual[0], expected[0], torch.float32)
    assert_grad_close(actual[1], expected[1], torch.float32)
    assert_close(
        losses.cross_entropy(logits, target, ignore_index=ignore), actual[0], torch.float32
    )
    hidden, weight = torch.randn(3, 2), torch.randn(4, 2)
    linear = fused.linear_cross_entropy(hidden, weight, target, ignore_index=ignore)
    assert_close(linear, F.cross_entropy(hidden @ weight.t(), target), torch.float32)


def test_no_warnings_on_the_fast_path() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused.cross_entropy(torch.randn(3, 4, requires_grad=True), torch.tensor([0, 1, 2]))


def test_gradient_buffer_reused_only_when_released() -> None:
    # >= 8 MiB: large enough for the one-slot buffer reuse of buffers.new_buffer
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(600, 4096, generator=gen)
    target = torch.randint(0, 4096, (600,), generator=gen)
    expected = reference(x, target)[1]
    first = x.clone().requires_grad_()
    fused.cross_entropy(first, target).backward()
    second = (2 * x).requires_grad_()
    fused.cross_entropy(second, target).backward()  # first.grad is still held: a new buffer
    assert first.grad.data_ptr() != second.grad.data_ptr()
    assert_grad_close(first.grad, expected, torch.float32)  # not overwritten by the second call
    ptr = second.grad.data_ptr()
    second.grad = None  # released: the next call of the same size may reuse the memory
    third = x.clone().requires_grad_()
    fused.cross_entropy(third, target).backward()
    assert third.grad.data_ptr() == ptr
    assert_grad_close(third.grad, expected, torch.float32)
    fused.empty_cache()


def test_two_pending_losses_get_their_own_gradients() -> None:
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(600, 4096, generator=gen)
    target = torch.randint(0, 4096, (600,), generator=gen)
    a, b = x.clone().requires_grad_(), (3 * x).requires_grad_()
    loss_a = fused.cross_entropy(a, target)
    loss_b = fused.cross_entropy(b, target)  # before loss_a's backward
    (loss_a + loss_b).backward()
    assert_grad_close(a.grad, reference(x, target)[1], torch.float32)
    assert_grad_close(b.grad, reference(3 * x, target)[1], torch.float32)


@c_loops
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_nan_and_infinite_logits_propagate_like_pytorch(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGLOSS_FUSED_BACKEND", backend)
    nan, inf = float("nan"), float("inf")
    logits = torch.tensor([[nan, 1.0, 2.0], [inf, 1.0, 0.0], [1.0, 2.0, 3.0], [inf, 1.0, 0.0]])
    target = torch.tensor([1, 2, 0, 0])
    expected = reference(logits, target, reduction="none")
    actual = ours(logits, target, reduction="none")
    assert torch.isnan(actual[0][[0, 1, 3]]).all()
    assert torch.isnan(actual[0][:2]).all()
    assert_close(actual[0], expected[0], torch.float32)
    assert_grad_close(actual[1], expected[1], torch.float32)


@c_loops
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_nan_logits_in_long_rows_match_pytorch(dtype: torch.dtype, smoothing: float) -> None:
    # rows longer than the kernel's 512-element blocks, NaN in different blocks and positions;
    # a +inf logit also makes the row NaN in PyTorch (x - max = inf - inf)
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(5, 1500, generator=gen)
    logits[0, 700] = logits[2, 1499] = float("nan")
    logits[3, 3] = float("-inf")
    logits[4, 1000] = float("inf")
    logits = logits.to(dtype)
    target = torch.tensor([700, 5, 0, 3, 2])
    expected = reference(logits, target, reduction="none", label_smoothing=smoothing)
    actual = ours(logits, target, reduction="none", label_smoothing=smoothing)
    assert torch.isnan(expected[0][[0, 2, 4]]).all()
    assert torch.isnan(actual[0][[0, 2, 4]]).all()
    assert torch.isnan(actual[1][[0, 2, 4]]).all()
    assert torch.isfinite(actual[1][[1, 3]]).all()
    assert_close(actual[0], expected[0], dtype, largest(logits))
    assert_grad_close(actual[1], expected[1], dtype)


@c_loops
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_c_kernel_turns_an_unchecked_bad_target_into_nan(dtype: torch.dtype) -> None:
    # cross_entropy rejects such targets before the kernel; the kernel itself must still not
    # read outside the row, and marks the row NaN (defence in depth)
    fn = cpu_kernel.load_kernel()
    if fn is None:
        pytest.skip(f"no compiled kernel: {fused.kernel_status()['detail']}")
    z = torch.randn(3, 600).to(dtype)
    grad, loss = torch.empty_like(z), torch.empty(3)
    target = torch.tensor([600, -5, 2])
    cpu_kernel.rows_c(fn, z, target, grad, loss, RowOptions(-100, 0.0, 1.0))
    assert torch.isnan(loss[:2]).all()
    assert torch.isnan(grad[:2].float()).all()
    expected = reference(z[2:], target[2:], reduction="none")
    assert_close(loss[2:], expected[0], torch.float32)
    assert_grad_close(grad[2:], expected[1], dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("inplace", [False, True])
def test_scalar_incoming_gradient_scales_the_gradient(reduction: str, inplace: bool) -> None:
    # (3 * loss).backward(): the gradient made in forward is multiplied by 3 in backward
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(5, 30, generator=gen, requires_grad=True)
    target = torch.tensor([0, 29, -100, 4, 4])
    expected = reference(x, target, torch.tensor(3.0), reduction=reduction, label_smoothing=0.1)
    logits = x * 1.0  # not a leaf, so inplace_backward may overwrite it
    loss = fused.cross_entropy(
        logits, target, reduction=reduction, label_smoothing=0.1, inplace_backward=inplace
    )
    (3 * loss).backward()
    assert_close(loss.detach(), expected[0], torch.float32)
    assert_grad_close(x.grad, expected[1], torch.float32)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_linear_scalar_incoming_gradient_scales_the_gradients(reduction: str) -> None:
    gen = torch.Generator().manual_seed(9)
    hidden = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    weight = torch.randn(11, 4, generator=gen, dtype=torch.float64)
    bias = torch.randn(11, generator=gen, dtype=torch.float64)
    target = torch.tensor([0, 10, -100, 3, 3, 5, 1, 2, 9])
    three = torch.tensor(3.0, dtype=torch.float64)
    expected = unfused(hidden, weight, bias, target, three, reduction=reduction)
    actual = linear_ours(hidden, weight, bias, target, three, reduction=reduction, chunk_size=4)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("inplace", [False, True])
def test_no_grad_computes_only_the_loss(monkeypatch: pytest.MonkeyPatch, inplace: bool) -> None:
    # under torch.no_grad() the logits (here a leaf that requires grad) are left untouched and
    # no gradient buffer is made, with or without inplace_backward
    def no_buffer(like: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a gradient buffer was made under no_grad")

    monkeypatch.setattr(buffers, "new_buffer", no_buffer)
    logits = torch.randn(4, 9, requires_grad=True)
    before = logits.detach().clone()
    target = torch.tensor([0, 1, 2, 8])
    with torch.no_grad():
        loss = fused.cross_entropy(logits, target, inplace_backward=inplace)
    assert not loss.requires_grad
    assert torch.equal(logits.detach(), before)
    assert_close(loss, reference(logits, target)[0], torch.float32)


def test_linear_no_grad_does_only_the_forward_products(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real_pass = linear.linear_pass

    def recording_pass(*args, **kwargs):
        grads = real_pass(*args, **kwargs)
        seen.append((args[-1], grads))
        return grads

    monkeypatch.setattr(linear, "linear_pass", recording_pass)
    hidden = torch.randn(6, 3, requires_grad=True)
    weight = torch.randn(7, 3, requires_grad=True)
    target = torch.tensor([0, 6, 1, 2, 2, 5])
    with torch.no_grad():
        loss = fused.linear_cross_entropy(hidden, weight, target)
    assert not loss.requires_grad
    assert seen == [((False, False, False), (None, None, None))]  # no gradient computed or kept
    assert_close(loss, F.cross_entropy(hidden @ weight.t(), target).detach(), torch.float32)


def test_linear_uses_a_transposed_weight_without_copying(monkeypatch: pytest.MonkeyPatch) -> None:
    # a tied/transposed (V, H) weight: gradients as PyTorch's, and the weight the chunks read is
    # the caller's memory, not a V x H copy
    seen = []
    real_pass = linear.linear_pass

    def recording_pass(hidden, weight, *args, **kwargs):
        seen.append(weight.data_ptr())
        return real_pass(hidden, weight, *args, **kwargs)

    monkeypatch.setattr(linear, "linear_pass", recording_pass)
    gen = torch.Generator().manual_seed(10)
    hidden = torch.randn(13, 6, generator=gen, dtype=torch.float64)
    embedding = torch.randn(6, 40, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 40, (13,), generator=gen)
    h = hidden.clone().requires_grad_()
    loss = fused.linear_cross_entropy(h, embedding.t(), target, chunk_size=5)
    loss.backward()
    assert seen == [embedding.data_ptr()]
    e = embedding.detach().clone().requires_grad_()
    h_ref = hidden.clone().requires_grad_()
    F.cross_entropy(h_ref @ e, target).backward()
    torch.testing.assert_close(loss.detach(), F.cross_entropy(hidden @ e.detach(), target))
    torch.testing.assert_close(embedding.grad, e.grad, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(h.grad, h_ref.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("view", [False, True])
def test_inplace_backward_rejects_a_leaf_that_requires_grad(view: bool) -> None:
    leaf = torch.randn(3, 4, requires_grad=True)
    before = leaf.detach().clone()
    logits = leaf[1:] if view else leaf
    with pytest.raises(ValueError, match="leaf tensor that requires grad"):
        fused.cross_entropy(
            logits, torch.tensor([0, 1, 2])[: logits.shape[0]], inplace_backward=True
        )
    assert torch.equal(leaf.detach(), before)


@c_loops
def test_overlapping_logits_are_fine_without_inplace() -> None:
    # expand(): every row is the same memory; read-only use gives PyTorch's values
    x = torch.randn(1, 6, requires_grad=True)
    target = torch.tensor([0, 5, 2])
    expected = reference(x.expand(3, 6), target)
    loss = fused.cross_entropy(x.expand(3, 6), target)
    loss.backward()
    assert_close(loss.detach(), expected[0], torch.float32)
    assert_grad_close(x.grad, expected[1].sum(0, keepdim=True), torch.float32)
