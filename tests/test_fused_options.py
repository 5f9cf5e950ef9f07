"""logloss.fused's options against compositions of plain PyTorch operations, in float64.

The reference for every option is PyTorch itself: ``cap * tanh(z / cap)`` for the softcap,
``F.cross_entropy`` for class weights, label smoothing, ``ignore_index`` and probability
targets (PyTorch's weighted mean and smoothing), ``torch.logsumexp(z)**2`` for the z-loss
(averaged over non-ignored rows, as Liger Kernel), slicing for the causal shift.  Each case runs
through the C kernel's AVX-512 and portable row loops and the torch rows (float32), and the
torch rows in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logloss import fused
from logloss.fused import cpu_kernel
from test_fused import DEVICE, assert_close, largest, on_device

EPS = {torch.float64: 2.0**-52, torch.float32: 2.0**-23, torch.bfloat16: 2.0**-8}
RTOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2.0**-8 + 1e-5}
GRAD_ATOL = {torch.float64: 1e-13, torch.float32: 1e-6, torch.bfloat16: 1e-5}


@pytest.fixture(params=["native", "portable", "torch"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The C kernel's fastest rows, its portable loops, or the torch rows (float64 logits
    always take the torch rows)."""
    monkeypatch.setattr(cpu_kernel, "PORTABLE_ONLY", request.param == "portable")
    monkeypatch.setenv("LOGLOSS_FUSED_BACKEND", "torch" if request.param == "torch" else "auto")
    return request.param


def composed(
    logits: torch.Tensor, target: torch.Tensor, grad_output: torch.Tensor | None = None, **opts
) -> dict[str, torch.Tensor | float]:
    """The loss, d loss/d logits and the scale of the gradient's rounding, from PyTorch
    operations in float64.

    The gradient of an ignored row, and of every row when a weighted mean divides by 0, is 0 by
    definition (nothing of it is in the loss); PyTorch's is NaN there (0 * NaN), so those are
    set to 0, as the fused losses document.
    """
    z = logits.detach().double().requires_grad_()
    cap, dim = opts.get("softcap"), opts.get("class_dim", 1)
    x = z if cap is None else cap * torch.tanh(z / cap)
    soft = target.is_floating_point()
    ce, z_part, lse, den = _composed_parts(x, target, **opts)
    total = ce if z_part is None else ce + z_part
    out_grad = torch.ones_like(total) if grad_output is None else grad_output.double()
    grad_capped = torch.autograd.grad(total, x, out_grad, retain_graph=True)[0] if cap else None
    (grad_ce,) = torch.autograd.grad(ce, z, out_grad, retain_graph=True)
    if den is not None and float(den) == 0.0:
        grad_ce = torch.zeros_like(grad_ce)
    grad = grad_ce if z_part is None else grad_ce + torch.autograd.grad(z_part, z, out_grad)[0]
    if not soft:
        grad.movedim(dim, -1)[target == opts.get("ignore_index", -100)] = 0.0
    # the gradient's own rounding: p_t - 1 for a confident row is computed from p_t rounded
    # near 1 (so ~1 ulp times the multiplier of p), and a softcap's float32 derivative
    # 1 - tanh^2 is only good to a few ulp of 1 (PyTorch's float32 tanh backward too)
    w_max = 1.0 if opts.get("weight") is None else float(opts["weight"].max())
    scale = w_max * (1.0 / float(den) if den is not None and float(den) else 1.0)
    finite_lse = lse[lse.isfinite()]
    if opts.get("z_loss", 0.0) and finite_lse.numel():
        scale += 2 * opts["z_loss"] * float(finite_lse.abs().max())
    if grad_capped is not None:  # d loss / d (capped logits), before the factor 1 - tanh^2
        scale += biggest(grad_capped)
    return {"loss": total.detach(), "grad": grad, "scale": scale}


