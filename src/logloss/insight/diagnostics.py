"""Where a classifier's cross-entropy comes from, on a whole dataset, from its logits alone.

Given the logits ``z`` (N, C) of a model on N samples and their true classes ``y`` (N,), one call
to :func:`evaluate_logits` computes everything ``logloss evaluate`` reports:

- accuracy; mean cross-entropy ``L = -1/N sum_i ln p_i[y_i]`` (nats) and its perplexity ``e^L``;
  the multiclass Brier score; the ``ln C`` loss of a uniform guess;
- per-class accuracy and mean loss; the confusion matrix (rows: true class, columns: predicted);
- calibration: the reliability bins, the expected and maximum calibration errors (ECE, MCE);
- the hardest samples (largest ``-ln p(true)``), the most confident mistakes, and the share of
  the total loss carried by the worst 1% of samples;
- optionally temperature scaling fitted on a validation split (:func:`fit_temperature`).

Every number comes from the ``(N, C)`` logits: the model runs once over the data
(:func:`evaluate_checkpoint`), everything else is arithmetic on that array, in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from logloss.activations import log_softmax

DEFAULT_BINS = 15  # Guo et al. (2017), "On Calibration of Modern Neural Networks"
DEFAULT_TOP_K = 16
WORST_FRACTION = 0.01
# Temperature search interval: T in [1/100, 100] covers any model worth calibrating.
TEMPERATURE_RANGE = (1e-2, 1e2)
# Above this many classes the (C, C) confusion matrix is not built (10^4 classes = 800 MB).
MAX_CONFUSION_CLASSES = 1000


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Reliability:
    """Equal-width confidence bins: bin ``m`` holds the samples whose confidence is in
    ``(edges[m], edges[m+1]]`` (the first bin also holds confidence 0).

    ``confidence`` and ``accuracy`` are the bin means (NaN for an empty bin), ``count`` the
    number of samples; ``ece = sum_m count_m / N * |accuracy_m - confidence_m|`` and
    ``mce = max_m |accuracy_m - confidence_m|`` over the non-empty bins.
    """

    edges: np.ndarray  # (M+1,) float64, 0 .. 1
    count: np.ndarray  # (M,) int64
    confidence: np.ndarray  # (M,) float64
    accuracy: np.ndarray  # (M,) float64
    ece: float
    mce: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": _floats(self.edges),
            "count": self.count.tolist(),
            "confidence": _floats(self.confidence),
            "accuracy": _floats(self.accuracy),
            "ece": _float(self.ece),
            "mce": _float(self.mce),
        }


@dataclass(frozen=True)
class Examples:
    """A ranked selection of samples: their positions in the split and what the model said."""

    index: np.ndarray  # (k,) int64, position in the evaluated split
    target: np.ndarray  # (k,) int64
    predicted: np.ndarray  # (k,) int64
    p_true: np.ndarray  # (k,) float64, p(target)
    p_predicted: np.ndarray  # (k,) float64, p(predicted) = the confidence
    loss: np.ndarray  # (k,) float64, -ln p(target)

    def to_dict(self) -> list[dict[str, Any]]:
        return [
            {
                "index": int(self.index[j]),
                "target": int(self.target[j]),
                "predicted": int(self.predicted[j]),
                "p_true": _float(self.p_true[j]),
                "p_predicted": _float(self.p_predicted[j]),
                "loss": _float(self.loss[j]),
            }
            for j in range(len(self.index))
        ]


@dataclass(frozen=True)
class Temperature:
    """Temperature scaling: logits divided by one scalar ``T`` fitted on a validation split.

    ``fit_loss_*`` are the validation mean cross-entropies at ``T = 1`` and at the fitted ``T``;
    ``loss_*`` and ``ece_*`` are measured on the evaluated split before and after scaling.
    ``at_bound`` is true when the optimum lies outside :data:`TEMPERATURE_RANGE`.
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
            "temperature": _float(self.temperature),
            "fit_size": self.fit_size,
            "fit_loss_before": _float(self.fit_loss_before),
            "fit_loss_after": _float(self.fit_loss_after),
            "loss_before": _float(self.loss_before),
            "loss_after": _float(self.loss_after),
            "ece_before": _float(self.ece_before),
            "ece_after": _float(self.ece_after),
            "at_bound": self.at_bound,
        }


