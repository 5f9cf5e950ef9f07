"""The article's pictures and a trained model's diagnostics as PNG figures (matplotlib, headless).

Each ``*_figure`` function is pure: data in, a :class:`matplotlib.figure.Figure` out, drawn on
the Agg canvas (no pyplot, no display, no global state), so it runs on a server or in CI.
:func:`save_figure` writes a figure atomically; :func:`figure_bytes` returns its PNG bytes.

Figures (the article's order):

- :func:`likelihood_figure`: ``L(p) = p^a (1-p)^b`` and ``ln L(p)`` with the maximum ``p = a/n``;
- :func:`sigmoid_figure`, :func:`softmax_figure`: the two activations;
- :func:`before_after_figure`: one sample's softmax before and after training;
- :func:`training_curves_figure`: loss and accuracy per epoch with the ``ln C`` line;
- :func:`loss_concentration_figure`: how much of the loss the worst samples carry;
- :func:`concentration_figure`: the same from a streamed evaluation's exact points;
- :func:`per_class_figure`: mean loss per true class;
- :func:`reliability_figure`, :func:`confusion_figure`, :func:`examples_figure` (tiles in
  :func:`grid_columns` columns, so that no row holds a single tile).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from logloss._atomic import write_bytes_atomic
from logloss.activations import sigmoid, softmax
from logloss.insight.binning import Reliability
from logloss.insight.evaluation import Examples, loss_concentration
from logloss.insight.explain import explain
from logloss.likelihood import log_likelihood, mle

# The article's trained model on its first test digit, a 7 (its "after" logits).
ARTICLE_LOGITS = (
    0.7090,
    -5.7430,
    2.7101,
    4.5032,
    -4.2269,
    0.7165,
    -9.6999,
    10.0532,
    -0.4749,
    2.4612,
)
ARTICLE_TARGET = 7
DPI = 100

# One palette for every figure: the true class, a wrong prediction, the rest, references.
TRUE_COLOR = "#2a9d8f"
WRONG_COLOR = "#e76f51"
BASE_COLOR = "#8d99ae"
TRAIN_COLOR = "#264653"
VALIDATION_COLOR = "#e9c46a"
REFERENCE_COLOR = "#6c757d"
# WRONG_COLOR at 45% over white, opaque: a translucent patch would look different over a bar
# than over the background (and than its legend entry).
GAP_COLOR = "#f4beb1"

# Captions of the sample grids: 9 pt is 12.5 px at DPI 100; each column is wide enough for them.
CAPTION_POINTS = 9.0
TILE_INCHES = 1.6


def blank_figure(width: float, height: float) -> Figure:
    """An empty figure of ``width`` x ``height`` inches drawn by Agg (no pyplot, no display)."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def new_figure(width: float, height: float, *, columns: int = 1) -> tuple[Figure, list[Any]]:
    """A :func:`blank_figure` with one row of ``columns`` axes."""
    figure = blank_figure(width, height)
    return figure, list(figure.subplots(1, columns, squeeze=False)[0])