def _composed_parts(
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    class_dim: int = 1,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """(cross-entropy, z-loss part or None, lse, the cross-entropy mean's denominator)."""
    soft = target.is_floating_point()
    t = target.double() if soft else target
    if x.dim() > 1 and class_dim != 1:  # PyTorch wants the classes on dimension 1
        x_pt, t = x.movedim(class_dim, 1), (t.movedim(class_dim, 1) if soft else t)
    else:
        x_pt = x
    w = None if weight is None else weight.double()
    ce = F.cross_entropy(
        x_pt, t, weight=w, ignore_index=ignore_index, reduction=reduction,
        label_smoothing=label_smoothing,
    )  # fmt: skip
    lse = torch.logsumexp(x, dim=class_dim if x.dim() > 1 else 0)
    valid = torch.ones_like(lse, dtype=torch.bool) if soft else target != ignore_index
    den = None
    if reduction == "mean" and not soft:
        den = valid.sum() if w is None else w[target.where(valid, 0)].where(valid, 0.0).sum()
    if not z_loss:
        return ce, None, lse.detach(), den
    z_rows = torch.where(valid, z_loss * lse.square(), 0.0)
    z_part = {"none": z_rows, "sum": z_rows.sum(), "mean": z_rows.sum() / valid.sum()}
    return ce, z_part[reduction], lse.detach(), den


def check_against_composed(
    logits: torch.Tensor, target: torch.Tensor, dtype: torch.dtype, **opts
) -> None:
    """fused.cross_entropy(logits in ``dtype``) equals the float64 composition of the same
    values: the loss within the dtype's tolerance (scaled with the logits and weights), every
    gradient entry within it relative, up to an absolute part set by the gradient's rounding."""
    logits = logits.to(dtype)
    if target.is_floating_point() and dtype != torch.float64:
        target = target.float()
    go = torch.rand(_row_shape(logits, target, opts), dtype=torch.float64)
    go = go if opts.get("reduction") == "none" else None
    expected = composed(logits, target, go, **opts)
    z, t, g = on_device(logits.detach().clone(), target, go)
    kwargs = {k: (v.to(DEVICE) if torch.is_tensor(v) else v) for k, v in opts.items()}
    loss = fused.cross_entropy(z.requires_grad_(), t, **kwargs)
    loss.backward(torch.ones_like(loss) if g is None else g.to(loss.dtype))
    w_max = 1.0 if opts.get("weight") is None else max(1.0, float(opts["weight"].max()))
    assert_close(loss.detach().cpu(), expected["loss"], dtype, largest(logits) * w_max)
    atol = GRAD_ATOL[dtype] * biggest(expected["grad"]) + 4 * EPS[dtype] * expected["scale"]
    torch.testing.assert_close(
        z.grad.cpu().double(), expected["grad"], rtol=RTOL[dtype], atol=atol, equal_nan=True
    )


def biggest(t: torch.Tensor) -> float:
    """The largest finite |entry| (0 when there is none)."""
    finite = t[t.isfinite()].abs()
    return float(finite.max()) if finite.numel() else 0.0


def _row_shape(logits: torch.Tensor, target: torch.Tensor, opts: dict) -> tuple[int, ...]:
    if not target.is_floating_point():
        return tuple(target.shape)
    dim = opts.get("class_dim", 1) % logits.dim() if logits.dim() > 1 else 0
    return tuple(s for i, s in enumerate(logits.shape) if i != dim)


@st.composite
def option_cases(draw: st.DrawFn, max_classes: int = 40) -> dict:
    n, c, d = draw(st.integers(0, 5)), draw(st.integers(1, max_classes)), draw(st.integers(1, 3))
    layout = draw(st.sampled_from(["(N, C)", "(N, C, d)", "(B, T, V)"]))
    shape, dim = {"(N, C)": ((n, c), 1), "(N, C, d)": ((n, c, d), 1), "(B, T, V)": ((n, d, c), -1)}[
        layout
    ]
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    logits = torch.randn(shape, generator=gen, dtype=torch.float64)
    logits *= draw(st.sampled_from([1.0, 10.0, 1e4]))
    if draw(st.booleans()):  # some logits -inf (possibly a whole row, or the target's)
        logits[torch.rand(shape, generator=gen) < 0.3] = -math.inf
    case = {"logits": logits, "class_dim": dim}
    if draw(st.booleans()):  # class probabilities, some exactly 0
        q = torch.softmax(2 * torch.randn(shape, generator=gen, dtype=torch.float64), dim=dim)
        q = q.where(torch.rand(shape, generator=gen) > 0.2, 0.0) + 1e-3
        case["target"] = q / q.sum(dim=dim, keepdim=True)
    else:
        row_shape = shape[:1] + shape[2:] if dim == 1 else shape[:-1]
        target = torch.randint(0, c, row_shape, generator=gen)
        ignore = draw(st.sampled_from([-100, 0, 3]))
        target[torch.rand(row_shape, generator=gen) < draw(st.sampled_from([0.0, 0.3, 1.0]))] = (
            ignore
        )
        case.update(target=target, ignore_index=ignore)
    weights = draw(st.sampled_from(["none", "positive", "some zero"]))
    if weights != "none":
        w = 2 * torch.rand(c, generator=gen, dtype=torch.float64)
        case["weight"] = (
            w.where(torch.rand(c, generator=gen) > 0.3, 0.0) if weights == "some zero" else w
        )
    case["reduction"] = draw(st.sampled_from(["mean", "sum", "none"]))
    case["label_smoothing"] = draw(st.sampled_from([0.0, 0.1, 1.0]))
    case["z_loss"] = draw(st.sampled_from([0.0, 1e-4, 0.1]))
    case["softcap"] = draw(st.sampled_from([None, 1.0, 30.0]))
    return case


BACKENDS = [
    pytest.param(dtype, name, id=f"{name}-{dtype}")
    for dtype, name in [
        (torch.float32, "native"),
        (torch.float32, "portable"),
        (torch.float32, "torch"),
        (torch.float64, "torch"),
    ]
]


@pytest.mark.parametrize(("dtype", "backend"), BACKENDS, indirect=["backend"])
# the fixture only sets the backend: the same for every example, so sharing it is right
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=option_cases())
def test_options_match_pytorch_composition(case: dict, dtype: torch.dtype, backend: str) -> None:
    logits, target = case.pop("logits"), case.pop("target")
    if "weight" in case:
        case["weight"] = case["weight"].to(dtype)
    check_against_composed(logits, target, dtype, **case)


