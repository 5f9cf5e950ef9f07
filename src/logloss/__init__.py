"""logloss: cross-entropy (log loss) you can compute, verify, train with and explain.

The math follows the article "Cross Entropy, or Log Loss": likelihood -> log-likelihood ->
sigmoid/softmax -> cross-entropy = softmax + negative log-likelihood.  Every public function
accepts NumPy arrays or torch tensors and returns the same kind.
"""

from logloss._version import __version__
from logloss.activations import log_sigmoid, log_softmax, logsumexp, sigmoid, softmax
from logloss.likelihood import likelihood, log_likelihood, mle
from logloss.losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    nll_loss,
)

__all__ = [
    "__version__",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
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
