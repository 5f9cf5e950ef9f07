"""Likelihood, log-likelihood and the maximum-likelihood estimate of a categorical generator.

The article's first story: a generator emits symbol ``s`` with probability ``p_s``; the
probability of an observed sequence (its *likelihood*) is the product of the probabilities of its
symbols, which depends only on the counts ``c_s``::

    L = prod_s p_s ** c_s            log L = sum_s c_s ln p_s

Five balls ``"wbwbb"`` with ``P(b) = p`` have ``L(p) = p^3 (1-p)^2``; setting ``dL/dp = 0`` gives
``p = 3/5``.  In general the maximum is at ``p_s = c_s / n`` (:func:`mle`), which this module also
finds numerically, by maximising ``log L`` with an optimiser, as a machine check of the derivation.

Outcomes are a string of one-character symbols (``"wbwbb"``), a sequence of hashable symbols
(``["cat", "dog"]``) or, with ``probs`` given as one number ``P(1)``, a sequence of 0/1.
"""

from __future__ import annotations

import html
import math
import numbers
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

# Probabilities must sum to 1 within this (absolute) tolerance.
SUM_TOLERANCE = 1e-9

__all__ = ["SUM_TOLERANCE", "MLEResult", "likelihood", "log_likelihood", "mle"]


# --------------------------------------------------------------------------------------------
# validation (the public functions call these; the kernels below only compute)


def _as_outcomes(outcomes: Any) -> list[Hashable]:
    """The outcomes as a list of symbols (a string -> its characters); :func:`_count` checks
    that they are hashable."""
    if isinstance(outcomes, str):
        return list(outcomes)
    if isinstance(outcomes, (Mapping, set, frozenset)) or not isinstance(outcomes, Iterable):
        raise ValueError(
            f"outcomes must be a string of symbols or a sequence of symbols, got "
            f"{type(outcomes).__name__}; pass e.g. 'wbwbb' or ['w', 'b', 'w']"
        )
    return list(outcomes)


def _count(symbols: list[Hashable]) -> Counter:
    """``Counter(symbols)``; on an unhashable symbol, a ValueError naming it and its index.

    Counter hashes every symbol once; the slower search for the bad one runs only on failure.
    """
    try:
        return Counter(symbols)
    except TypeError:
        for index, symbol in enumerate(symbols):
            try:
                hash(symbol)
            except TypeError:
                raise ValueError(
                    f"outcome {symbol!r} at index {index} is not hashable "
                    f"({type(symbol).__name__}); use strings, numbers or tuples as symbols"
                ) from None
        raise  # a TypeError from elsewhere (e.g. a symbol whose __eq__ fails): not ours to hide


