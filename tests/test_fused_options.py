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
