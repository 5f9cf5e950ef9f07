"""The cross-entropy family vs torch.nn.functional, the article's numbers, properties, errors."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from _article import (
    REPORTED_UNTRAINED_LOSS,
    TARGET,
    TRAINED,
    UNTRAINED,
    assert_close,
    magnitude,
    math_softmax,
    neg_log_softmax,
)
from logloss.losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    nll_loss,
)

# Modest by default to keep the suite fast; LOGLOSS_HYPOTHESIS_EXAMPLES=2000 for a deeper run.
FAST = settings(
    max_examples=int(os.environ.get("LOGLOSS_HYPOTHESIS_EXAMPLES", "60")), deadline=None
)

# Tolerances (_article, docs/losses.md): float64 1e-12 relative, float32 1e-5, float16 one float16
# step (2**-10) of PyTorch's float32 result on the same float16 values.  Loss values (log space)
# get an absolute slack ~ eps * max|logit|; gradients w.r.t. the input only a tiny dtype floor.
REDUCTIONS = ("none", "sum", "mean")


# --- hypothesis cases -----------------------------------------------------------------------------

logit = st.one_of(
    st.floats(-30, 30, allow_nan=False, allow_subnormal=False),
    st.sampled_from([1e4, -1e4, -math.inf]),
)


@st.composite
def ce_cases(draw, probabilities: bool = False):
    """(logits, target, weight, ignore_index, reduction, label_smoothing) for cross_entropy."""
    dtype = draw(st.sampled_from([np.float64, np.float32, np.float16]))
    n_classes = draw(st.integers(1, 6))
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4))
    shape = (n_classes,) if not batch else (batch[0], n_classes, *batch[1:])
    finite_only = probabilities  # -inf logit * 0 probability is NaN in PyTorch; tested apart
    elements = st.floats(-30, 30, allow_nan=False) if finite_only else logit
    logits = draw(hnp.arrays(np.float64, shape, elements=elements)).astype(dtype)
    ignore_index = draw(st.sampled_from([-100, 0, n_classes - 1]))
    if probabilities:
        raw = draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1)))
        target = raw.astype(dtype)
    else:
        classes = st.one_of(st.integers(0, n_classes - 1), st.just(ignore_index))
        target = draw(hnp.arrays(np.int64, batch, elements=classes))
    weight = draw(
        st.none()
        | hnp.arrays(np.float64, n_classes, elements=st.floats(0.1, 3)).map(
            lambda a: a.astype(dtype)
        )
    )
    reduction = draw(st.sampled_from(REDUCTIONS))
    smoothing = draw(st.sampled_from([0.0, 1.0]) | st.floats(0, 1))
    return logits, target, weight, ignore_index, reduction, smoothing


def torch_kwargs(kwargs: dict) -> dict:
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


def leaves(x, target, kwargs: dict, grad_wrt: tuple[str, ...]) -> tuple[dict, list[str]]:
    """Fresh tensors for one call: ``input``, ``target`` and kwargs; ``input`` and the names in
    ``grad_wrt`` (when given) require grad.  Returns (tensors, the names that require grad)."""
    tensors = torch_kwargs({"input": x, "target": np.asarray(target), **kwargs})
    names = [k for k in ("input", *grad_wrt) if tensors.get(k) is not None]
    for k in names:
        tensors[k].requires_grad_(True)
    return tensors, names


def check_against_torch(ours_fn, ref_fn, x, target, *, grad_wrt=(), **kwargs) -> None:
    """NumPy and torch inputs vs PyTorch: values, result kind and dtype, and gradients w.r.t.
    the input and the arguments named in ``grad_wrt`` (those PyTorch differentiates).

    float16: the reference is PyTorch in float32 on the same float16 values, rounded to float16
    (how logloss computes float16, docs/losses.md); gradients are float32 ones rounded likewise.
    """
    dtype = x.dtype
    scale = magnitude(x)  # for loss values and gradients w.r.t. target/weights (log space)
    ref_t, names = leaves(x, target, kwargs, grad_wrt)
    widened = {
        k: v.float() if isinstance(v, torch.Tensor) and v.dtype == torch.float16 else v
        for k, v in ref_t.items()
    }
    ref = ref_fn(**widened)
    ref_value = ref.detach().to(torch.from_numpy(x).dtype)

    ours = ours_fn(x, target, **kwargs)  # NumPy in -> ndarray out, same dtype
    assert isinstance(ours, np.ndarray)
    assert ours.dtype == x.dtype
    assert_close(ours, ref_value, dtype, scale=scale)

    ours_t, _ = leaves(x, target, kwargs, grad_wrt)
    args = dict(ours_t)
    ours = ours_fn(args.pop("input"), args.pop("target"), **args)
    assert isinstance(ours, torch.Tensor)
    assert ours.dtype == ref_value.dtype
    assert_close(ours, ref_value, dtype, scale=scale)
    if ref.numel() and torch.isfinite(ref).all():
        ref.sum().backward()
        ours.sum().backward()
        for k in names:
            # d/d input is a difference of probabilities: no scaling.  d/d target, weight,
            # pos_weight are log-probabilities: they carry the log-space slack.
            grad_scale = 0.0 if k == "input" else scale
            assert_close(ours_t[k].grad, ref_t[k].grad, dtype, scale=grad_scale)


@FAST
@given(ce_cases())
def test_cross_entropy_index_targets_match_torch(case):
    logits, target, weight, ignore_index, reduction, smoothing = case
    check_against_torch(
        cross_entropy,
        F.cross_entropy,
        logits,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=smoothing,
    )


@FAST
@given(ce_cases(probabilities=True))
def test_cross_entropy_probability_targets_match_torch(case):
    logits, target, weight, _, reduction, smoothing = case
    check_against_torch(
        cross_entropy,
        F.cross_entropy,
        logits,
        target,
        grad_wrt=("target", "weight"),  # PyTorch differentiates soft targets and their weights
        weight=weight,
        reduction=reduction,
        label_smoothing=smoothing,
    )


@FAST
@given(ce_cases())
def test_nll_loss_matches_torch(case):
    logits, target, weight, ignore_index, reduction, _ = case
    log_probs = torch.log_softmax(torch.from_numpy(logits), dim=0 if logits.ndim == 1 else 1)
    check_against_torch(
        nll_loss,
        F.nll_loss,
        log_probs.numpy(),
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
    )


@st.composite
def binary_cases(draw, probabilities: bool):
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4))
    if probabilities:  # include exact 0 and 1, where PyTorch clamps log at -100
        elements = st.floats(0, 1) | st.sampled_from([0.0, 1.0])
    else:
        elements = st.floats(-30, 30, allow_nan=False) | st.sampled_from([1e4, -1e4])
    x = draw(hnp.arrays(np.float64, shape, elements=elements)).astype(dtype)
    target = draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1))).astype(dtype)
    last = shape[-1:] if shape else ()
    weight = draw(
        st.none()
        | hnp.arrays(np.float64, last, elements=st.floats(0, 3)).map(lambda a: a.astype(dtype))
    )
    pos_weight = draw(
        st.none()
        | hnp.arrays(np.float64, last, elements=st.floats(0.1, 5)).map(lambda a: a.astype(dtype))
    )
    reduction = draw(st.sampled_from(REDUCTIONS))
    return x, target, weight, pos_weight, reduction


@FAST
@given(binary_cases(probabilities=True))
def test_binary_cross_entropy_matches_torch(case):
    probs, target, weight, _, reduction = case
    check_against_torch(
        binary_cross_entropy,
        F.binary_cross_entropy,
        probs,
        target,
        grad_wrt=("target",),  # PyTorch: not w.r.t. weight
        weight=weight,
        reduction=reduction,
    )


@FAST
@given(binary_cases(probabilities=False))
def test_binary_cross_entropy_with_logits_matches_torch(case):
    logits, target, weight, pos_weight, reduction = case
    check_against_torch(
        binary_cross_entropy_with_logits,
        F.binary_cross_entropy_with_logits,
        logits,
        target,
        grad_wrt=("target",),  # PyTorch: not w.r.t. weight or pos_weight (tested below)
        weight=weight,
        pos_weight=pos_weight,
        reduction=reduction,
    )


@pytest.mark.parametrize(
    ("fn", "x", "target", "kwargs"),
    [
        (cross_entropy, np.random.default_rng(1).normal(size=(3, 4)), [0, 3, -100], {}),
        (
            cross_entropy,
            np.random.default_rng(2).normal(size=(2, 3, 2)),
            [[1, 2], [0, 1]],
            {
                "weight": np.array([0.5, 2.0, 1.0]),
                "label_smoothing": 0.2,
                "ignore_index": 1,
            },
        ),
        (
            cross_entropy,
            np.random.default_rng(3).normal(size=(3, 4)),
            np.random.default_rng(4).dirichlet(np.ones(4), size=3),
            {"label_smoothing": 0.1},
        ),
        (
            nll_loss,
            np.random.default_rng(5).normal(size=(3, 4)),
            [1, 2, 3],
            {
                "weight": np.array([1.0, 2.0, 3.0, 4.0]),
            },
        ),
        (
            binary_cross_entropy,
            np.random.default_rng(6).uniform(0.05, 0.95, size=(3, 2)),
            np.random.default_rng(7).uniform(size=(3, 2)),
            {"weight": np.array([1.0, 3.0])},
        ),
        (
            binary_cross_entropy_with_logits,
            np.random.default_rng(8).normal(size=(3, 2)),
            np.random.default_rng(9).uniform(size=(3, 2)),
            {"pos_weight": np.array([2.0, 0.5])},
        ),
    ],
)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_float64(fn, x, target, kwargs, reduction):
    x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    target = torch.as_tensor(np.asarray(target))
    kw = {**torch_kwargs(kwargs), "reduction": reduction}
    assert torch.autograd.gradcheck(lambda t: fn(t, target, **kw), (x,))


@pytest.mark.parametrize(
    ("fn", "x", "target", "name"),
    [
        (cross_entropy, (3, 4), [0, 3, 1], "weight"),
        (nll_loss, (3, 4), [2, 2, 0], "weight"),
        (binary_cross_entropy_with_logits, (3, 2), "uniform", "pos_weight"),
        (binary_cross_entropy_with_logits, (3, 2), "uniform", "weight"),
        (binary_cross_entropy, (3, 2), "uniform", "weight"),
    ],
)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_weight_gradients_where_torch_has_none(fn, x, target, name, reduction):
    # PyTorch refuses requires_grad on these weights; ours are differentiable, checked against
    # finite differences (gradcheck) in float64.
    g = torch.Generator().manual_seed(0)
    x = torch.rand(*x, dtype=torch.float64, generator=g) * 0.8 + 0.1  # valid probabilities too
    if target == "uniform":
        target = torch.rand(*x.shape, dtype=torch.float64, generator=g)
    else:
        target = torch.tensor(target)
    w = (torch.rand(x.shape[1], dtype=torch.float64, generator=g) + 0.5).requires_grad_(True)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t, v: fn(t, target, reduction=reduction, **{name: v}), (x, w)
    )


def test_pos_weight_gradient_by_hand():
    # l = -(pw y ln s(x) + (1 - y) ln(1 - s(x))), so dl/dpw = -y ln s(x) = -y log_sigmoid(x).
    x = torch.tensor([[-1e4, 0.3], [2.0, 1e4]], dtype=torch.float64)
    y = torch.tensor([[0.5, 1.0], [0.25, 0.0]], dtype=torch.float64)
    pw = torch.tensor([2.0, 0.5], dtype=torch.float64, requires_grad=True)
    binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="sum").backward()
    s = [[1e4, math.log1p(math.exp(-0.3))], [math.log1p(math.exp(-2.0)), 0.0]]  # -ln s(x)
    expected = [y[0, 0] * s[0][0] + y[1, 0] * s[1][0], y[0, 1] * s[0][1] + y[1, 1] * s[1][1]]
    torch.testing.assert_close(
        pw.grad, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0
    )


def test_binary_cross_entropy_target_gradient_matches_torch():
    # PyTorch differentiates BCE w.r.t. the target too: dl/dy = -logit(p).
    p = torch.tensor([0.0, 1e-45, 0.3, 0.999], dtype=torch.float64)
    y_ref = torch.tensor([0.0, 1.0, 0.2, 0.5], dtype=torch.float64, requires_grad=True)
    y_ours = y_ref.detach().clone().requires_grad_(True)
    F.binary_cross_entropy(p, y_ref, reduction="sum").backward()
    binary_cross_entropy(p, y_ours, reduction="sum").backward()
    torch.testing.assert_close(y_ours.grad, y_ref.grad, rtol=1e-12, atol=0)


# --- float16 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_float16_is_float32_math_rounded_once(kind, reduction):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(64, 10)) * 5).astype(np.float16)
    t = rng.integers(0, 10, size=64)
    w = rng.uniform(0.5, 2, size=10).astype(np.float16)
    kw = {"reduction": reduction, "weight": w, "label_smoothing": 0.1}
    # Reference: PyTorch in float32 on the same float16 values, rounded to float16.
    ref = torch_ce_float32(x, t, **kw).to(torch.float16)
    if kind == "numpy":
        ours = cross_entropy(x, t, **kw)
        assert ours.dtype == np.float16
    else:
        ours = cross_entropy(torch.from_numpy(x), torch.from_numpy(t), **torch_kwargs(kw))
        assert ours.dtype == torch.float16
    assert_close(ours, ref, np.float16, scale=magnitude(x))


def torch_ce_float32(x, t, *, weight=None, **kw):
    weight = None if weight is None else torch.from_numpy(np.asarray(weight, np.float32))
    return F.cross_entropy(torch.from_numpy(x).float(), torch.from_numpy(t), weight=weight, **kw)


def test_float16_mean_does_not_overflow_where_torch_does():
    # 3000 samples with loss 60 each: the float16 sum (180000 > 65504) overflows.  PyTorch's CPU
    # float16 mean is inf; logloss accumulates in float32, so the mean is the exact 60.
    x = np.zeros((3000, 10), np.float16)
    x[:, 0] = 60
    t = np.ones(3000, np.int64)
    torch_half = F.cross_entropy(torch.from_numpy(x), torch.from_numpy(t))
    assert torch.isinf(torch_half)  # documents PyTorch's behaviour (docs/losses.md)
    expected = 60 + math.log1p(9 * math.exp(-60))  # -log softmax, by hand
    assert float(cross_entropy(x, t)) == pytest.approx(expected, rel=2.0**-10)
    ours = cross_entropy(torch.from_numpy(x), torch.from_numpy(t))
    assert ours.dtype == torch.float16
    assert float(ours) == pytest.approx(expected, rel=2.0**-10)
    assert np.isinf(cross_entropy(x, t, reduction="sum"))  # 180000 has no float16 value


# --- the article's numbers (references from _article: softmax and -ln p with the math module) ---


def test_article_untrained_target_7():
    p = math_softmax(UNTRAINED)[TARGET]
    loss = neg_log_softmax(UNTRAINED, TARGET)
    assert round(p, 4) == 0.1009
    assert round(loss, 3) == 2.294  # the article's 2.2936 is -ln of the rounded p (test_explain)
    ours = cross_entropy(np.array([UNTRAINED]), np.array([TARGET]))
    assert float(ours) == pytest.approx(loss, rel=1e-12)
    one = cross_entropy(np.array(UNTRAINED), np.array(TARGET))  # a single sample of shape (C,)
    assert float(one) == pytest.approx(loss, rel=1e-12)


def test_article_untrained_printed_loss_belongs_to_class_8():
    # The article printed 2.2604 from unrounded logits; its rounded logits give 2.2607 for class 8,
    # and class 8 is the only class within 0.005 of the printed value (class 7 gives 2.294).
    losses = [neg_log_softmax(UNTRAINED, k) for k in range(10)]
    assert round(losses[8], 3) == 2.261
    assert [k for k in range(10) if abs(losses[k] - REPORTED_UNTRAINED_LOSS) < 0.005] == [8]
    ours = cross_entropy(np.array([UNTRAINED] * 10), np.arange(10), reduction="none")
    np.testing.assert_allclose(ours, losses, rtol=1e-12)


def test_article_trained_target_7():
    p = math_softmax(TRAINED)[TARGET]
    loss = neg_log_softmax(TRAINED, TARGET)
    assert round(p, 4) == 0.9948
    assert round(loss, 4) == 0.0052
    ours = cross_entropy(torch.tensor([TRAINED], dtype=torch.float64), torch.tensor([TARGET]))
    assert float(ours) == pytest.approx(loss, rel=1e-12)


# --- properties ---------------------------------------------------------------------------------


@FAST
@given(ce_cases())
def test_index_targets_equal_one_hot_probability_targets(case):
    logits, target, weight, _, _, smoothing = case
    n_classes = logits.shape[0 if logits.ndim == 1 else 1]
    target = np.where(target < 0, 0, target)  # every sample a real class here
    logits = np.where(np.isinf(logits), -30, logits)  # -inf * 0 is NaN for probabilities
    one_hot = np.moveaxis(np.eye(n_classes)[target], -1, 0 if logits.ndim == 1 else 1)
    # With weights, "mean" divides by sum w[y] for indices but by N for probabilities (PyTorch),
    # so compare per-sample losses and sums.
    for reduction in ("none", "sum"):
        kw = {"weight": weight, "reduction": reduction, "label_smoothing": smoothing}
        by_index = cross_entropy(logits, target, ignore_index=-1, **kw)
        by_probs = cross_entropy(logits, one_hot.astype(logits.dtype), **kw)
        assert_close(by_index, by_probs, logits.dtype, scale=magnitude(logits))


def test_ignoring_equals_subsetting():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 5))
    target = rng.integers(0, 5, size=8)
    weight = rng.uniform(0.5, 2, size=5)
    keep = np.array([1, 0, 1, 1, 0, 1, 0, 1], bool)
    masked = np.where(keep, target, -100)
    for smoothing in (0.0, 0.3):
        kw = {"weight": weight, "label_smoothing": smoothing}
        assert float(cross_entropy(logits, masked, **kw)) == pytest.approx(
            float(cross_entropy(logits[keep], target[keep], **kw)), rel=1e-12
        )


def test_all_ignored_mean_is_nan_sum_is_zero():
    logits = np.zeros((2, 3))
    target = np.array([-100, -100])
    assert np.isnan(cross_entropy(logits, target))
    assert np.isnan(cross_entropy(logits, target, label_smoothing=0.1))
    assert float(cross_entropy(logits, target, reduction="sum")) == 0.0
    assert torch.isnan(F.cross_entropy(torch.zeros(2, 3), torch.tensor([-100, -100])))


def test_extreme_and_infinite_logits():
    # Confident and right: loss exactly 0; confident and wrong: the logit gap; -inf target: inf.
    logits = np.array([[1e4, -1e4, 0.0], [1e4, -1e4, 0.0], [0.0, -np.inf, 0.0]])
    losses = cross_entropy(logits, np.array([0, 1, 1]), reduction="none")
    np.testing.assert_array_equal(losses, [0.0, 2e4, np.inf])
    # An ignored sample sitting on a -inf logit contributes nothing (no 0 * inf = NaN).
    assert float(cross_entropy(logits[2:], np.array([-100]), reduction="sum")) == 0.0
    # Probability targets: PyTorch computes 0 * -inf = NaN for a zero-probability -inf class.
    x = torch.tensor([[0.0, -math.inf]])
    q = torch.tensor([[1.0, 0.0]])
    assert torch.isnan(F.cross_entropy(x, q))
    assert np.isnan(cross_entropy(x.numpy(), q.numpy()))


def test_huge_class_count():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 100_000)).astype(np.float32) * 5
    target = rng.integers(0, 100_000, size=4)
    ref = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(target), label_smoothing=0.1)
    ours = cross_entropy(logits, target, label_smoothing=0.1)
    assert_close(ours, ref, np.float32, scale=magnitude(logits))
    assert_close(
        cross_entropy(logits.astype(np.float64), target),
        F.cross_entropy(torch.from_numpy(logits.astype(np.float64)), torch.from_numpy(target)),
        np.float64,
        scale=magnitude(logits),
    )


def test_kinds_and_shapes():
    assert cross_entropy([[1.0, 2.0]], [1]).shape == ()  # lists work; 0-d result
    labels = np.array([0, 1], np.uint8)  # uint8 labels, as MNIST stores them
    assert cross_entropy(np.zeros((2, 3), np.float32), labels).dtype == np.float32
    spatial = cross_entropy(np.zeros((2, 3, 4, 5)), np.zeros((2, 4, 5), int), reduction="none")
    assert spatial.shape == (2, 4, 5)
    x = torch.zeros(2, 3)
    assert cross_entropy(x, np.array([0, 1])).dtype == torch.float32  # mixed kinds: logits decide
    assert torch.isnan(cross_entropy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)))


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: cross_entropy(np.zeros((3, 4)), np.array([0, 4, 1])),
            r"target value 4 at index \[1\] is not a class index: targets must be in \[0, 4\) "
            r"for 4 classes, or equal ignore_index=-100",
        ),
        (
            lambda: cross_entropy(np.zeros((2, 4, 3)), np.array([[0, 1, 2], [3, -1, 0]])),
            r"target value -1 at index \[1, 1\]",
        ),
        (
            lambda: nll_loss(torch.zeros(2, 3), torch.tensor([0, 7])),
            r"target value 7 at index \[1\] is not a class index",
        ),
        (
            lambda: cross_entropy(np.zeros((3, 4)), np.array([0, 1])),
            r"target shape \(2,\) does not match logits shape \(3, 4\): class-index targets need "
            r"shape \(3,\)",
        ),
        (
            lambda: cross_entropy(np.zeros((3, 4)), np.zeros(3)),
            r"target has a float dtype, so it is read as class probabilities, which need the "
            r"logits' shape \(3, 4\), got \(3,\); for class indices pass an integer array",
        ),
        (
            lambda: cross_entropy(np.zeros((1, 2)), np.array([[1.5, -0.5]])),
            r"target probability -0.5 at index \[0, 1\] is negative",
        ),
        (
            lambda: cross_entropy(np.zeros((1, 2)), np.array([[np.nan, 1.0]])),
            r"target value nan at index \[0, 0\] is not finite",
        ),
        (
            lambda: cross_entropy(np.zeros((1, 2)), np.array([True])),
            r"target must hold integer class indices .* got dtype bool",
        ),
        (
            lambda: cross_entropy(np.zeros((2, 3)), np.array([0, 1]), weight=np.ones(4)),
            r"weight has shape \(4,\), but the logits have 3 classes; pass one weight per class",
        ),
        (
            lambda: cross_entropy(np.zeros((2, 3)), np.array([0, 1]), weight=[1, np.inf, 1]),
            r"weight value inf at index \[1\] is not finite",
        ),
        (
            lambda: cross_entropy(np.zeros((2, 3)), np.array([0, 1]), reduction="avg"),
            r"reduction='avg' is not supported; use one of 'none', 'mean', 'sum'",
        ),
        (
            lambda: cross_entropy(np.zeros((2, 3)), np.array([0, 1]), label_smoothing=1.5),
            r"label_smoothing=1.5 is outside \[0, 1\]",
        ),
        (
            lambda: cross_entropy(np.float64(1.0), np.array(0)),
            r"logits must have a class axis: shape \(C,\), \(N, C\) or \(N, C, d1, ...\)",
        ),
        (
            lambda: cross_entropy(np.zeros((2, 0)), np.array([0, 0])),
            r"the class axis needs at least 1 class",
        ),
        (
            lambda: binary_cross_entropy(np.array([0.5, 1.2]), np.array([0.0, 1.0])),
            r"probs value 1.2 at index \[1\] is outside \[0, 1\]; probs must hold probabilities; "
            r"to pass logits use binary_cross_entropy_with_logits",
        ),
        (
            lambda: binary_cross_entropy(torch.tensor([0.5, np.nan]), torch.tensor([0.0, 1.0])),
            r"probs value nan at index \[1\] is outside \[0, 1\]",
        ),
        (
            lambda: binary_cross_entropy(np.array([0.5]), np.array([2.0])),
            r"target value 2.0 at index \[0\] is outside \[0, 1\]",
        ),
        (
            lambda: binary_cross_entropy_with_logits(np.zeros((2, 3)), np.zeros(3)),
            r"target shape \(3,\) does not match logits shape \(2, 3\)",
        ),
        (
            lambda: binary_cross_entropy_with_logits(
                np.zeros((2, 3)), np.zeros((2, 3)), pos_weight=np.ones(2)
            ),
            r"pos_weight of shape \(2,\) does not broadcast to the input shape \(2, 3\)",
        ),
    ],
)
def test_errors_name_the_value_and_the_rule(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_ignore_index_inside_the_class_range_is_skipped_not_an_error():
    logits = np.random.default_rng(0).normal(size=(3, 4))
    ours = cross_entropy(logits, np.array([2, 2, 1]), ignore_index=2, reduction="sum")
    assert float(ours) == pytest.approx(float(cross_entropy(logits[2], np.array(1))), rel=1e-12)


def test_second_derivatives_exist():
    # binary_cross_entropy uses a custom autograd Function (PyTorch's backward); its backward is
    # itself differentiable, as PyTorch's is.
    g = torch.Generator().manual_seed(0)
    p = (torch.rand(3, 4, dtype=torch.float64, generator=g) * 0.8 + 0.1).requires_grad_(True)
    y = torch.rand(3, 4, dtype=torch.float64, generator=g)
    assert torch.autograd.gradgradcheck(lambda t: binary_cross_entropy(t, y), (p,))
    assert torch.autograd.gradgradcheck(
        lambda t: cross_entropy(t, torch.tensor([0, 1, 3]), label_smoothing=0.2), (p,)
    )