@dataclass(frozen=True)
class Evaluation:
    """Everything ``logloss evaluate`` reports about one set of logits (see the module doc).

    The per-sample arrays (``losses``, ``predicted``, ``confidence``) are kept for figures; they
    are left out of :meth:`to_dict`.
    """

    size: int
    num_classes: int
    accuracy: float
    loss: float  # mean cross-entropy, nats
    perplexity: float  # exp(loss)
    brier: float  # mean_i sum_c (p_ic - [c == y_i])^2, in [0, 2]
    uniform_loss: float  # ln C
    class_count: np.ndarray  # (C,) int64
    class_accuracy: np.ndarray  # (C,) float64, NaN for a class absent from the split
    class_loss: np.ndarray  # (C,) float64
    confusion: np.ndarray | None  # (C, C) int64, [true, predicted]; None above 1000 classes
    reliability: Reliability
    hardest: Examples
    confident_mistakes: Examples
    worst_fraction: float
    worst_count: int
    worst_share: float  # share of sum_i loss_i carried by the worst_count largest losses
    temperature: Temperature | None
    losses: np.ndarray = field(repr=False)  # (N,) float64
    target: np.ndarray = field(repr=False)  # (N,) int64
    predicted: np.ndarray = field(repr=False)  # (N,) int64
    confidence: np.ndarray = field(repr=False)  # (N,) float64

    def to_dict(self) -> dict[str, Any]:
        """Summary of plain Python values (NaN for an empty bin or an absent class); print it
        with :func:`logloss._json.dumps`, which spells NaN as ``"NaN"``."""
        return {
            "size": self.size,
            "num_classes": self.num_classes,
            "accuracy": _float(self.accuracy),
            "loss": _float(self.loss),
            "perplexity": _float(self.perplexity),
            "brier": _float(self.brier),
            "uniform_loss": _float(self.uniform_loss),
            "errors": int(np.count_nonzero(self.predicted != self.target)),
            "per_class": [
                {
                    "class": c,
                    "count": int(self.class_count[c]),
                    "accuracy": _float(self.class_accuracy[c]),
                    "loss": _float(self.class_loss[c]),
                }
                for c in range(self.num_classes)
            ],
            "confusion": None if self.confusion is None else self.confusion.tolist(),
            "calibration": {
                "ece": _float(self.reliability.ece),
                "mce": _float(self.reliability.mce),
                "bins": self.reliability.to_dict(),
            },
            "temperature": None if self.temperature is None else self.temperature.to_dict(),
            "hardest": self.hardest.to_dict(),
            "confident_mistakes": self.confident_mistakes.to_dict(),
            "worst": {
                "fraction": self.worst_fraction,
                "count": self.worst_count,
                "share": _float(self.worst_share),
            },
        }


def _float(x: float | np.floating) -> float:
    """A plain Python float (NaN and infinities too: :mod:`logloss._json` spells them)."""
    return float(x)


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in values]


# --------------------------------------------------------------------------- validation