def figure_bytes(figure: Figure) -> bytes:
    """The figure as PNG bytes (for a file, see :func:`save_figure`; for a ``data:`` URI)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def save_figure(figure: Figure, path: str | os.PathLike[str]) -> Path:
    """Write the figure to ``path`` as PNG atomically (temp file in the same folder, then rename).

    A reader never sees a half-written file; on error the old file, if any, is left untouched.
    The folder is created if needed.  (To write a uint8 image rather than a figure, see
    :func:`logloss.data.render.save_png`.)
    """
    target = Path(path)
    data = figure_bytes(figure)  # render first: a drawing error leaves nothing behind
    write_bytes_atomic(target, data)
    return target


# --------------------------------------------------------------------------- the article


def likelihood_curve(outcomes: Any = "wbwbb", points: int = 201) -> dict[str, Any]:
    """``L(p)`` and ``ln L(p)`` on a grid of ``p`` for two-symbol outcomes, and the maximum.

    ``p`` is the probability of the most frequent symbol (as :func:`logloss.likelihood.mle`
    names it); ``L(p) = p^a (1-p)^b`` is maximal at ``p = a / n``.

    Returns:
        dict with ``p`` (points,), ``likelihood`` (points,), ``log_likelihood`` (points,)
        (``-inf`` at an end where L = 0), ``estimate`` (``a/n``), ``maximum`` (``L(a/n)``),
        ``formula``, ``symbol`` (the one ``p`` belongs to).

    >>> curve = likelihood_curve("wbwbb", points=11)
    >>> curve["estimate"], curve["formula"], round(curve["maximum"], 5)
    (0.6, 'p^3 (1-p)^2', 0.03456)
    """
    result = mle(outcomes, numerical=False)
    if result.parameter is None:
        raise ValueError(
            f"the likelihood curve needs outcomes of exactly two kinds, got {len(result.counts)} "
            f"({sorted(map(str, result.counts))}); e.g. 'wbwbb'"
        )
    symbol = result.parameter
    (other,) = (s for s in result.counts if s != symbol)
    grid = np.linspace(0.0, 1.0, points)
    log_l = np.array([log_likelihood(outcomes, {symbol: p, other: 1.0 - p}) for p in grid])
    return {
        "p": grid,
        "likelihood": np.exp(log_l),
        "log_likelihood": log_l,
        "estimate": result.estimate[symbol],
        "maximum": result.likelihood,
        "formula": result.formula,
        "symbol": symbol,
    }


def likelihood_figure(outcomes: Any = "wbwbb") -> Figure:
    """``L(p)`` and ``ln L(p)`` side by side, each with its maximum at ``p = a/n`` marked."""
    curve = likelihood_curve(outcomes)
    p, estimate = curve["p"], curve["estimate"]
    figure, (left, right) = new_figure(9, 3.4, columns=2)
    shown = "".join(map(str, outcomes)) if not isinstance(outcomes, str) else outcomes
    figure.suptitle(f"Outcomes {shown}: which p makes them most likely?")
    left.plot(p, curve["likelihood"], color=TRAIN_COLOR)
    left.set_title(f"likelihood L(p) = {curve['formula']}")
    right.plot(p, curve["log_likelihood"], color=TRAIN_COLOR)
    right.set_title("log-likelihood ln L(p): same maximum, additive")
    finite = curve["log_likelihood"][np.isfinite(curve["log_likelihood"])]
    right.set_ylim(max(finite.min(), math.log(curve["maximum"]) - 12), 0.5)
    for axis, value in ((left, curve["maximum"]), (right, math.log(curve["maximum"]))):
        axis.axvline(estimate, color=REFERENCE_COLOR, linestyle=":")
        axis.plot([estimate], [value], "o", color=WRONG_COLOR)
        axis.annotate(
            f"max at p = {estimate:.3g}",
            (estimate, value),
            textcoords="offset points",
            xytext=(-10, -18),
            ha="right",
        )
        axis.set_xlabel(f"p = P({curve['symbol']})")
    return figure


def sigmoid_figure() -> Figure:
    """``sig(t) = 1 / (1 + e^-t)`` on [-8, 8]: any real number to a probability."""
    t = np.linspace(-8.0, 8.0, 321)
    figure, (axis,) = new_figure(5, 3.2)
    axis.plot(t, sigmoid(t), color=TRAIN_COLOR, label="sig(t) = 1 / (1 + e^-t)")
    for level in (0.0, 1.0):
        axis.axhline(level, color=REFERENCE_COLOR, linestyle=":")
    axis.plot([0.0], [0.5], "o", color=WRONG_COLOR)
    axis.annotate("sig(0) = 0.5", (0.0, 0.5), textcoords="offset points", xytext=(8, -12))
    axis.set_xlabel("network output t (a logit)")
    axis.set_ylabel("probability")
    axis.set_title("sigmoid: (-inf, +inf) -> (0, 1)")
    axis.legend(loc="upper left")
    return figure


def _class_colors(num_classes: int, target: int | None, predicted: int) -> list[str]:
    colors = [BASE_COLOR] * num_classes
    if predicted != target:
        colors[predicted] = WRONG_COLOR
    if target is not None:
        colors[target] = TRUE_COLOR
    return colors


def softmax_figure(
    logits: Sequence[float] = ARTICLE_LOGITS, target: int | None = ARTICLE_TARGET
) -> Figure:
    """A logit vector and its softmax ``e^z_i / sum_j e^z_j`` as bars (true class highlighted)."""
    z = np.asarray(logits, dtype=np.float64)
    p = softmax(z)
    classes = np.arange(len(z))
    colors = _class_colors(len(z), target, int(np.argmax(z)))
    figure, (left, right) = new_figure(9, 3.2, columns=2)
    left.bar(classes, z, color=colors)
    left.axhline(0.0, color=REFERENCE_COLOR, linewidth=0.8)
    left.set_title("logits z (any real numbers)")
    right.bar(classes, p, color=colors)
    right.set_ylim(0, 1.05)
    right.set_title("softmax(z): in [0, 1], summing to 1")
    for axis in (left, right):
        axis.set_xticks(classes)
        axis.set_xlabel("class")
    return figure


def before_after_figure(
    before_logits: Sequence[float], after_logits: Sequence[float], target: int
) -> Figure:
    """One sample's softmax before and after training, with ``-ln p(target)`` in each title."""
    figure, axes = new_figure(9, 3.2, columns=2)
    figure.suptitle(f"The same sample (true class {target}) before and after training")
    for axis, logits, when in zip(
        axes, (before_logits, after_logits), ("before", "after"), strict=True
    ):
        e = explain(logits, target)
        classes = np.arange(e.num_classes)
        axis.bar(classes, e.probabilities, color=_class_colors(e.num_classes, target, e.predicted))
        axis.axhline(1.0 / e.num_classes, color=REFERENCE_COLOR, linestyle=":", label="1/C")
        axis.set_ylim(0, 1.05)
        axis.set_xticks(classes)
        axis.set_xlabel("class")
        axis.set_title(
            f"{when}: p({target}) = {e.p_target:.4f}, loss = -ln p = {e.loss:.4f}", fontsize=10
        )
        axis.legend(loc="upper left")
    return figure