ALL_OPTIONS = {"label_smoothing": 0.1, "z_loss": 1e-3, "softcap": 30.0}


@pytest.mark.parametrize(("dtype", "backend"), BACKENDS, indirect=["backend"])
@pytest.mark.parametrize("soft", [False, True])
def test_one_class(dtype: torch.dtype, backend: str, soft: bool) -> None:
    # V = 1: the loss is 0 (the only class has probability 1) plus the z-loss z^2
    logits = torch.tensor([[3.0], [-2.0], [0.5]], dtype=torch.float64)
    target = torch.ones(3, 1, dtype=torch.float64) if soft else torch.tensor([0, 0, -100])
    weight = torch.tensor([2.0], dtype=dtype)
    check_against_composed(logits, target, dtype, weight=weight, **ALL_OPTIONS)


@pytest.mark.parametrize(("dtype", "backend"), BACKENDS, indirect=["backend"])
def test_all_ignored_with_every_option(dtype: torch.dtype, backend: str) -> None:
    logits = torch.randn(4, 7, dtype=torch.float64)
    target = torch.full((4,), -100)
    weight = torch.rand(7, dtype=dtype)
    for reduction in ("mean", "sum", "none"):
        out = fused.cross_entropy(logits.to(dtype), target, weight=weight, reduction=reduction)
        assert out.isnan().all() if reduction == "mean" else (out == 0).all()  # 0/0, as PyTorch
        check_against_composed(
            logits, target, dtype, weight=weight, reduction=reduction, **ALL_OPTIONS
        )


@pytest.mark.parametrize(("dtype", "backend"), BACKENDS[:3], indirect=["backend"])
def test_256k_classes_with_every_option(dtype: torch.dtype, backend: str) -> None:
    gen = torch.Generator().manual_seed(11)
    c = 1 << 18
    logits = torch.randn(2, c, generator=gen, dtype=torch.float64) * 4
    logits[1, ::1000] = -math.inf
    weight = torch.rand(c, generator=gen).to(dtype) + 0.5
    target = torch.tensor([0, c - 1])
    check_against_composed(logits, target, dtype, weight=weight, **ALL_OPTIONS)
    q = torch.softmax(torch.randn(2, c, generator=gen, dtype=torch.float64), dim=1)
    check_against_composed(logits.clamp(min=-1e4), q, dtype, weight=weight, **ALL_OPTIONS)


@pytest.mark.parametrize("backend", ["native", "portable", "torch"], indirect=True)
@pytest.mark.parametrize("soft", [False, True])
def test_bfloat16_with_every_option(backend: str, soft: bool) -> None:
    # the gradient is the float32 value rounded once to bfloat16: within half an ulp of the
    # float64 composition of the same (bfloat16) logits, up to the rounding scale
    gen = torch.Generator().manual_seed(12)
    logits = (torch.randn(6, 3000, generator=gen) * 4).to(torch.bfloat16).double()
    target = torch.randint(0, 3000, (6,), generator=gen)
    target[2] = -100
    if soft:
        target = torch.softmax(torch.randn(6, 3000, generator=gen, dtype=torch.float64), dim=1)
    weight = (torch.rand(3000, generator=gen) + 0.5).to(torch.bfloat16)
    check_against_composed(logits, target, torch.bfloat16, weight=weight, **ALL_OPTIONS)