def _check_probability(symbol: Hashable, value: Any) -> float:
    """``value`` as a float in [0, 1], or a ValueError naming ``symbol``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"probability of {symbol!r} must be a real number in [0, 1], got {value!r} "
            f"({type(value).__name__})"
        )
    p = float(value)
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"probability of {symbol!r} is {p!r}, outside [0, 1]")
    return p


def _binary_outcomes(symbols: list[Hashable]) -> list[int]:
    """0/1 outcomes as ints; characters '0'/'1' of a string count too."""
    result = []
    for index, symbol in enumerate(symbols):
        if symbol in ("0", "1") or (isinstance(symbol, numbers.Real) and symbol in (0, 1)):
            result.append(int(symbol))
        else:
            raise ValueError(
                f"with probs given as one number P(1), outcomes must be 0 or 1, "
                f"got {symbol!r} at index {index}; pass a mapping symbol -> probability instead"
            )
    return result


def _as_model(outcomes: Any, probs: Any) -> tuple[Counter, dict[Hashable, float]]:
    """Validated (counts, probabilities) for :func:`likelihood` and :func:`log_likelihood`."""
    symbols = _as_outcomes(outcomes)
    if isinstance(probs, Mapping):
        model = {symbol: _check_probability(symbol, p) for symbol, p in probs.items()}
        total = math.fsum(model.values())
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise ValueError(
                f"probabilities must sum to 1 (within {SUM_TOLERANCE:g}), got {total!r} "
                f"for {sorted(map(repr, model))}; include every symbol and normalise"
            )
        counts = _count(symbols)
        for symbol in counts:
            if symbol not in model:
                raise ValueError(
                    f"symbol {symbol!r} appears in the outcomes but has no probability; "
                    f"probs has {sorted(map(repr, model))}"
                )
        return counts, model
    if isinstance(probs, numbers.Real) and not isinstance(probs, bool):
        p_one = _check_probability(1, probs)
        # P(0) = 1 - P(1) by construction, so no sum check is needed.
        return Counter(_binary_outcomes(symbols)), {1: p_one, 0: 1.0 - p_one}
    raise ValueError(
        f"probs must be a mapping symbol -> probability (or one number P(1) for 0/1 outcomes), "
        f"got {type(probs).__name__}"
    )


# --------------------------------------------------------------------------------------------
# kernels


def _log_likelihood(counts: Mapping[Hashable, int], model: Mapping[Hashable, float]) -> float:
    # sum_s c_s ln p_s; a seen symbol with p_s = 0 makes the outcome impossible: -inf.
    terms = []
    for symbol, count in counts.items():
        p = model[symbol]
        if count == 0:
            continue
        if p == 0.0:
            return -math.inf
        terms.append(count * math.log(p))
    return math.fsum(terms)


def _likelihood(counts: Mapping[Hashable, int], model: Mapping[Hashable, float]) -> float:
    # prod_s p_s^c_s, as a product rather than exp(log L) so that e.g. 0.6^3 * 0.4^2 is exact
    # to rounding; long sequences underflow to 0.0 -- the reason log_likelihood exists.
    return math.prod(model[symbol] ** count for symbol, count in counts.items())


# --------------------------------------------------------------------------------------------
# public API


def likelihood(outcomes: Any, probs: Any) -> float:
    """Probability of the observed outcomes under a categorical generator.

    ``L = prod_i P(outcome_i) = prod_s p_s ** c_s`` where ``c_s`` counts symbol ``s``.

    Args:
        outcomes: a string of symbols, a sequence of hashable symbols, or a sequence of 0/1.
        probs: mapping symbol -> probability (in [0, 1], summing to 1 within 1e-9; symbols that
            never occur are allowed), or one number ``P(1)`` for 0/1 outcomes.

    Returns:
        ``L`` as a float (1.0 for no outcomes; underflows to 0.0 for long sequences -- use
        :func:`log_likelihood`).

    Raises:
        ValueError: a probability outside [0, 1], probabilities not summing to 1, an outcome
            without a probability, or non-0/1 outcomes with a number ``probs``.

    >>> round(likelihood("wbwbb", {"b": 0.6, "w": 0.4}), 12)  # 0.6^3 * 0.4^2
    0.03456
    >>> likelihood([1, 0, 1], 0.5)
    0.125
    """
    counts, model = _as_model(outcomes, probs)
    return _likelihood(counts, model)


def log_likelihood(outcomes: Any, probs: Any) -> float:
    """Natural log of :func:`likelihood`, computed as a sum so that it never underflows.

    ``log L = sum_s c_s ln p_s``; ``-inf`` when an observed symbol has probability 0.  It is
    additive: ``log L(E1) + log L(E2) = log L(E1 followed by E2)``.

    Args and errors as :func:`likelihood`.

    Returns:
        ``log L`` as a float in ``[-inf, 0]``.

    >>> round(log_likelihood("wbwbb", {"b": 0.6, "w": 0.4}), 6)  # 3 ln 0.6 + 2 ln 0.4
    -3.365058
    >>> log_likelihood("bb", {"b": 0.0, "w": 1.0})
    -inf
    """
    counts, model = _as_model(outcomes, probs)
    return _log_likelihood(counts, model)


@dataclass(frozen=True)
class MLEResult:
    """The maximum-likelihood estimate of a categorical generator from observed outcomes.

    Attributes:
        n: number of outcomes.
        counts: symbol -> count, in order of first appearance (then unseen ``symbols``).
        estimate: symbol -> ``count / n``, the closed-form maximiser of ``L``.
        likelihood: ``L`` at the estimate.
        log_likelihood: ``log L`` at the estimate.
        formula: the likelihood as a formula of the probabilities, e.g. ``"p^3 (1-p)^2"``.
        parameter: for two symbols, the symbol whose probability is ``p`` in ``formula``
            (``1`` for 0/1 outcomes, else the most frequent symbol); ``None`` otherwise.
        numerical: symbol -> probability found by maximising ``log L`` numerically
            (``None`` when not requested).
        numerical_method: how ``numerical`` was found.
        numerical_iterations: Newton steps taken.
        max_difference: ``max_s |numerical_s - estimate_s|``.
    """

    n: int
    counts: dict[Hashable, int]
    estimate: dict[Hashable, float]
    likelihood: float
    log_likelihood: float
    formula: str
    parameter: Hashable | None
    numerical: dict[Hashable, float] | None
    numerical_method: str | None
    numerical_iterations: int | None
    max_difference: float | None

    @property
    def derivation(self) -> str | None:
        """The article's calculus for two symbols seen ``a`` and ``b`` times, as text.

        ``dL/dp = a p^(a-1) (1-p)^b - b p^a (1-p)^(b-1) = 0  ->  a (1-p) = b p  ->  p = a/n``
        (dividing by ``p^(a-1) (1-p)^(b-1)``); None unless two symbols both occur.

        >>> mle("wbwbb", numerical=False).derivation
        'dL/dp = 3p^2 (1-p)^2 - 2p^3 (1-p) = 0  ->  3(1-p) = 2p  ->  p = 3/5'
        >>> mle("aab", numerical=False).derivation
        'dL/dp = 2p (1-p) - p^2 = 0  ->  2(1-p) = p  ->  p = 2/3'
        """
        if self.parameter is None:
            return None
        a = self.counts[self.parameter]
        b = self.n - a
        if a == 0 or b == 0:
            return None

        def term(coefficient: int, p_exponent: int, q_exponent: int) -> str:
            powers = " ".join(
                x for x in (_power("p", p_exponent), _power("(1-p)", q_exponent)) if x
            )
            if coefficient == 1:  # "p^2", not "1p^2"
                return powers or "1"
            return f"{coefficient}{powers}"

        def times(coefficient: int, factor: str) -> str:
            return factor if coefficient == 1 else f"{coefficient}{factor}"

        return (
            f"dL/dp = {term(a, a - 1, b)} - {term(b, a, b - 1)} = 0  ->  "
            f"{times(a, '(1-p)')} = {times(b, 'p')}  ->  p = {a}/{self.n}"
        )

    def __repr__(self) -> str:
        estimate = ", ".join(f"{s}: {self.fraction(s)}" for s in self.counts)
        return f"<MLEResult of {self.n} outcomes: L = {self.formula}, maximum at {{{estimate}}}>"

    def _repr_html_(self) -> str:
        """Counts, estimates and the likelihood as an HTML table, for Jupyter."""
        rows = "".join(
            f"<tr><td>{html.escape(str(s))}</td><td>{c}</td><td>{self.fraction(s)}</td>"
            f"<td>{self.estimate[s]:.6g}</td></tr>"
            for s, c in self.counts.items()
        )
        derivation = self.derivation
        lines = [
            f"L = {self.formula} = {self.likelihood:.6g} at the estimate; "
            f"ln L = {self.log_likelihood:.6g}",
            *([derivation] if derivation else []),
        ]
        text = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
        return (
            '<div class="logloss-mle"><table><thead><tr><th>outcome</th><th>count</th>'
            f"<th>estimate</th><th></th></tr></thead><tbody>{rows}</tbody></table>{text}</div>"
        )

    def fraction(self, symbol: Hashable) -> Fraction:
        """The estimate of ``symbol`` as an exact fraction ``count / n`` (reduced)."""
        return Fraction(self.counts[symbol], self.n)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary; symbols become strings (``str(symbol)``)."""

        def keyed(mapping: Mapping[Hashable, Any] | None) -> dict[str, Any] | None:
            return None if mapping is None else {str(s): v for s, v in mapping.items()}

        return {
            "n": self.n,
            "counts": keyed(self.counts),
            "estimate": keyed(self.estimate),
            "fractions": {str(s): str(self.fraction(s)) for s in self.counts},
            "likelihood": self.likelihood,
            "log_likelihood": self.log_likelihood,
            "formula": self.formula,
            "parameter": None if self.parameter is None else str(self.parameter),
            "numerical": keyed(self.numerical),
            "numerical_method": self.numerical_method,
            "numerical_iterations": self.numerical_iterations,
            "max_difference": self.max_difference,
        }