def _check_logits(logits: Any, name: str = "logits") -> np.ndarray:
    """(N, C) float array without NaN or +inf, as float64."""
    array = np.asarray(logits)
    if array.ndim != 2 or array.shape[1] < 2:
        raise ValueError(
            f"{name} must have shape (N, C) with C >= 2 classes, got shape {array.shape}; "
            "pass one row of class scores per sample"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must be floating point, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if np.isnan(array).any() or np.isposinf(array).any():
        bad = int(np.argwhere(np.isnan(array) | np.isposinf(array))[0, 0])
        raise ValueError(
            f"{name} row {bad} contains NaN or +inf: {array[bad].tolist()}; "
            "a model's logits must be finite (-inf is allowed for a masked class)"
        )
    return array


def _check_labels(target: Any, size: int, num_classes: int, name: str = "target") -> np.ndarray:
    """(N,) integer class indices in [0, C), as int64."""
    array = np.asarray(target)
    if array.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},) to match the logits, got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    if size and (array.min() < 0 or array.max() >= num_classes):
        bad = int(array[(array < 0) | (array >= num_classes)][0])
        raise ValueError(f"{name} holds class {bad}, outside [0, {num_classes}) of the logits")
    return array.astype(np.int64, copy=False)


def _check_pair(logits: Any, target: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    z = _check_logits(logits, f"{name} logits")
    if z.shape[0] == 0:
        raise ValueError(f"{name} logits hold no samples; evaluate at least one")
    y = _check_labels(target, z.shape[0], z.shape[1], f"{name} target")
    return z, y


# --------------------------------------------------------------------------- kernels


def _log_probabilities(logits: np.ndarray) -> np.ndarray:
    """ln softmax(z) row-wise, (N, C) float64: log space so that ln p(true) never underflows."""
    return np.asarray(log_softmax(logits, axis=-1), dtype=np.float64)


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


def reliability(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = DEFAULT_BINS
) -> Reliability:
    """Reliability bins and calibration errors of top-class confidences.

    ``ECE = sum_m |B_m|/N |acc(B_m) - conf(B_m)|``, ``MCE = max_m |acc(B_m) - conf(B_m)|`` with
    equal-width bins ``B_m = ((m-1)/M, m/M]`` (Guo et al., 2017).

    Args:
        confidence: (N,) the probability of the predicted class, in [0, 1].
        correct: (N,) bool, prediction == target.
        n_bins: M, the number of bins.

    >>> r = reliability(np.array([0.9, 0.9, 0.7, 0.7]), np.array([True, False, True, True]), 5)
    >>> round(r.ece, 6), round(r.mce, 6)  # bins (0.8, 1]: |0.5 - 0.9|, (0.6, 0.8]: |1 - 0.7|
    (0.35, 0.4)
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bin m holds (edges[m], edges[m+1]]: the number of inner edges strictly below c.
    which = np.searchsorted(edges[1:-1], confidence, side="left")  # (N,) in [0, M)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=n_bins) / count
        mean_accuracy = np.bincount(which, weights=correct, minlength=n_bins) / count
    gap = np.abs(mean_accuracy - mean_confidence)  # (M,), NaN where empty
    filled = count > 0
    total = max(int(count.sum()), 1)
    ece = float(np.sum(count[filled] * gap[filled]) / total)
    mce = float(gap[filled].max()) if filled.any() else math.nan
    return Reliability(
        edges=edges,
        count=count.astype(np.int64),
        confidence=mean_confidence,
        accuracy=mean_accuracy,
        ece=ece,
        mce=mce,
    )


def _scaled_nll(logits: np.ndarray, target: np.ndarray, beta: float) -> tuple[float, float, float]:
    """Mean NLL of ``beta * z`` and its first two derivatives in ``beta``.

    ``f(b) = mean_i [lse(b z_i) - b z_iy]``, ``f'(b) = mean_i [E_p[z_i] - z_iy]``,
    ``f''(b) = mean_i Var_p[z_i]`` with ``p = softmax(b z_i)``: f is convex in b.
    """
    rows = np.arange(len(target))
    log_p = _log_probabilities(beta * logits)  # (N, C)
    p = np.exp(log_p)
    # A masked class (-inf logit) has p = 0 exactly: count it as 0, not 0 * inf = NaN.
    z = np.where(p > 0, logits, 0.0)
    mean_z = np.einsum("ij,ij->i", p, z)  # (N,) E_p[z]
    var_z = np.einsum("ij,ij->i", p, z * z) - mean_z**2
    value = float(-log_p[rows, target].mean())
    slope = float((mean_z - logits[rows, target]).mean())
    curvature = float(np.maximum(var_z, 0.0).mean())
    return value, slope, curvature


def fit_temperature(logits: Any, target: Any, *, tol: float = 1e-10, max_iter: int = 100) -> float:
    """The temperature ``T`` minimising the mean cross-entropy of ``softmax(z / T)``.

    ``T* = argmin_T  -1/N sum_i ln softmax(z_i / T)[y_i]``, found as ``b = 1/T`` by Newton's
    method safeguarded by bisection (the loss is convex in b), within :data:`TEMPERATURE_RANGE`.

    Args:
        logits: (N, C) validation logits.
        target: (N,) validation classes.
        tol: stop when the bracket on ``b`` is narrower than ``tol * b``.

    Returns:
        T > 0 (clamped to the range's end when the optimum lies beyond it).

    >>> z = np.array([[4.0, 0.0]] * 4)  # right 3 times in 4: sigmoid(4 / T) = 3/4, T = 4 / ln 3
    >>> round(fit_temperature(z, np.array([0, 0, 0, 1])), 6), round(4 / float(np.log(3)), 6)
    (3.640957, 3.640957)
    """
    z, y = _check_pair(logits, target, "temperature")
    if np.isneginf(z[np.arange(len(y)), y]).any():
        raise ValueError(
            "a true class has logit -inf: its loss is infinite at every temperature, "
            "so no temperature can be fitted"
        )
    lo, hi = 1.0 / TEMPERATURE_RANGE[1], 1.0 / TEMPERATURE_RANGE[0]  # bracket on b = 1/T
    if _scaled_nll(z, y, lo)[1] >= 0:
        return 1.0 / lo  # loss grows from the smallest b: as hot as allowed
    if _scaled_nll(z, y, hi)[1] <= 0:
        return 1.0 / hi  # loss still falls at the largest b: as cold as allowed
    beta = 1.0
    for _ in range(max_iter):
        _, slope, curvature = _scaled_nll(z, y, beta)
        if slope > 0:
            hi = beta
        else:
            lo = beta
        if hi - lo <= tol * beta or slope == 0:
            break
        step = beta - slope / curvature if curvature > 0 else math.nan
        beta = step if lo < step < hi else 0.5 * (lo + hi)  # Newton, else bisect
    return 1.0 / beta


def _ranked(
    order: np.ndarray,
    target: np.ndarray,
    predicted: np.ndarray,
    probabilities_true: np.ndarray,
    confidence: np.ndarray,
    losses: np.ndarray,
) -> Examples:
    return Examples(
        index=order.astype(np.int64),
        target=target[order],
        predicted=predicted[order],
        p_true=probabilities_true[order],
        p_predicted=confidence[order],
        loss=losses[order],
    )


# --------------------------------------------------------------------------- evaluation


def evaluate_logits(
    logits: Any,
    target: Any,
    *,
    validation_logits: Any = None,
    validation_target: Any = None,
    n_bins: int = DEFAULT_BINS,
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
        top_k: how many hardest samples and confident mistakes to keep.
        worst_fraction: the fraction of samples whose share of the loss is reported.

    >>> e = evaluate_logits(np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([0, 0]))
    >>> e.accuracy, round(e.loss, 4), e.confusion.tolist()
    (0.5, 0.7201, [[1, 1], [0, 0]])
    """
    z, y = _check_pair(logits, target, "evaluated")
    if not 0 < worst_fraction <= 1:
        raise ValueError(f"worst_fraction must be in (0, 1], got {worst_fraction}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    fit = None
    if (validation_logits is None) != (validation_target is None):
        raise ValueError("give both validation_logits and validation_target, or neither")
    if validation_logits is not None:
        fit = _check_pair(validation_logits, validation_target, "validation")
        if fit[0].shape[1] != z.shape[1]:
            raise ValueError(
                f"validation logits have {fit[0].shape[1]} classes, the evaluated ones "
                f"{z.shape[1]}; both must come from the same model"
            )
    return _evaluate(z, y, fit, n_bins, top_k, worst_fraction)


def _evaluate(
    z: np.ndarray,
    y: np.ndarray,
    fit: tuple[np.ndarray, np.ndarray] | None,
    n_bins: int,
    top_k: int,
    worst_fraction: float,
) -> Evaluation:
    n, num_classes = z.shape
    rows = np.arange(n)
    log_p = _log_probabilities(z)  # (N, C)
    probabilities = np.exp(log_p)
    losses = -log_p[rows, y]  # (N,) -ln p(true)
    predicted = np.argmax(z, axis=1).astype(np.int64)
    confidence = probabilities[rows, predicted]  # (N,) p(predicted)
    p_true = probabilities[rows, y]
    correct = predicted == y
    loss = float(losses.mean())

    confusion = None
    if num_classes <= MAX_CONFUSION_CLASSES:
        confusion = confusion_matrix(y, predicted, num_classes)
    class_count = np.bincount(y, minlength=num_classes).astype(np.int64)
    class_correct = np.bincount(y, weights=correct, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        class_accuracy = class_correct / class_count
        class_loss = np.bincount(y, weights=losses, minlength=num_classes) / class_count
    bins = reliability(confidence, correct, n_bins)

    # Stable sorts: ties keep dataset order, so the lists are reproducible.
    by_loss = np.argsort(-losses, kind="stable")
    wrong = np.flatnonzero(~correct)
    mistakes = wrong[np.argsort(-confidence[wrong], kind="stable")]
    worst_count = max(1, math.ceil(worst_fraction * n))
    total = float(losses.sum())
    # NaN when the total is 0 or infinite (a -inf true logit): no meaningful share.
    worst_share = (
        float(losses[by_loss[:worst_count]].sum() / total) if 0 < total < math.inf else math.nan
    )

    temperature = None
    if fit is not None:
        t = fit_temperature(*fit)
        after = _log_probabilities(z / t)
        p_after = np.exp(after)
        # Dividing by T > 0 keeps the argmax: same predictions, new confidences.
        confidence_after = p_after[rows, predicted]
        bins_after = reliability(confidence_after, correct, n_bins)
        temperature = Temperature(
            temperature=t,
            fit_size=len(fit[1]),
            fit_loss_before=_scaled_nll(fit[0], fit[1], 1.0)[0],
            fit_loss_after=_scaled_nll(fit[0], fit[1], 1.0 / t)[0],
            loss_before=loss,
            loss_after=float(-after[rows, y].mean()),
            ece_before=bins.ece,
            ece_after=bins_after.ece,
            at_bound=not TEMPERATURE_RANGE[0] < t < TEMPERATURE_RANGE[1],
            reliability_after=bins_after,
        )

    def ranked(order: np.ndarray) -> Examples:
        return _ranked(order[:top_k], y, predicted, p_true, confidence, losses)

    return Evaluation(
        size=n,
        num_classes=num_classes,
        accuracy=float(correct.mean()),
        loss=loss,
        perplexity=math.exp(loss) if loss < 709 else math.inf,
        brier=brier_score(probabilities, y),
        uniform_loss=math.log(num_classes),
        class_count=class_count,
        class_accuracy=class_accuracy,
        class_loss=class_loss,
        confusion=confusion,
        reliability=bins,
        hardest=ranked(by_loss),
        confident_mistakes=ranked(mistakes),
        worst_fraction=worst_fraction,
        worst_count=worst_count,
        worst_share=worst_share,
        temperature=temperature,
        losses=losses,
        target=y,
        predicted=predicted,
        confidence=confidence,
    )


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
    share = cumulative / total if total > 0 else np.zeros_like(cumulative)
    return np.linspace(0.0, 1.0, len(cumulative)), share