def test_returned_lse_and_z_loss_match_pytorch() -> None:
    gen = torch.Generator().manual_seed(13)
    logits = torch.randn(3, 5, 11, generator=gen, dtype=torch.float64) * 3
    target = torch.randint(0, 11, (3, 5), generator=gen)
    target[0, 1] = -100
    options = {"class_dim": -1, "z_loss": 0.01, "softcap": 5.0}
    out = fused.cross_entropy(
        logits.clone().requires_grad_(), target, return_lse=True, return_z_loss=True, **options
    )
    lse = torch.logsumexp(5.0 * torch.tanh(logits / 5.0), dim=-1)
    expected_lse = lse.where(target != -100, 0.0)  # not computed for ignored rows
    torch.testing.assert_close(out.lse, expected_lse, rtol=1e-12, atol=1e-12)
    z = (0.01 * lse.square()).where(target != -100, 0.0).sum() / (target != -100).sum()
    torch.testing.assert_close(out.z_loss, z, rtol=1e-12, atol=0.0)
    assert out.loss.requires_grad
    assert not out.lse.requires_grad  # for reading: no gradient flows through them
    assert not out.z_loss.requires_grad
    assert isinstance(out, fused.LossOutput)


def test_class_dimension_layouts_agree() -> None:
    # (N, C, d) with the classes on dimension 1 and (N, d, C) with class_dim=-1 are one loss
    gen = torch.Generator().manual_seed(14)
    logits = torch.randn(4, 9, 6, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 9, (4, 6), generator=gen)
    a = fused.cross_entropy(logits, target, reduction="none", label_smoothing=0.2)
    b = fused.cross_entropy(
        logits.transpose(1, 2), target, reduction="none", label_smoothing=0.2, class_dim=-1
    )
    expected = F.cross_entropy(logits, target, reduction="none", label_smoothing=0.2)
    torch.testing.assert_close(a, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b, expected, rtol=1e-12, atol=1e-12)
    single = fused.cross_entropy(logits[0, :, 0], target[0, 0])  # (C,) logits, () target
    torch.testing.assert_close(single, F.cross_entropy(logits[0, :, 0], target[0, 0]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"softcap": 0.0}, r"softcap=0.0 must be > 0"),
        ({"softcap": -3}, r"softcap=-3 must be > 0"),
        ({"softcap": math.inf}, "softcap must be a finite number"),
        ({"z_loss": -1e-4}, r"z_loss=-0.0001 is negative"),
        ({"z_loss": "big"}, "z_loss must be a finite number"),
        ({"weight": torch.ones(4)}, r"weight has shape \(4,\), but there are 3 classes"),
        ({"weight": torch.tensor([1.0, -1.0, 1.0])}, r"weight value -1.0 at index \[1\] is neg"),
        ({"weight": torch.tensor([1.0, math.nan, 1.0])}, "weight value nan"),
        ({"return_lse": 1}, "return_lse must be True or False"),
        ({"class_dim": 1.0}, "class_dim must be an int"),
    ],
)
def test_bad_options_raise_one_clear_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fused.cross_entropy(torch.randn(2, 3), torch.tensor([0, 2]), **kwargs)