def _power(base: str, exponent: int) -> str:
    """``base^exponent`` written the way a person would (``p``, ``p^3``; ``''`` for ^0)."""
    if exponent == 0:
        return ""
    return base if exponent == 1 else f"{base}^{exponent}"


def _formula(counts: Mapping[Hashable, int], parameter: Hashable | None) -> str:
    """The likelihood as a product of powers: ``p^3 (1-p)^2`` or ``p(a)^2 p(b) p(c)^3``."""
    if parameter is not None:  # two symbols: p and 1 - p
        (other,) = (s for s in counts if s != parameter)
        factors = [_power("p", counts[parameter]), _power("(1-p)", counts[other])]
    else:
        factors = [_power(f"p({symbol})", count) for symbol, count in counts.items()]
    return " ".join(f for f in factors if f) or "1"


def _is_binary(symbols: list[Hashable]) -> bool:
    """True for a sequence of the numbers 0/1 (not the characters '0'/'1' of a string)."""
    return all(
        isinstance(s, numbers.Real) and not isinstance(s, float) and s in (0, 1) for s in symbols
    )


# Newton's method stops when the Newton decrement d^T (-H) d (twice the predicted gain in the
# mean log-likelihood) falls below this, or when no step of any length raises log L in float64.
NEWTON_DECREMENT_TOLERANCE = 1e-30
NEWTON_MAX_STEPS = 500
NEWTON_MAX_HALVINGS = 60  # 2^-60 of a step is below float64's resolution of p


