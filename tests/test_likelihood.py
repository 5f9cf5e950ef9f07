"""Tests of logloss.likelihood against hand-derived numbers and SciPy's distributions."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import gammaln

from logloss.likelihood import (
    _newton_direction,
    _numerical_mle,
    likelihood,
    log_likelihood,
    mle,
)

# --------------------------------------------------------------------------------------------
# strategies: outcomes over a small alphabet and a probability vector for it

ALPHABET = "abcde"


@st.composite
def outcomes_and_probs(draw, min_size=0):
    """(outcomes string, {symbol: probability}) with every probability > 0, summing to 1."""
    k = draw(st.integers(1, len(ALPHABET)))
    symbols = ALPHABET[:k]
    outcomes = draw(st.text(alphabet=symbols, min_size=min_size, max_size=40))
    weights = draw(st.lists(st.floats(0.01, 1.0), min_size=k, max_size=k))
    total = math.fsum(weights)
    return outcomes, {s: w / total for s, w in zip(symbols, weights, strict=True)}


def rel_close(a: float, b: float, rel: float = 1e-12) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


# --------------------------------------------------------------------------------------------
# the article's five balls


def test_article_balls_likelihood_is_p3_q2():
    # w-b-w-b-b with P(b) = p: (1-p) p (1-p) p p = p^3 (1-p)^2, at p = 0.6: 0.03456.
    assert rel_close(likelihood("wbwbb", {"b": 0.6, "w": 0.4}), 0.6**3 * 0.4**2)
    assert rel_close(likelihood("wbwbb", {"b": 0.6, "w": 0.4}), 0.03456)
    assert rel_close(
        log_likelihood("wbwbb", {"b": 0.6, "w": 0.4}), 3 * math.log(0.6) + 2 * math.log(0.4)
    )


def test_article_balls_mle():
    result = mle("wbwbb")
    assert result.n == 5
    assert result.counts == {"b": 3, "w": 2}
    assert result.estimate == pytest.approx({"b": 0.6, "w": 0.4}, rel=1e-15)
    assert str(result.fraction("b")) == "3/5"
    assert rel_close(result.likelihood, 0.03456)
    assert rel_close(result.log_likelihood, math.log(0.03456))
    assert result.formula == "p^3 (1-p)^2"
    assert result.parameter == "b"
    # The article's calculus: 3p^2(1-p)^2 - 2p^3(1-p) = 0  ->  p = 3/5.
    assert (
        result.derivation == "dL/dp = 3p^2 (1-p)^2 - 2p^3 (1-p) = 0  ->  3(1-p) = 2p  ->  p = 3/5"
    )
    # The machine check: Newton's method, which never uses count / n, lands on 3/5.
    assert result.max_difference < 1e-12
    assert result.numerical["b"] == pytest.approx(0.6, abs=1e-12)


def test_estimate_is_where_the_derivative_vanishes():
    # Independent of mle: the derivative of p^3 (1-p)^2 by central differences is 0 at 0.6.
    def curve(p):
        return likelihood("wbwbb", {"b": p, "w": 1 - p})

    h = 1e-6
    slope = (curve(0.6 + h) - curve(0.6 - h)) / (2 * h)
    assert abs(slope) < 1e-9
    assert curve(0.6) > curve(0.6 - 0.01)
    assert curve(0.6) > curve(0.6 + 0.01)


# --------------------------------------------------------------------------------------------
# SciPy references


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 1), max_size=50), st.floats(0.001, 0.999))
def test_binary_matches_scipy_bernoulli(outcomes, p):
    expected = math.fsum(stats.bernoulli.logpmf(outcomes, p)) if outcomes else 0.0
    assert rel_close(log_likelihood(outcomes, p), expected, 1e-12)
    assert rel_close(likelihood(outcomes, p), math.exp(expected), 1e-10)


@settings(max_examples=60, deadline=None)
@given(outcomes_and_probs())
def test_categorical_matches_scipy_multinomial(case):
    outcomes, probs = case
    symbols = list(probs)
    counts = [outcomes.count(s) for s in symbols]
    n = len(outcomes)
    # multinomial.logpmf counts every ordering; one sequence is that divided by n!/prod(c!).
    log_orderings = gammaln(n + 1) - sum(gammaln(c + 1) for c in counts)
    expected = stats.multinomial.logpmf(counts, n, [probs[s] for s in symbols]) - log_orderings
    assert math.isclose(log_likelihood(outcomes, probs), expected, rel_tol=1e-10, abs_tol=1e-10)


# --------------------------------------------------------------------------------------------
# properties


@settings(max_examples=80, deadline=None)
@given(outcomes_and_probs(), st.data())
def test_log_likelihood_is_additive(case, data):
    # log L(E1) + log L(E2) = log L(E1 and E2): the article's reason to take the log.
    outcomes, probs = case
    cut = data.draw(st.integers(0, len(outcomes)))
    first, second = outcomes[:cut], outcomes[cut:]
    total = log_likelihood(outcomes, probs)
    assert math.isclose(
        log_likelihood(first, probs) + log_likelihood(second, probs),
        total,
        rel_tol=1e-12,
        abs_tol=1e-12,
    )
    # ... while the likelihood itself multiplies.
    assert math.isclose(
        likelihood(first, probs) * likelihood(second, probs),
        likelihood(outcomes, probs),
        rel_tol=1e-12,
        abs_tol=1e-300,
    )


@settings(max_examples=60, deadline=None)
@given(outcomes_and_probs(min_size=1))
def test_mle_maximises_likelihood(case):
    outcomes, other = case
    result = mle(outcomes, symbols=other, numerical=False)
    assert result.estimate == {s: c / len(outcomes) for s, c in Counter(outcomes).items()} | {
        s: 0.0 for s in other if s not in outcomes
    }
    # No other probability vector over the same symbols explains the outcomes better.
    assert log_likelihood(outcomes, other) <= result.log_likelihood + 1e-12
    assert likelihood(outcomes, other) <= result.likelihood * (1 + 1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 10**9), min_size=2, max_size=50))
def test_numerical_maximiser_agrees_with_closed_form(counts):
    # Counts, not outcome lists: _numerical_mle sees only counts, and 10**9 outcomes would not fit.
    found, steps = _numerical_mle(dict(enumerate(counts)))
    total = sum(counts)
    for symbol, count in enumerate(counts):
        assert abs(found[symbol] - count / total) < 1e-12  # float64: to rounding
    assert steps <= 40  # damped Newton, then quadratic convergence


def test_numerical_maximiser_on_a_skewed_sample():
    result = mle("a" + "b" * 999_999)
    assert result.numerical["a"] == pytest.approx(1e-6, rel=1e-9)
    assert result.max_difference < 1e-12
    extreme, _ = _numerical_mle({"a": 1, "b": 10**12})
    assert extreme["a"] == pytest.approx(1e-12, rel=1e-4)  # absolute error ~1e-16 in p


def test_newton_direction_vanishes_only_at_the_closed_form():
    # The iteration's own stopping point, checked at p = c/n (derived by hand) and away from it.
    weights = np.array([3.0, 2.0]) / 5
    direction, decrement = _newton_direction(weights, np.array([0.6, 0.4]))
    assert np.abs(direction).max() < 1e-15
    assert decrement < 1e-30
    direction, decrement = _newton_direction(weights, np.array([0.5, 0.5]))
    # One Newton step from 1/2: h = p^2 / w = (5/12, 5/8), lam = -1 / sum h = -24/25,
    # d = h (w / p + lam) = (5/12 * (6/5 - 24/25), ...) = (1/10, -1/10): exact for two symbols.
    assert direction == pytest.approx([0.1, -0.1], abs=1e-15)
    assert decrement > 0


def test_mle_runs_without_torch():
    # The numerical check is NumPy: `logloss mle` must not pay torch's import (issue 14).
    script = (
        "import sys; from logloss.cli import main; status = main(['mle', 'wbwbb']); "
        "print(sorted(m for m in ('torch', 'scipy') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.splitlines()[-1] == "[]"
    assert "Newton's method" in done.stdout


# --------------------------------------------------------------------------------------------
# edge cases


def test_zero_probability_outcome():
    assert log_likelihood("wbb", {"b": 1.0, "w": 0.0}) == -math.inf
    assert likelihood("wbb", {"b": 1.0, "w": 0.0}) == 0.0
    # A symbol that never occurs may have probability 0 (or any probability).
    assert log_likelihood("bb", {"b": 1.0, "w": 0.0}) == 0.0
    assert rel_close(log_likelihood("bb", {"b": 0.5, "w": 0.25, "g": 0.25}), 2 * math.log(0.5))


def test_empty_outcomes_have_likelihood_one():
    # The empty product: keeps additivity true for an empty part.
    assert likelihood("", {"a": 1.0}) == 1.0
    assert log_likelihood([], 0.3) == 0.0


def test_long_sequence_underflows_but_log_does_not():
    outcomes = [0, 1] * 1000
    assert likelihood(outcomes, 0.5) == 0.0  # 0.5^2000 < smallest float
    assert rel_close(log_likelihood(outcomes, 0.5), 2000 * math.log(0.5))


def test_binary_outcomes_in_several_spellings():
    expected = 0.7 * 0.3 * 0.7
    assert rel_close(likelihood([1, 0, 1], 0.7), expected)
    assert rel_close(likelihood([True, False, True], 0.7), expected)
    assert rel_close(likelihood("101", 0.7), expected)
    assert rel_close(likelihood((1.0, 0.0, 1.0), 0.7), expected)


def test_sequences_of_hashable_symbols():
    probs = {"cat": 0.5, "dog": 0.3, ("x", 1): 0.2}
    assert rel_close(likelihood(["cat", ("x", 1), "cat"], probs), 0.5 * 0.2 * 0.5)


def test_sum_tolerance():
    assert rel_close(likelihood("ab", {"a": 0.5, "b": 0.5 + 5e-10}), 0.5 * (0.5 + 5e-10))
    with pytest.raises(ValueError, match="sum to 1"):
        likelihood("ab", {"a": 0.5, "b": 0.5 + 2e-9})


def test_mle_single_symbol():
    result = mle("aaa")
    assert result.estimate == {"a": 1.0}
    assert result.likelihood == 1.0
    assert result.log_likelihood == 0.0
    assert result.formula == "p(a)^3"
    assert result.numerical == {"a": 1.0}
    assert result.derivation is None


def test_mle_with_unseen_symbols():
    result = mle("aab", symbols="abc")
    assert result.estimate == pytest.approx({"a": 2 / 3, "b": 1 / 3, "c": 0.0}, rel=1e-15)
    assert result.numerical["c"] == 0.0
    assert result.formula == "p(a)^2 p(b)"
    assert rel_close(result.likelihood, (2 / 3) ** 2 / 3)


def test_mle_of_binary_outcomes_names_p_after_one():
    result = mle([1, 0, 0, 1, 0])
    assert result.parameter == 1
    assert result.formula == "p^2 (1-p)^3"
    assert result.estimate == {1: 0.4, 0: 0.6}
    all_ones = mle([1, 1, 1])
    assert all_ones.estimate == {1: 1.0, 0: 0.0}
    assert all_ones.formula == "p^3"


def test_mle_general_formula_and_json():
    result = mle(["cat", "dog", "cat", "bird"])
    assert result.formula == "p(cat)^2 p(dog) p(bird)"
    assert result.parameter is None
    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert payload["estimate"] == {"cat": 0.5, "dog": 0.25, "bird": 0.25}
    assert payload["fractions"] == {"cat": "1/2", "dog": "1/4", "bird": "1/4"}
    assert rel_close(payload["likelihood"], 0.5**2 * 0.25 * 0.25)


# --------------------------------------------------------------------------------------------
# errors name what is wrong


@pytest.mark.parametrize(
    ("outcomes", "probs", "message"),
    [
        ("ab", {"a": 1.5, "b": -0.5}, r"probability of 'a' is 1.5, outside \[0, 1\]"),
        ("ab", {"a": 0.5, "b": math.nan}, r"probability of 'b' is nan"),
        ("ab", {"a": 0.5, "b": "0.5"}, r"probability of 'b' must be a real number"),
        ("ab", {"a": 0.5, "b": True}, r"probability of 'b' must be a real number"),
        ("ab", {"a": 0.5, "b": 0.4}, r"must sum to 1 .* got 0.9"),
        ("abz", {"a": 0.5, "b": 0.5}, r"symbol 'z' appears in the outcomes but has no probability"),
        ([0, 2, 1], 0.5, r"outcomes must be 0 or 1, got 2 at index 1"),
        ("01x", 0.5, r"got 'x' at index 2"),
        ("ab", 1.5, r"probability of 1 is 1.5"),
        ("ab", [0.5, 0.5], r"probs must be a mapping"),
        ({"a", "b"}, {"a": 0.5, "b": 0.5}, r"outcomes must be a string .* got set"),
        (5, {"a": 1.0}, r"got int"),
        ([["a"]], {"a": 1.0}, r"outcome \['a'\] at index 0 is not hashable"),
    ],
)
def test_errors_name_the_problem(outcomes, probs, message):
    with pytest.raises(ValueError, match=message):
        likelihood(outcomes, probs)
    with pytest.raises(ValueError, match=message):
        log_likelihood(outcomes, probs)


def test_mle_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no outcomes"):
        mle("")
    with pytest.raises(ValueError, match=r"outcome \{'a': 1\} at index 1 is not hashable"):
        mle(["a", {"a": 1}])
    with pytest.raises(ValueError, match=r"outcome \['c'\] at index 2 is not hashable"):
        mle("ab", symbols=["a", "b", ["c"]])