@pytest.mark.parametrize(
    ("target", "kwargs", "message"),
    [
        (torch.tensor([[0.5, 0.6, -0.1], [0.2, 0.3, 0.5]]), {}, r"-0.1.* is negative"),
        (torch.tensor([[0.5, 0.6, 0.1], [0.2, 0.3, 0.5]]), {}, r"\[0\] .*sum to 1.2, not 1"),
        (torch.full((2, 3), 1 / 3), {"ignore_index": 0}, "no meaning for probability"),
        (torch.tensor([[1.0, 0.0, math.nan], [0.2, 0.3, 0.5]]), {}, "not finite"),
    ],
)
def test_bad_probability_targets(target: torch.Tensor, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fused.cross_entropy(torch.randn(2, 3), target, **kwargs)


def linear_composed(hidden, linear_weight, bias, target, **opts):
    """The linear loss from PyTorch operations in float64: logits = h W^T + b, the causal shift
    as slicing (position t against target t + 1), then :func:`composed`'s loss; gradients of
    hidden, weight and bias."""
    h, w, b = (None if t is None else t.detach().double() for t in (hidden, linear_weight, bias))
    for t in (h, w, b):
        if t is not None:
            t.requires_grad_()
    logits = h @ w.t() + (0.0 if b is None else b)
    if opts.pop("shift_labels", False):
        logits, target = logits[..., :-1, :], target[..., 1:]
    x = (
        logits
        if opts.get("softcap") is None
        else opts["softcap"] * torch.tanh(logits / opts["softcap"])
    )
    ce, z_part, _, _ = _composed_parts(x, target, class_dim=-1, **opts)
    loss = ce if z_part is None else ce + z_part
    loss.sum().backward()
    return loss.detach(), h.grad, w.grad, None if b is None else b.grad


@pytest.mark.parametrize(("dtype", "backend"), BACKENDS, indirect=["backend"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shift", [False, True])
def test_linear_options_match_pytorch_composition(dtype, backend, reduction, shift) -> None:
    gen = torch.Generator().manual_seed(15)
    hidden = torch.randn(3, 7, 16, generator=gen, dtype=dtype)
    weight = torch.randn(50, 16, generator=gen, dtype=dtype) / 2
    bias = torch.randn(50, generator=gen, dtype=dtype)
    target = torch.randint(0, 50, (3, 7), generator=gen)
    target[1, 2] = -100
    opts = dict(ALL_OPTIONS, reduction=reduction)
    class_weight = torch.rand(50, generator=gen, dtype=dtype) + 0.5
    expected = linear_composed(
        hidden, weight, bias, target, weight=class_weight, shift_labels=shift, **opts
    )
    h, w, b = (t.clone().requires_grad_() for t in (hidden, weight, bias))
    loss = fused.linear_cross_entropy(
        h, w, target, bias=b, class_weight=class_weight, shift_labels=shift, chunk_size=5, **opts
    )
    assert loss.shape == ((3, 6 if shift else 7) if reduction == "none" else ())
    loss.sum().backward()
    rtol = 1e-12 if dtype == torch.float64 else 2e-5
    for actual, wanted in zip((loss, h.grad, w.grad, b.grad), expected, strict=True):
        torch.testing.assert_close(actual.detach().double(), wanted, rtol=rtol, atol=rtol * 1e-1)


def test_linear_returns_the_lse_of_the_predicting_positions() -> None:
    gen = torch.Generator().manual_seed(16)
    hidden = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64)
    weight = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 9, (2, 5), generator=gen)
    out = fused.linear_cross_entropy(hidden, weight, target, shift_labels=True, return_lse=True)
    expected = torch.logsumexp(hidden @ weight.t(), dim=-1)[:, :-1]
    torch.testing.assert_close(out.lse, expected, rtol=1e-12, atol=1e-12)


def test_linear_accum_dtype_sums_bfloat16_chunks_in_float32() -> None:
    # 1024 one-row chunks: the weight gradient is a sum of 1024 products, each rounded to
    # bfloat16; summed in bfloat16 the sum drifts by a few percent (measured 2-3% of the largest
    # entry), summed in float32 only the products' and the final roundings remain (~2^-8)
    gen = torch.Generator().manual_seed(17)
    hidden = torch.randn(1024, 32, generator=gen).bfloat16()
    weight = torch.randn(100, 32, generator=gen).bfloat16()
    target = torch.randint(0, 100, (1024,), generator=gen)
    exact = linear_composed(hidden, weight, None, target, reduction="sum")[2]
    errors = {}
    for accum in (None, torch.float32):
        w = weight.clone().requires_grad_()
        fused.linear_cross_entropy(
            hidden, w, target, reduction="sum", chunk_size=1, accum_dtype=accum
        ).backward()
        assert w.grad.dtype == torch.bfloat16
        errors[accum] = float(((w.grad.double() - exact).abs() / exact.abs().max()).max())
    assert errors[torch.float32] < errors[None] / 4
    assert errors[torch.float32] < 2**-7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shift_labels": True, "target": torch.zeros(4, 1, dtype=torch.long)}, "at least 2"),
        ({"class_weight": torch.ones(4)}, r"class_weight has shape \(4,\)"),
        ({"class_weight": -torch.ones(5)}, "class_weight value -1.0 at index"),
        ({"accum_dtype": torch.int32}, "accum_dtype must be a floating"),
        ({"softcap": 0}, "softcap=0 must be > 0"),
        ({"z_loss": -1.0}, "z_loss=-1.0 is negative"),
        ({"target": torch.rand(4, 1, 5)}, "integer class indices"),
    ],
)
def test_linear_bad_options(kwargs: dict, message: str) -> None:
    target = kwargs.pop("target", torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=message):
        fused.linear_cross_entropy(torch.randn(4, 1, 3), torch.randn(5, 3), target, **kwargs)
