"""What an evaluation holds: the numbers of ``logloss evaluate`` as plain dataclasses.

:class:`Evaluation` is built by :mod:`logloss.insight.accumulators` (block by block) for every
source, a checkpoint's logits or a predictions file; :meth:`Evaluation.to_dict` is the JSON
schema of docs/predictions.md (one schema for both sources).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from logloss.insight.binning import Reliability

BRIER_MULTICLASS = "mean_i sum_c (p_ic - [c = y_i])^2, in [0, 2] (not halved)"
BRIER_BINARY = "mean_i (P_i(1) - y_i)^2, in [0, 1] (scikit-learn's binary brier_score_loss)"


@dataclass(frozen=True)
class Examples:
    """A ranked selection of samples: their positions in the data and what the model said."""

    index: np.ndarray  # (k,) int64, row number in the evaluated data
    target: np.ndarray  # (k,) int64
    predicted: np.ndarray  # (k,) int64
    p_true: np.ndarray  # (k,) float64, p(target)
    p_predicted: np.ndarray  # (k,) float64, p(predicted) = the confidence
    loss: np.ndarray  # (k,) float64, -ln p(target)
    ids: tuple[str, ...] | None = None  # the rows' ids, when the source has them

    def __len__(self) -> int:
        return len(self.index)

    def to_dict(self) -> list[dict[str, Any]]:
        return [
            {
                "index": int(self.index[j]),
                "id": None if self.ids is None else self.ids[j],
                "target": int(self.target[j]),
                "predicted": int(self.predicted[j]),
                "p_true": float(self.p_true[j]),
                "p_predicted": float(self.p_predicted[j]),
                "loss": float(self.loss[j]),
            }
            for j in range(len(self.index))
        ]


@dataclass(frozen=True)
class Temperature:
    """Temperature scaling: logits divided by one scalar ``T`` fitted on held-out rows.

    ``fit_loss_*`` are the mean cross-entropies of the fitting rows at ``T = 1`` and at the
    fitted ``T``; ``loss_*`` and ``ece_*`` are measured on the evaluated rows before and after
    scaling.  ``at_bound`` is true when the optimum lies outside the search range.
    """

    temperature: float
    fit_size: int
    fit_loss_before: float
    fit_loss_after: float
    loss_before: float
    loss_after: float
    ece_before: float
    ece_after: float
    at_bound: bool
    reliability_after: Reliability = field(repr=False)  # the bins after scaling, for figures

    def to_dict(self) -> dict[str, Any]:
        return {
            "temperature": float(self.temperature),
            "fit_size": self.fit_size,
            "fit_loss_before": float(self.fit_loss_before),
            "fit_loss_after": float(self.fit_loss_after),
            "loss_before": float(self.loss_before),
            "loss_after": float(self.loss_after),
            "ece_before": float(self.ece_before),
            "ece_after": float(self.ece_after),
            "at_bound": self.at_bound,
        }


@dataclass(frozen=True)
class Evaluation:
    """Everything ``logloss evaluate`` reports about one set of predictions.

    The per-sample arrays (``losses``, ``target``, ``predicted``, ``confidence``) are kept by
    the one-shot :func:`~logloss.insight.diagnostics.evaluate_logits` for figures and the web
    app; a streamed evaluation leaves them ``None`` and draws the loss's Lorenz curve from
    ``concentration_points`` (exact at each point, see :mod:`.accumulators`).
    """

    size: int
    num_classes: int
    accuracy: float
    loss: float  # mean cross-entropy, nats
    perplexity: float  # exp(loss)
    brier: float  # BRIER_MULTICLASS, or BRIER_BINARY when ``binary``
    uniform_loss: float  # ln C
    errors: int
    class_count: np.ndarray  # (C,) int64
    class_accuracy: np.ndarray  # (C,) float64, NaN for a class absent from the data
    class_loss: np.ndarray  # (C,) float64
    confusion: np.ndarray | None  # (C, C) int64, [true, predicted]; None above 1000 classes
    reliability: Reliability
    classwise_ece: float
    hardest: Examples
    confident_mistakes: Examples
    worst_fraction: float
    worst_count: int
    worst_share: float  # share of sum_i loss_i carried by the worst_count largest losses
    temperature: Temperature | None
    concentration_points: tuple[np.ndarray, np.ndarray] = field(repr=False)  # (P,), (P,)
    binary: bool = False
    positive: Reliability | None = field(default=None, repr=False)  # binary: bins of P(1)
    losses: np.ndarray | None = field(default=None, repr=False)  # (N,) float64
    target: np.ndarray | None = field(default=None, repr=False)  # (N,) int64
    predicted: np.ndarray | None = field(default=None, repr=False)  # (N,) int64
    confidence: np.ndarray | None = field(default=None, repr=False)  # (N,) float64

    def concentration(self) -> tuple[np.ndarray, np.ndarray]:
        """The loss's Lorenz curve (share of samples worst first, share of the total loss)."""
        if self.losses is not None:
            return loss_concentration(self.losses)
        return self.concentration_points

    def to_dict(self) -> dict[str, Any]:
        """Summary of plain Python values (NaN for an empty bin or an absent class); print it
        with :func:`logloss._json.dumps`, which spells NaN as ``"NaN"``."""
        return {
            "size": self.size,
            "num_classes": self.num_classes,
            "binary": self.binary,
            "accuracy": float(self.accuracy),
            "loss": float(self.loss),
            "perplexity": float(self.perplexity),
            "brier": float(self.brier),
            "brier_definition": BRIER_BINARY if self.binary else BRIER_MULTICLASS,
            "uniform_loss": float(self.uniform_loss),
            "errors": self.errors,
            "per_class": [
                {
                    "class": c,
                    "count": int(self.class_count[c]),
                    "accuracy": float(self.class_accuracy[c]),
                    "loss": float(self.class_loss[c]),
                }
                for c in range(self.num_classes)
            ],
            "confusion": None if self.confusion is None else self.confusion.tolist(),
            "calibration": {
                "ece": float(self.reliability.ece),
                "mce": float(self.reliability.mce),
                "classwise_ece": float(self.classwise_ece),
                "binning": self.reliability.binning,
                "bins": self.reliability.to_dict(),
                "positive": None if self.positive is None else self.positive.to_dict(),
            },
            "temperature": None if self.temperature is None else self.temperature.to_dict(),
            "hardest": self.hardest.to_dict(),
            "confident_mistakes": self.confident_mistakes.to_dict(),
            "worst": {
                "fraction": self.worst_fraction,
                "count": self.worst_count,
                "share": float(self.worst_share),
            },
        }


def loss_concentration(losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The loss's Lorenz curve: share of samples (worst first) vs share of the total loss.

    ``x_k = k / N``, ``y_k = sum of the k largest losses / sum of all`` for k = 0..N.

    >>> x, y = loss_concentration(np.array([1.0, 3.0]))
    >>> x.tolist(), y.tolist()
    ([0.0, 0.5, 1.0], [0.0, 0.75, 1.0])
    """
    ordered = np.sort(np.asarray(losses, dtype=np.float64))[::-1]
    cumulative = np.concatenate([[0.0], np.cumsum(ordered)])
    total = cumulative[-1]
    share = cumulative / total if 0 < total < math.inf else np.zeros_like(cumulative)
    return np.linspace(0.0, 1.0, len(cumulative)), share
