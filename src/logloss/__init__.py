"""logloss: cross-entropy (log loss) you can compute, verify, train with and explain.

The math follows the article "Cross Entropy, or Log Loss": likelihood -> log-likelihood ->
sigmoid/softmax -> cross-entropy = softmax + negative log-likelihood.  Every public function
accepts NumPy arrays or torch tensors and returns the same kind.

``logloss.evaluate`` (any model's predictions) and ``logloss.evaluate_model`` (a torch model over
a loader) diagnose where a loss comes from; they load on first use, so ``import logloss`` stays
NumPy-only.
"""

from typing import Any

from logloss._version import __version__
from logloss.activations import log_sigmoid, log_softmax, logsumexp, sigmoid, softmax
from logloss.likelihood import likelihood, log_likelihood, mle
from logloss.losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    nll_loss,
)

# Loaded on first use (module __getattr__, PEP 562): name -> module holding it.
_LAZY = {
    "evaluate": "logloss.insight.in_memory",  # NumPy only
    "evaluate_model": "logloss.insight.model_evaluation",  # torch
}

__all__ = [
    "__version__",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "evaluate",
    "evaluate_model",
    "likelihood",
    "log_likelihood",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "mle",
    "nll_loss",
    "sigmoid",
    "softmax",
]


def __getattr__(name: str) -> Any:
    """``logloss.evaluate`` and ``logloss.evaluate_model``, imported when first used."""
    if name in _LAZY:
        import importlib  # only for the lazy names: `import logloss` stays NumPy-only

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'logloss' has no attribute {name!r}")
