"""Activations vs PyTorch/SciPy, their properties, kinds/dtypes, and edge cases (issue 2)."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
import scipy.special
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from _article import TARGET, UNTRAINED, assert_close, magnitude, math_softmax
from logloss.activations import log_sigmoid, log_softmax, logsumexp, sigmoid, softmax

# Modest by default to keep the suite fast; LOGLOSS_HYPOTHESIS_EXAMPLES=2000 for a deeper run.
FAST = settings(
    max_examples=int(os.environ.get("LOGLOSS_HYPOTHESIS_EXAMPLES", "40")), deadline=None
)

# Tolerances: _article.RTOL/ATOL (float64 1e-12, float32 1e-5, float16 one float16 step).
# Log-space results (log_sigmoid, log_softmax, logsumexp) also get an absolute slack ~ eps * max|x|;
# probabilities (sigmoid, softmax) do not.
LOG_SPACE = {"log_sigmoid", "log_softmax", "logsumexp"}

TORCH_REF = {
    "sigmoid": lambda t, d: torch.sigmoid(t),
    "log_sigmoid": lambda t, d: F.logsigmoid(t),
    "softmax": lambda t, d: torch.softmax(t, dim=d),
    "log_softmax": lambda t, d: torch.log_softmax(t, dim=d),
    "logsumexp": lambda t, d: torch.logsumexp(t, dim=d),
}
# Independent float64 references for the torch path (which is torch's own kernels).
SCIPY_REF = {
    "sigmoid": lambda x, d: scipy.special.expit(x),
    "log_sigmoid": lambda x, d: scipy.special.log_expit(x),
    "softmax": lambda x, d: scipy.special.softmax(x, axis=d),
    "log_softmax": lambda x, d: scipy.special.log_softmax(x, axis=d),
    "logsumexp": lambda x, d: scipy.special.logsumexp(x, axis=d),
}
OURS = {
    "sigmoid": lambda x, d: sigmoid(x),
    "log_sigmoid": lambda x, d: log_sigmoid(x),
    "softmax": lambda x, d: softmax(x, axis=d),
    "log_softmax": lambda x, d: log_softmax(x, axis=d),
    "logsumexp": lambda x, d: logsumexp(x, axis=d),
}


# Logits: mostly moderate, sometimes the extremes +-1e4 and -inf (issue 2's edge cases).
logit = st.one_of(
    st.floats(-30, 30, allow_nan=False, allow_subnormal=False),
    st.sampled_from([1e4, -1e4, -math.inf]),
)


@st.composite
def logit_arrays(draw, dtype=None):
    dtype = dtype or draw(st.sampled_from([np.float64, np.float32, np.float16]))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    x = draw(hnp.arrays(np.float64, shape, elements=logit))
    return x.astype(dtype), draw(st.integers(-x.ndim, x.ndim - 1))


@pytest.mark.parametrize("name", sorted(OURS))
@FAST
@given(case=logit_arrays())
def test_numpy_matches_torch(name, case):
    x, axis = case
    dtype = x.dtype
    ours = OURS[name](x, axis)
    assert isinstance(ours, np.ndarray)
    assert ours.dtype == x.dtype
    # Reference: torch in float64 on the same (already rounded) inputs, rounded to x's dtype.
    ref = TORCH_REF[name](torch.from_numpy(x.astype(np.float64)), axis).numpy().astype(dtype)
    # log-space results like x - max(x) carry an absolute error ~ eps * |x|: scale by max |x|.
    assert_close(ours, ref, dtype, scale=magnitude(x) if name in LOG_SPACE else 0.0)


@pytest.mark.parametrize("name", sorted(OURS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_torch_input_keeps_kind_dtype_device_and_differentiability(name, dtype):
    # The torch path is torch's own kernel (dispatch only), so its values are compared with an
    # independent reference, SciPy in float64, and only in float64.
    rows = [[0.5, -2.0, 3.0], [1e4, -1e4, -math.inf]]
    x = torch.tensor(rows, dtype=dtype, requires_grad=True)
    ours = OURS[name](x, -1)
    assert isinstance(ours, torch.Tensor)
    assert ours.dtype == dtype
    assert ours.device == x.device
    assert ours.requires_grad
    if dtype == torch.float64:
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            ref = SCIPY_REF[name](np.array(rows), -1)
        assert_close(ours, ref, np.float64, scale=1e4 if name in LOG_SPACE else 0.0)


@pytest.mark.parametrize("name", sorted(OURS))
def test_torch_input_stays_differentiable_float64(name):
    # Dispatch check: the result of a float64 tensor has a usable autograd graph (gradcheck
    # compares it with finite differences).
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: OURS[name](t, 1), (x,))


def test_logsumexp_matches_scipy():
    x = np.random.default_rng(0).normal(size=(5, 7)) * 50
    assert_close(
        logsumexp(x, axis=0), scipy.special.logsumexp(x, axis=0), x.dtype, scale=magnitude(x)
    )
    assert_close(logsumexp(x), scipy.special.logsumexp(x, axis=-1), x.dtype, scale=magnitude(x))


# --- properties from the issue ------------------------------------------------------------------

finite = st.floats(-700, 700, allow_nan=False, allow_subnormal=False)


@FAST
@given(hnp.arrays(np.float64, st.integers(2, 30), elements=finite))
def test_sigmoid_is_monotone(x):
    x = np.sort(x)
    assert np.all(np.diff(sigmoid(x)) >= 0)


@FAST
@given(hnp.arrays(np.float64, st.integers(1, 30), elements=finite))
def test_sigmoid_symmetry(x):
    # sigmoid(-t) = 1 - sigmoid(t); the right side is exact only to one rounding of 1 (eps).
    np.testing.assert_allclose(sigmoid(-x), 1.0 - sigmoid(x), rtol=1e-12, atol=2.3e-16)


@FAST
@given(st.floats(-30, 30, allow_nan=False))
def test_sigmoid_derivative_is_s_times_one_minus_s(t):
    h = 1e-5
    numeric = (sigmoid(np.array(t + h)) - sigmoid(np.array(t - h))) / (2 * h)
    s = 1.0 / (1.0 + math.exp(-t))  # hand-written reference value
    # Central difference: truncation ~h^2 (relative), cancellation ~eps/h (absolute).
    assert numeric == pytest.approx(s * (1 - s), rel=1e-7, abs=5e-11)
    x = torch.tensor(t, dtype=torch.float64, requires_grad=True)
    sigmoid(x).backward()
    assert x.grad.item() == pytest.approx(s * (1 - s), rel=1e-12, abs=1e-300)


@FAST
@given(
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), elements=finite),
    st.floats(-1000, 1000, allow_nan=False),
)
def test_softmax_rows_are_distributions_and_shift_invariant(x, c):
    p = softmax(x, axis=-1)
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=0, atol=1e-12 * x.shape[-1])
    # Shifting every logit by c changes nothing but the rounding of x + c.
    np.testing.assert_allclose(softmax(x + c, axis=-1), p, rtol=1e-9, atol=1e-13)


@FAST
@given(finite, finite)
def test_two_class_softmax_is_sigmoid_of_logit_difference(a, b):
    p = softmax(np.array([a, b]))
    s = sigmoid(np.array(a - b))
    assert p[0] == pytest.approx(float(s), rel=1e-12, abs=1e-300)
    assert p[1] == pytest.approx(float(sigmoid(np.array(b - a))), rel=1e-12, abs=1e-300)


@FAST
@given(
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=6), elements=finite)
)
def test_log_softmax_is_x_minus_logsumexp(x):
    expected = x - scipy.special.logsumexp(x, axis=-1, keepdims=True)
    assert_close(log_softmax(x), expected, x.dtype, scale=magnitude(x))


# --- extremes, kinds and errors -----------------------------------------------------------------


def test_extreme_logits_are_finite_and_exact():
    x = np.array([1e4, 0.0, -1e4])
    np.testing.assert_array_equal(softmax(x), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(log_softmax(x), [0.0, -1e4, -2e4])
    assert logsumexp(x) == 1e4
    np.testing.assert_array_equal(log_sigmoid(np.array([-1e4, 1e4])), [-1e4, 0.0])
    np.testing.assert_array_equal(sigmoid(np.array([-1e4, 1e4])), [0.0, 1.0])


def test_infinite_entries_behave_as_torch():
    rows = np.array([[-np.inf, 0.0, 1.0], [-np.inf, -np.inf, -np.inf], [np.inf, 0.0, 1.0]])
    for name in ("softmax", "log_softmax", "logsumexp"):
        expected = TORCH_REF[name](torch.from_numpy(rows), -1).numpy()
        np.testing.assert_allclose(OURS[name](rows, -1), expected, rtol=1e-15, equal_nan=True)
    # -inf gets probability exactly 0; all -inf has no softmax (NaN), logsumexp -inf / +inf.
    assert softmax(rows[0])[0] == 0.0
    assert np.isnan(softmax(rows[1])).all()
    assert logsumexp(rows[1]) == -np.inf
    assert logsumexp(rows[2]) == np.inf


def test_huge_class_count():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 100_000)) * 10
    p = softmax(x)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    ref = scipy.special.log_softmax(x, axis=1)
    assert_close(log_softmax(x), ref, x.dtype, scale=magnitude(x))
    x32 = x.astype(np.float32)
    ref32 = scipy.special.logsumexp(x32.astype(np.float64), axis=1)
    assert_close(logsumexp(x32), ref32, np.float32, scale=magnitude(x))


def test_article_softmax_of_untrained_logits():
    p = softmax(np.array(UNTRAINED))
    assert_close(p, math_softmax(UNTRAINED), np.float64)
    assert round(float(p[TARGET]), 4) == 0.1009
    # The article prints softmax rounded to 4 decimals; predicted class 8 with p = 0.1043.
    assert int(np.argmax(p)) == 8
    assert round(float(p[8]), 4) == 0.1043


def test_kinds_and_dtypes():
    assert softmax([1, 2, 3]).dtype == np.float64  # lists and ints become float64
    assert sigmoid(np.float32(0.5) * np.ones(2, np.float32)).dtype == np.float32
    assert log_softmax(np.ones(3, np.float16)).dtype == np.float16
    assert softmax(torch.tensor([1, 2])).dtype == torch.get_default_dtype()
    assert logsumexp(np.float64(3.0), axis=0) == 3.0  # a 0-d input is a single class, as torch
    assert softmax(np.zeros((2, 0))).shape == (2, 0)


def test_errors_are_clear():
    with pytest.raises(ValueError, match=r"axis=2 is out of range .* use a value in \[-2, 1\]"):
        softmax(np.zeros((2, 3)), axis=2)
    with pytest.raises(ValueError, match="x must hold real numbers, got dtype <U1"):
        sigmoid(np.array(["a"]))
    with pytest.raises(ValueError, match="x must be real, got a complex tensor"):
        sigmoid(torch.zeros(2, dtype=torch.complex64))


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp", "sigmoid", "log_sigmoid"])
@pytest.mark.parametrize("value", [-math.inf, math.inf, 1e4, -1e4])
def test_no_numpy_warnings_for_extreme_scalars(name, value):
    # A 0-d input is one class: the same errstate as arrays, so -inf - (-inf) warns nothing.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = OURS[name](np.float64(value), 0)
    ref = TORCH_REF[name](torch.tensor(value, dtype=torch.float64), 0).numpy()
    np.testing.assert_array_equal(ours, ref)