def _newton_direction(weights: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, float]:
    """Newton's step for maximising ``f(p) = sum_s w_s ln p_s`` subject to ``sum_s p_s = 1``.

    Only the derivatives of ``w ln p`` are used: ``g_s = w_s / p_s`` and the diagonal Hessian
    ``H_s = -w_s / p_s^2``.  The equality-constrained Newton (KKT) system
    ``[H 1; 1^T 0] [d; lam] = [-g; 0]`` has, for a diagonal ``H``, the solution
    ``d = h (g + lam)`` with ``h = -1/H = p^2 / w`` and ``lam = -sum(h g) / sum(h)``
    (so that ``sum d = 0``).  Returns ``(d, d^T (-H) d)``; shapes (K,).
    """
    gradient = weights / p  # (K,)
    h = p * p / weights  # (K,) -1 / H, positive
    lam = -float(h @ gradient) / float(h.sum())
    direction = h * (gradient + lam)  # (K,) sums to 0
    decrement = float(direction @ (direction / h))
    return direction, decrement


def _backtrack(
    weights: np.ndarray, p: np.ndarray, direction: np.ndarray, decrement: float
) -> np.ndarray | None:
    """``q = (p + t d) / sum(p + t d)`` for the first ``t`` in 1, 1/2, 1/4, ... that keeps
    every ``q_s > 0`` and raises ``f`` by at least ``t decrement / 4`` (Armijo); None when none
    does in float64.

    ``sum d`` is 0 only up to rounding, hence the division, which keeps ``q`` on the simplex.  The
    gain ``f(q) - f(p) = sum_s w_s log1p(t d_s / p_s) - log1p(t sum d)`` (``sum w = sum p = 1``) is
    computed from log1p terms, not as a difference of two sums of logs, so that it stays accurate
    far below the rounding of ``f`` itself (the last steps of the iteration).
    """
    step = 1.0
    for _ in range(NEWTON_MAX_HALVINGS):
        ratio = step * direction / p  # (K,) relative change of each p_s
        if np.all(ratio > -1.0):
            drift = step * float(direction.sum())  # rounding's departure from sum p = 1
            gain = float(weights @ np.log1p(ratio)) - math.log1p(drift)
            if gain >= 0.25 * step * decrement:
                candidate = p + step * direction
                return candidate / candidate.sum()
        step *= 0.5
    return None


