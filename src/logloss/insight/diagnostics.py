"""Where a classifier's cross-entropy comes from, on a whole dataset, from its logits alone.

Given the logits ``z`` (N, C) of a model on N samples and their true classes ``y`` (N,), one call
to :func:`evaluate_logits` computes everything ``logloss evaluate`` reports:

- accuracy; mean cross-entropy ``L = -1/N sum_i ln p_i[y_i]`` (nats) and its perplexity ``e^L``;
  the multiclass Brier score; the ``ln C`` loss of a uniform guess;
- per-class accuracy and mean loss; the confusion matrix (rows: true class, columns: predicted);
- calibration: the reliability bins, the expected and maximum calibration errors (ECE, MCE),
  class-wise ECE (:mod:`.binning`);
- the hardest samples (largest ``-ln p(true)``), the most confident mistakes, and the share of
  the total loss carried by the worst 1% of samples;
- optionally temperature scaling fitted on a validation split (:mod:`.temperature`).

Everything is arithmetic on the ``(N, C)`` array in float64, through the same streaming sums
(:mod:`.accumulators`) that evaluate a predictions file of any size block by block; here the
whole array is one block, and the per-sample arrays are kept for figures.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from logloss.insight.accumulators import (
    DEFAULT_TOP_K,
    MAX_CONFUSION_CLASSES,
    WORST_FRACTION,
    Accumulator,
)
from logloss.insight.binning import (
    DEFAULT_BINS,
    Reliability,
    ReliabilitySums,
    check_binning,
    reliability,
)
from logloss.insight.checks import check_pair
from logloss.insight.evaluation import Evaluation, Examples, Temperature, loss_concentration
from logloss.insight.kinds import score
from logloss.insight.temperature import (
    TEMPERATURE_RANGE,
    Blocks,
    check_fit_rows,
    fit_temperature,
    fit_temperature_blocks,
    log_probabilities,
    scaled_nll,
)

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_TOP_K",
    "MAX_CONFUSION_CLASSES",
    "TEMPERATURE_RANGE",
    "WORST_FRACTION",
    "Evaluation",
    "Examples",
    "Reliability",
    "Temperature",
    "brier_score",
    "confusion_matrix",
    "evaluate_logits",
    "fit_temperature",
    "loss_concentration",
    "reliability",
    "temperature_result",
]


def brier_score(probabilities: np.ndarray, target: np.ndarray) -> float:
    """Multiclass Brier score, scikit-learn's multiclass definition (range [0, 2]).

    ``B = 1/N sum_i sum_c (p_ic - [c == y_i])^2``  (not halved; a binary problem scored this way
    gives twice scikit-learn's default binary value).

    Args:
        probabilities: (N, C) rows summing to 1.
        target: (N,) integer classes.

    >>> brier_score(np.array([[0.8, 0.2], [0.4, 0.6]]), np.array([0, 0]))
    0.4
    """
    rows = np.arange(len(target))
    residual = np.array(probabilities, dtype=np.float64)  # (N, C) copy: p - onehot(y)
    residual[rows, target] -= 1.0
    return float(np.einsum("ij,ij->", residual, residual) / len(target))


def confusion_matrix(target: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``M[t, p]`` of samples with true class ``t`` predicted as ``p``, (C, C) int64.

    >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2).tolist()
    [[1, 0], [1, 1]]
    """
    flat = np.bincount(target * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def evaluate_logits(
    logits: Any,
    target: Any,
    *,
    validation_logits: Any = None,
    validation_target: Any = None,
    n_bins: int = DEFAULT_BINS,
    binning: str = "uniform",
    top_k: int = DEFAULT_TOP_K,
    worst_fraction: float = WORST_FRACTION,
) -> Evaluation:
    """Every diagnostic of ``logloss evaluate`` from one array of logits (see the module doc).

    ``loss = -1/N sum_i ln softmax(z_i)[y_i]``; ``perplexity = e^loss``; ``brier`` as in
    :func:`brier_score`; calibration as in :func:`reliability`; with validation logits, the
    temperature of :func:`fit_temperature` and the loss and ECE it gives on this split.

    Args:
        logits: (N, C) float logits (float16/32/64; computed in float64).
        target: (N,) integer classes in [0, C).
        validation_logits, validation_target: (M, C), (M,) for temperature scaling, or None.
        n_bins: reliability bins.
        binning: ``"uniform"`` (equal width) or ``"quantile"`` (equal counts).
        top_k: how many hardest samples and confident mistakes to keep.
        worst_fraction: the fraction of samples whose share of the loss is reported.

    >>> e = evaluate_logits(np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([0, 0]))
    >>> e.accuracy, round(e.loss, 4), e.confusion.tolist()
    (0.5, 0.7201, [[1, 1], [0, 0]])
    """
    z, y = check_pair(logits, target, "evaluated")
    check_options(n_bins, binning, top_k, worst_fraction)
    if (validation_logits is None) != (validation_target is None):
        raise ValueError("give both validation_logits and validation_target, or neither")
    fit = None
    if validation_logits is not None:
        fit = check_pair(validation_logits, validation_target, "validation")
        if fit[0].shape[1] != z.shape[1]:
            raise ValueError(
                f"validation logits have {fit[0].shape[1]} classes, the evaluated ones "
                f"{z.shape[1]}; both must come from the same model"
            )
        check_fit_rows(*fit)
    sums = Accumulator(
        z.shape[1],
        n_bins=n_bins,
        binning=binning,
        top_k=top_k,
        worst_fraction=worst_fraction,
        expected_rows=len(y),
        keep_rows=True,
    )
    block = score(z, y, "logits")
    sums.add(block)
    evaluation = sums.finish()
    if fit is None:
        return evaluation
    t = fit_temperature_blocks(lambda: [fit])
    after = ScaledSums(n_bins, binning)
    after.add(z / t, y, block.predicted)
    return replace(evaluation, temperature=temperature_result(t, lambda: [fit], evaluation, after))


def check_options(n_bins: int, binning: str, top_k: int, worst_fraction: float) -> None:
    """The options every evaluation shares, or a ValueError naming the bad one."""
    check_binning(n_bins, binning)
    if not 0 < worst_fraction <= 1:
        raise ValueError(f"worst_fraction must be in (0, 1], got {worst_fraction}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")


class ScaledSums:
    """The evaluated rows after temperature scaling: their loss and top-label calibration.

    Dividing by ``T > 0`` keeps every row's argmax, so the predictions (and accuracy) stay; the
    confidences change.
    """

    def __init__(self, n_bins: int, binning: str) -> None:
        self.rows, self.loss_sum = 0, 0.0
        self.reliability = ReliabilitySums(n_bins, binning)

    def add(self, scaled: np.ndarray, target: np.ndarray, predicted: np.ndarray) -> None:
        """``scaled`` (n, C) = temperature logits / T, ``target`` and ``predicted`` (n,)."""
        rows = np.arange(len(target))
        log_p = log_probabilities(scaled)
        self.rows += len(target)
        self.loss_sum += float(-log_p[rows, target].sum())
        self.reliability.add(np.exp(log_p[rows, predicted]), predicted == target)


def temperature_result(
    t: float, fit_blocks: Blocks, evaluation: Evaluation, after: ScaledSums
) -> Temperature:
    """The :class:`Temperature` record: T, the fitting rows' loss at 1 and at T, and the
    evaluated rows' loss and ECE before (``evaluation``) and after (``after``) scaling."""
    bins_after = after.reliability.finish()
    fit_size, fit_loss_before = scaled_nll(fit_blocks, 1.0, with_rows=True)
    return Temperature(
        temperature=t,
        fit_size=fit_size,
        fit_loss_before=fit_loss_before,
        fit_loss_after=scaled_nll(fit_blocks, 1.0 / t)[0],
        loss_before=evaluation.loss,
        loss_after=after.loss_sum / after.rows,
        ece_before=evaluation.reliability.ece,
        ece_after=bins_after.ece,
        at_bound=not TEMPERATURE_RANGE[0] < t < TEMPERATURE_RANGE[1],
        reliability_after=bins_after,
    )