# --------------------------------------------------------------------------- training


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of the records that have a number under ``key``.

    A record's epoch is its ``epoch`` (0 is the untrained model), else the previous one's + 1.
    """
    epochs, values = [], []
    epoch = 0.0  # a first record without an epoch is epoch 1
    for record in records:
        epoch = float(record.get("epoch", epoch + 1))
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            epochs.append(epoch)
            values.append(float(value))
    return epochs, values


def training_curves_figure(
    records: Sequence[Mapping[str, Any]], *, num_classes: int = 10
) -> Figure:
    """Loss and accuracy per epoch, train vs validation, with the uniform guess's ``ln C`` line.

    Args:
        records: one mapping per epoch with ``epoch`` and any of ``train_loss``,
            ``val_loss``, ``train_accuracy``, ``val_accuracy`` (missing values are skipped);
            epoch 0 is the untrained model (:func:`logloss.training.run_folder.read_metrics`
            returns it first with a run's records).
        num_classes: C, for the ``ln C`` reference line.
    """
    figure, (loss_axis, accuracy_axis) = new_figure(9, 3.4, columns=2)
    uniform = math.log(num_classes)
    for key, label, color in (
        ("train_loss", "train", TRAIN_COLOR),
        ("val_loss", "validation", VALIDATION_COLOR),
    ):
        epochs, values = _series(records, key)
        if values:
            loss_axis.plot(epochs, values, "o-", color=color, label=label)
    loss_axis.axhline(
        uniform, color=WRONG_COLOR, linestyle="--", label=f"ln {num_classes} = {uniform:.3f}"
    )
    loss_axis.set_yscale("log")
    loss_axis.set_title("cross-entropy per epoch (nats, log scale)")
    loss_axis.set_xlabel("epoch")
    loss_axis.legend()
    for key, label, color in (
        ("train_accuracy", "train", TRAIN_COLOR),
        ("val_accuracy", "validation", VALIDATION_COLOR),
    ):
        epochs, values = _series(records, key)
        if values:
            accuracy_axis.plot(epochs, values, "o-", color=color, label=label)
    accuracy_axis.axhline(1.0 / num_classes, color=WRONG_COLOR, linestyle="--", label="chance")
    accuracy_axis.set_title("accuracy per epoch")
    accuracy_axis.set_xlabel("epoch")
    accuracy_axis.set_xlim(loss_axis.get_xlim())  # the same epochs under both panels
    accuracy_axis.legend()
    return figure


# --------------------------------------------------------------------------- diagnostics


def loss_concentration_figure(losses: np.ndarray, *, worst_fraction: float = 0.01) -> Figure:
    """Share of the total loss carried by the worst x% of samples (a Lorenz curve of the loss)."""
    x, share = loss_concentration(losses)
    k = max(1, math.ceil(worst_fraction * len(losses)))
    return concentration_figure(x, share, marked=(x[k], share[k]), worst_fraction=worst_fraction)


def concentration_figure(
    x: np.ndarray,
    share: np.ndarray,
    *,
    marked: tuple[float, float],
    worst_fraction: float = 0.01,
) -> Figure:
    """The Lorenz curve ``(x, share)`` (fractions, worst first) with the point ``marked``:
    (the worst fraction's share of the samples, its share of the loss)."""
    figure, (axis,) = new_figure(5, 3.4)
    at_x, at_share = 100 * marked[0], 100 * marked[1]
    axis.plot(100 * x, 100 * share, color=TRAIN_COLOR, label="sorted worst first")
    axis.plot([0, 100], [0, 100], color=REFERENCE_COLOR, linestyle=":", label="every sample equal")
    axis.plot([at_x], [at_share], "o", color=WRONG_COLOR)
    axis.annotate(
        f"the worst {100 * worst_fraction:g}% of samples\ncarry {at_share:.1f}% of the loss",
        (at_x, at_share),
        xytext=(0.3, 0.25),
        textcoords="axes fraction",
        arrowprops={"arrowstyle": "->", "color": REFERENCE_COLOR},
    )
    axis.set_xlim(0, 100)
    axis.set_ylim(0, 102)
    axis.set_xlabel("% of samples, largest loss first")
    axis.set_ylabel("% of total loss")
    axis.set_title("where the remaining loss lives")
    axis.legend(loc="lower right")
    return figure


def per_class_figure(
    class_loss: np.ndarray,
    class_count: np.ndarray,
    *,
    labels: Sequence[str] | None = None,
    uniform_loss: float | None = None,
) -> Figure:
    """Mean loss per true class as bars (classes absent from the data are left out; above 40
    classes, the 40 with the largest mean loss), with the ``ln C`` line of a uniform guess."""
    present = np.flatnonzero(np.asarray(class_count) > 0)
    if len(present) > 40:  # too many bars to read: the 40 with the largest mean loss
        present = present[np.argsort(-np.asarray(class_loss)[present], kind="stable")[:40]]
    names = [str(k) if labels is None else str(labels[k]) for k in present]
    figure, (axis,) = new_figure(9, 3.4)
    axis.bar(np.arange(len(present)), np.asarray(class_loss)[present], color=TRAIN_COLOR)
    if uniform_loss is not None:
        axis.axhline(
            uniform_loss, color=WRONG_COLOR, linestyle="--", label=f"ln C = {uniform_loss:.3f}"
        )
        axis.legend(loc="upper right")
    axis.set_xticks(np.arange(len(present)), names, rotation=90 if len(present) > 12 else 0)
    axis.set_xlabel("true class")
    axis.set_ylabel("mean -ln p(true), nats")
    axis.set_title("where the loss lives, per class")
    return figure


def grid_columns(count: int, widest: int) -> int:
    """Columns for a grid of ``count`` tiles, at most ``widest``, leaving no row with a single
    tile: the largest ``c <= widest`` with ``count mod c != 1`` (16 tiles in at most 5
    columns: 4).

    >>> grid_columns(16, 5), grid_columns(15, 5), grid_columns(1, 5), grid_columns(6, 5)
    (4, 5, 1, 4)
    """
    if count <= widest:
        return max(count, 1)
    for columns in range(widest, 1, -1):
        if count % columns != 1:
            return columns
    return widest


# How the reliability diagram's bars look, for the bars and their legend entries alike.
ACCURACY_STYLE: dict[str, Any] = {"facecolor": TRAIN_COLOR, "edgecolor": "white"}
GAP_STYLE: dict[str, Any] = {
    "facecolor": GAP_COLOR,
    "edgecolor": WRONG_COLOR,
    "hatch": "//",
    "linewidth": 0.8,
}


def reliability_figure(bins: Reliability, *, title: str = "reliability diagram") -> Figure:
    """Accuracy against confidence per bin, the diagonal of perfect calibration, ECE and MCE.

    Each filled bin is a bar of height ``accuracy`` and a gap bar from ``accuracy`` to
    ``confidence`` (downwards, over the accuracy bar, when the bin is underconfident).  The gap
    is opaque, so it looks the same over a bar as over the background, and the legend is drawn
    from the bars' own styles: its entries are exactly what is drawn.
    """
    width = np.diff(bins.edges)
    centres = bins.edges[:-1] + width / 2
    filled = bins.count > 0
    figure, (axis, counts) = new_figure(9, 3.6, columns=2)
    axis.bar(centres[filled], bins.accuracy[filled], width=width[filled], **ACCURACY_STYLE)
    axis.bar(
        centres[filled],
        bins.confidence[filled] - bins.accuracy[filled],
        bottom=bins.accuracy[filled],
        width=width[filled],
        **GAP_STYLE,
    )
    (diagonal,) = axis.plot([0, 1], [0, 1], color=REFERENCE_COLOR, linestyle="--")
    handles = [
        Patch(**ACCURACY_STYLE, label="accuracy"),
        Patch(**GAP_STYLE, label="gap to confidence"),
    ]
    diagonal.set_label("perfect calibration")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("confidence p(predicted)")
    axis.set_ylabel("accuracy")
    axis.set_title(f"{title}: ECE {bins.ece:.4f}, MCE {bins.mce:.4f}", fontsize=10)
    axis.legend(handles=[*handles, diagonal], loc="upper left")
    counts.bar(centres, np.maximum(bins.count, 0), width=width, color=BASE_COLOR, edgecolor="white")
    counts.set_yscale("symlog", linthresh=1.0)
    counts.set_xlim(0, 1)
    counts.set_xlabel("confidence p(predicted)")
    counts.set_title("samples per bin (log scale)")
    return figure


def confusion_figure(confusion: np.ndarray, *, labels: Sequence[str] | None = None) -> Figure:
    """The confusion matrix (rows: true class, columns: predicted), log-coloured, counts printed."""
    matrix = np.asarray(confusion)
    c = matrix.shape[0]
    names = [str(k) for k in range(c)] if labels is None else list(labels)
    figure, (axis,) = new_figure(5.2, 4.6)
    image = axis.imshow(
        np.where(matrix > 0, matrix, np.nan),
        cmap="viridis",
        norm=LogNorm(vmin=1, vmax=max(matrix.max(), 1)),
    )
    figure.colorbar(image, ax=axis, shrink=0.85, label="samples")
    if c <= 20:
        threshold = math.sqrt(max(matrix.max(), 1))  # log-scale middle: dark below, light above
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                color = "black" if count > threshold else "white"
                axis.text(j, i, str(count), ha="center", va="center", fontsize=7, color=color)
    ticks = np.arange(c)
    axis.set_xticks(ticks, names if c <= 30 else None)
    axis.set_yticks(ticks, names if c <= 30 else None)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(f"confusion matrix ({int(np.trace(matrix))} of {int(matrix.sum())} right)")
    return figure


def montage(
    images: np.ndarray, index: np.ndarray, columns: int, gap: int = 2, label: int = 0
) -> np.ndarray:
    """Tile ``images[index]`` (each (H, W) or (H, W, 3)) into one array, row by row, zeros
    between tiles.

    Tile ``j`` sits at rows ``r * (H + label + gap) + label ...`` and columns
    ``c * (W + gap) ...`` with ``r, c = divmod(j, columns)``: ``label`` empty rows above each
    tile leave room for its caption.

    >>> montage(np.ones((3, 1, 2), np.uint8), np.array([0, 2]), columns=2, gap=1).tolist()
    [[1, 1, 0, 1, 1]]
    """
    count = len(index)
    h, w = images.shape[1:3]
    rows = max(1, math.ceil(count / columns))
    cols = min(columns, max(count, 1))
    pitch_y, pitch_x = h + label + gap, w + gap
    shape = (rows * pitch_y - gap, cols * pitch_x - gap, *images.shape[3:])  # (H', W'[, 3])
    canvas = np.zeros(shape, dtype=images.dtype)
    for j, k in enumerate(index):
        r, c = divmod(j, columns)
        top, left = r * pitch_y + label, c * pitch_x
        canvas[top : top + h, left : left + w] = images[k]
    return canvas


def examples_figure(
    images: np.ndarray,
    examples: Examples,
    *,
    title: str,
    columns: int = 8,
    labels: Sequence[str] | None = None,
) -> Figure:
    """A grid of samples (the hardest, the most confident mistakes) with p(true) over each.

    Drawn as one image (a :func:`montage`) with captions, which is several times faster than
    one axes per sample.  Each column is :data:`TILE_INCHES` wide, room for a caption of
    :data:`CAPTION_POINTS` (12.5 px at :data:`DPI`): the figure is ``TILE_INCHES * columns``
    inches wide, so a page that shows it at its natural size keeps the captions readable.

    Args:
        images: (N, H, W) or (N, H, W, 3) uint8, the whole evaluated split (indexed by
            ``examples.index``; a memory-mapped file is read only at those rows).
        examples: the ranked selection from :mod:`logloss.insight.diagnostics`.
        title: the figure's title.
        columns: images per row.
        labels: class names for the captions (default: the class indices).
    """
    count = len(examples.index)
    h, w = images.shape[1:3]
    label = h // 2  # caption room above each tile, in pixels of the montage
    rows = max(1, math.ceil(count / columns))
    inches = TILE_INCHES / (w + 2)  # per montage pixel: one column is TILE_INCHES wide
    figure, (axis,) = new_figure(TILE_INCHES * columns + 0.1, inches * rows * (h + label + 2) + 0.5)
    figure.suptitle(title)
    axis.set_axis_off()
    if count == 0:
        axis.text(0.5, 0.5, "none", ha="center", va="center", transform=axis.transAxes)
        return figure
    grid = montage(images, examples.index, columns, gap=2, label=label)
    if grid.ndim == 3:  # colour: as stored, on black between tiles
        axis.imshow(grid, interpolation="nearest", aspect="equal")
    else:
        axis.imshow(grid, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest", aspect="equal")
    name = (lambda k: str(k)) if labels is None else (lambda k: str(labels[k]))
    for j in range(count):
        r, c = divmod(j, columns)
        wrong = examples.predicted[j] != examples.target[j]
        axis.text(
            c * (w + 2) + w / 2,
            r * (h + label + 2) + label - 1,
            f"#{examples.index[j]} true {name(examples.target[j])}\n"
            f"pred {name(examples.predicted[j])} p(true) {examples.p_true[j]:.2g}",
            ha="center",
            va="bottom",
            fontsize=CAPTION_POINTS,
            color=WRONG_COLOR if wrong else TRAIN_COLOR,
        )
    return figure