def _numerical_mle(counts: Mapping[Hashable, int]) -> tuple[dict[Hashable, float], int]:
    """Maximise ``log L`` over the probability simplex by Newton's method (NumPy, float64).

    Maximises ``(1/n) log L = sum_s (c_s / n) ln p_s`` (O(1) for any n), a concave function,
    subject to ``sum_s p_s = 1``, from the uniform guess, with damped Newton steps
    (:func:`_newton_direction`, :func:`_backtrack`).  The iteration uses only the derivatives of
    ``c ln p``, never the closed form ``c / n``: that it lands there checks the derivation.
    Only symbols that occur are optimised: for an unseen symbol, moving its probability to a
    seen one raises ``L``, so its maximum-likelihood probability is 0 (a boundary point).
    """
    seen = [s for s, c in counts.items() if c > 0]
    result = {s: 0.0 for s in counts}
    if len(seen) == 1:  # nothing to optimise: all the mass is on the only symbol seen
        result[seen[0]] = 1.0
        return result, 0
    weights = np.array([counts[s] for s in seen], dtype=np.float64)
    weights /= weights.sum()  # (K,) c_s / n
    p = np.full(len(seen), 1.0 / len(seen))  # (K,) the uniform guess
    steps = 0
    while steps < NEWTON_MAX_STEPS:
        direction, decrement = _newton_direction(weights, p)
        if decrement <= NEWTON_DECREMENT_TOLERANCE:
            break
        stepped = _backtrack(weights, p, direction, decrement)
        if stepped is None:  # converged to float64's rounding: no step raises log L any more
            break
        p, steps = stepped, steps + 1
    result.update(zip(seen, p.tolist(), strict=True))
    return result, steps


def mle(
    outcomes: Any, *, symbols: Iterable[Hashable] | None = None, numerical: bool = True
) -> MLEResult:
    """Maximum-likelihood estimate of the generator behind ``outcomes``: ``p_s = c_s / n``.

    Derivation (Lagrange multiplier for ``sum_s p_s = 1``): maximise ``sum_s c_s ln p_s``;
    ``c_s / p_s = lambda`` for all ``s``, so ``p_s = c_s / n``.  For two symbols this is the
    article's ``dL/dp = 3p^2(1-p)^2 - 2p^3(1-p) = 0  ->  p = 3/5``.

    Args:
        outcomes: a non-empty string of symbols or sequence of hashable symbols.  A sequence of
            the integers 0/1 always has both symbols 0 and 1, with ``p = P(1)``.
        symbols: extra symbols the generator may emit that were not observed (estimate 0).
        numerical: also maximise ``log L`` numerically (Newton's method on the simplex, in
            NumPy) and report the largest difference from the closed form.

    Returns:
        :class:`MLEResult`.

    Raises:
        ValueError: no outcomes, or an unhashable symbol.

    >>> result = mle("wbwbb")
    >>> result.estimate, result.formula, round(result.likelihood, 12)
    ({'w': 0.4, 'b': 0.6}, 'p^3 (1-p)^2', 0.03456)
    >>> result.max_difference < 1e-12
    True
    """
    observed = _as_outcomes(outcomes)
    if not observed:
        raise ValueError("no outcomes: the maximum-likelihood estimate needs at least one")
    counts: dict[Hashable, int] = dict(_count(observed))
    extra = list(_count(_as_outcomes(list(symbols)))) if symbols is not None else []
    if _is_binary(observed):
        extra += [1, 0]
    for symbol in extra:
        counts.setdefault(symbol, 0)

    n = len(observed)
    estimate = {symbol: count / n for symbol, count in counts.items()}
    parameter: Hashable | None = None
    if len(counts) == 2:
        # p is P(1) for 0/1 outcomes, else the most frequent symbol (first seen on a tie).
        parameter = 1 if _is_binary(list(counts)) else max(counts, key=counts.__getitem__)

    found, method, iterations, difference = None, None, None, None
    if numerical:
        found, iterations = _numerical_mle(counts)
        method = "Newton's method on log L with sum p = 1, float64"
        difference = max(abs(found[s] - estimate[s]) for s in counts)
    return MLEResult(
        n=n,
        counts=counts,
        estimate=estimate,
        likelihood=_likelihood(counts, estimate),
        log_likelihood=_log_likelihood(counts, estimate),
        formula=_formula(counts, parameter),
        parameter=parameter,
        numerical=found,
        numerical_method=method,
        numerical_iterations=iterations,
        max_difference=difference,
    )
