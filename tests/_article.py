"""Shared test constants and helpers: the article's logits, math-module references, tolerances.

Imported by the test modules as ``from _article import ...`` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import math

import numpy as np

# The logits the article prints (``model(x)`` before and after training); the true class is 7.
UNTRAINED = [0.0297, -0.0440, -0.0442, 0.0194, 0.0293, 0.0036, -0.0047, 0.0073, 0.0407, -0.0544]
TRAINED = [0.7090, -5.7430, 2.7101, 4.5032, -4.2269, 0.7165, -9.6999, 10.0532, -0.4749, 2.4612]
TARGET = 7
# The loss the article printed for the untrained model (class 8's loss, not class 7's).
REPORTED_UNTRAINED_LOSS = 2.2604


def math_softmax(z: list[float]) -> list[float]:
    """softmax(z) written out with the math module: an independent reference."""
    m = max(z)
    e = [math.exp(v - m) for v in z]
    total = math.fsum(e)
    return [v / total for v in e]


def neg_log_softmax(z: list[float], k: int) -> float:
    """``-ln softmax(z)_k = logsumexp(z) - z_k`` with the math module: the reference loss."""
    m = max(z)
    return -(z[k] - m - math.log(math.fsum(math.exp(v - m) for v in z)))


# --- tolerances (docs/losses.md, "Accuracy") -----------------------------------------------------
# Relative tolerance by dtype: float64 1e-12, float32 1e-5 (issue 2).  float16 results are
# computed in float32 and rounded once, so they are within one float16 step (2**-10 relative).
RTOL = {np.float64: 1e-12, np.float32: 1e-5, np.float16: 2.0**-10}
# Absolute floor for results near 0 (probabilities, gradients, small losses), tied to the dtype
# only: 16 units in the last place of 1 (a value like p - 1 near 0 carries an absolute error of a
# few of them, times a class weight).  float16 is computed in float32, so it gets float32's floor.
ATOL = {np.float64: 16 * 2.0**-52, np.float32: 16 * 2.0**-23, np.float16: 16 * 2.0**-23}
# The relative precision of the arithmetic itself (float16 is computed in float32).
COMPUTE_RTOL = {np.float64: 1e-12, np.float32: 1e-5, np.float16: 1e-5}


def to_numpy(x) -> np.ndarray:
    """A tensor (detached) or array-like as a NumPy array."""
    return x.detach().numpy() if hasattr(x, "detach") else np.asarray(x)


def magnitude(x) -> float:
    """Largest finite |x| (at least 1): log-space results carry an absolute error ~ eps * this."""
    x = np.asarray(to_numpy(x), dtype=np.float64)
    return float(np.max(np.abs(x[np.isfinite(x)]), initial=1.0))


def assert_close(actual, expected, dtype, *, scale: float = 0.0) -> None:
    """``actual`` within ``RTOL[dtype]`` relative of ``expected`` (NaN and inf must match).

    The absolute slack is ``ATOL[dtype]``, plus ``COMPUTE_RTOL[dtype] * scale`` for log-space
    results and losses (``x - max(x)`` rounds with an absolute error ~ eps * max|x|; pass
    ``scale=magnitude(x)``).  Probabilities and gradients get no scaling (``scale=0``).
    """
    dtype = np.dtype(dtype).type
    actual = np.asarray(to_numpy(actual), dtype=np.float64)
    expected = np.asarray(to_numpy(expected), dtype=np.float64)
    assert actual.shape == expected.shape
    atol = ATOL[dtype] + COMPUTE_RTOL[dtype] * scale
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=atol, equal_nan=True)
