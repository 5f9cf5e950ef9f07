"""Streaming sums: every diagnostic of an evaluation, added block by block and merged exactly.

An :class:`Accumulator` takes :class:`~logloss.insight.kinds.Scored` blocks in row order and
keeps only what the end result needs: float64 sums (loss, Brier, per class), integer counts
(correct, per class, the confusion matrix), calibration bins (:mod:`.binning`), the top rows of
two rankings (hardest samples, confident mistakes) and the ``k = ceil(f N)`` largest losses, so
the worst ``f`` share is exact.  Memory is O(C^2 + C M + k), not O(N): 10 million rows need the
same few megabytes as 10 thousand (``k`` is known in advance from the row count; without it,
every loss is kept).  Two accumulators over consecutive rows :meth:`~Accumulator.merge` into the
one of all rows: the counts, bins and rankings are identical to one pass over everything, the
float64 sums equal to the last bits of summation order.

The loss's Lorenz curve comes from a histogram of the losses in log-spaced bins: its points
(the share of samples with loss at or above a bin edge, the share of the total loss they carry)
are exact; the figure joins them with lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from logloss.insight.binning import DEFAULT_BINS, ClasswiseSums, ReliabilitySums
from logloss.insight.evaluation import Evaluation, Examples, Temperature
from logloss.insight.kinds import Scored

DEFAULT_TOP_K = 16
WORST_FRACTION = 0.01
# Above this many classes the (C, C) confusion matrix is not built (10^4 classes = 800 MB).
MAX_CONFUSION_CLASSES = 1000
# The loss histogram: 4 bins per octave (a loss's binary exponent and the top 2 bits of its
# mantissa) from 2^-48 to 2^16; smaller losses in the first bin, larger in the last.
LOSS_OCTAVES = (-48, 16)
LOSS_BINS = 4 * (LOSS_OCTAVES[1] - LOSS_OCTAVES[0]) + 2
_RANKED = ("target", "predicted", "p_true", "confidence", "loss")


class TopRows:
    """The ``k`` rows with the largest key (ties: lower row first) and what to report of them."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.key = np.zeros(0)
        self.index = np.zeros(0, np.int64)
        self.fields = {name: np.zeros(0) for name in _RANKED}
        self.ids: np.ndarray | None = None

    def add(self, key: np.ndarray, index: np.ndarray, block: Scored, rows: np.ndarray) -> None:
        """Offer ``block``'s ``rows`` (local positions) with keys ``key`` and row numbers
        ``index`` (all (n,)); keep the best ``k`` of these and the ones kept so far."""
        if self.k == 0 or len(key) == 0:
            return
        if len(key) > self.k:  # only rows at or above the k-th largest key can enter
            threshold = np.partition(key, len(key) - self.k)[len(key) - self.k]
            chosen = key >= threshold
            key, index, rows = key[chosen], index[chosen], rows[chosen]
        fields = {name: getattr(block, name)[rows] for name in _RANKED}
        ids = None if block.ids is None else np.asarray(block.ids)[rows].astype(str)
        self._keep(key, index, fields, ids)

    def _keep(
        self,
        key: np.ndarray,
        index: np.ndarray,
        fields: dict[str, np.ndarray],
        ids: np.ndarray | None,
    ) -> None:
        joined_key = np.concatenate([self.key, key])
        joined_index = np.concatenate([self.index, index])
        order = np.lexsort((joined_index, -joined_key))[: self.k]  # largest first, then lower row
        self.key, self.index = joined_key[order], joined_index[order]
        for name in _RANKED:
            self.fields[name] = np.concatenate([self.fields[name], fields[name]])[order]
        if ids is not None:  # a source has ids for every row or for none
            mine = self.ids if self.ids is not None else np.zeros(0, str)
            self.ids = np.concatenate([mine, ids])[order]

    def merge(self, other: TopRows) -> None:
        self._keep(other.key, other.index, other.fields, other.ids)

    def examples(self) -> Examples:
        f = self.fields
        return Examples(
            index=self.index.astype(np.int64),
            target=f["target"].astype(np.int64),
            predicted=f["predicted"].astype(np.int64),
            p_true=f["p_true"].astype(np.float64),
            p_predicted=f["confidence"].astype(np.float64),
            loss=f["loss"].astype(np.float64),
            ids=None if self.ids is None else tuple(self.ids.tolist()),
        )


class LargestValues:
    """The ``k`` largest values seen (all of them while ``k`` is None), for the worst share."""

    def __init__(self, k: int | None) -> None:
        self.k = k
        self.values = np.zeros(0)

    def add(self, values: np.ndarray) -> None:
        joined = np.concatenate([self.values, values])
        if self.k is not None and len(joined) > self.k:
            joined = np.partition(joined, len(joined) - self.k)[len(joined) - self.k :]
        self.values = joined

    def merge(self, other: LargestValues) -> None:
        self.add(other.values)

    def top_sum(self, k: int) -> float:
        """Sum of the ``k`` largest, added largest first (the same order whatever the blocks)."""
        return float(np.sort(self.values)[::-1][:k].sum())


def loss_bin(losses: np.ndarray) -> np.ndarray:
    """The histogram bin of each loss: monotone in the loss, so that every bin's losses are at
    least those of the bins below it (what makes the Lorenz points exact).

    >>> loss_bin(np.array([0.0, 0.5, 0.75, 1.0, np.inf])).tolist()
    [0, 193, 195, 197, 257]
    """
    finite = np.isfinite(losses)
    mantissa, exponent = np.frexp(np.where(finite, losses, 1.0))  # m 2^e, m in [0.5, 1)
    quarter = ((mantissa - 0.5) * 8).astype(np.intp)  # 0..3
    which = 4 * (exponent.astype(np.intp) - LOSS_OCTAVES[0]) + quarter + 1
    which = np.where(losses > 0, which, 0)
    return np.clip(np.where(finite, which, LOSS_BINS - 1), 0, LOSS_BINS - 1)


@dataclass
class LossHistogram:
    """Counts and loss sums in the bins of :func:`loss_bin`."""

    count: np.ndarray
    total: np.ndarray

    @classmethod
    def empty(cls) -> LossHistogram:
        return cls(np.zeros(LOSS_BINS, np.int64), np.zeros(LOSS_BINS))

    def add(self, losses: np.ndarray) -> None:
        which = loss_bin(losses)
        self.count += np.bincount(which, minlength=len(self.count))
        finite = np.where(np.isfinite(losses), losses, 0.0)
        self.total += np.bincount(which, weights=finite, minlength=len(self.count))

    def merge(self, other: LossHistogram) -> None:
        self.count += other.count
        self.total += other.total

    def curve(self, infinite: bool) -> tuple[np.ndarray, np.ndarray]:
        """Exact points of the Lorenz curve at the filled bins' edges, worst first."""
        filled = self.count[::-1] > 0
        count = np.concatenate([[0], np.cumsum(self.count[::-1][filled])])
        total = np.concatenate([[0.0], np.cumsum(self.total[::-1][filled])])
        if infinite or count[-1] == 0 or not total[-1] > 0:
            return count / max(count[-1], 1), np.zeros(len(total))
        return count / count[-1], total / total[-1]


class Accumulator:
    """Every sum of an evaluation (see the module doc); ``add`` blocks in row order."""

    def __init__(
        self,
        num_classes: int,
        *,
        n_bins: int = DEFAULT_BINS,
        binning: str = "uniform",
        top_k: int = DEFAULT_TOP_K,
        worst_fraction: float = WORST_FRACTION,
        expected_rows: int | None = None,
        binary: bool = False,
        keep_rows: bool = False,
    ) -> None:
        c = num_classes
        self.num_classes, self.binary, self.worst_fraction = c, binary, worst_fraction
        self.rows, self.loss_sum, self.brier_sum, self.correct = 0, 0.0, 0.0, 0
        self.class_count = np.zeros(c, np.int64)
        self.class_correct = np.zeros(c, np.int64)
        self.class_loss = np.zeros(c)
        self.confusion = np.zeros((c, c), np.int64) if c <= MAX_CONFUSION_CLASSES else None
        self.reliability = ReliabilitySums(n_bins, binning)
        self.classwise = ClasswiseSums(c, n_bins)
        self.hardest, self.mistakes = TopRows(top_k), TopRows(top_k)
        worst = None if expected_rows is None else worst_count(expected_rows, worst_fraction)
        self.worst = LargestValues(worst)
        self.histogram = LossHistogram.empty()
        self.kept: list[tuple[np.ndarray, ...]] | None = [] if keep_rows else None

    def add(self, block: Scored) -> None:
        """Add the next block of rows (``block.offset`` is its first row's number)."""
        y, predicted, c = block.target, block.predicted, self.num_classes
        correct = predicted == y
        self.rows += len(y)
        self.loss_sum += float(block.loss.sum())
        self.brier_sum += float(block.brier.sum())
        self.correct += int(correct.sum())
        self.class_count += np.bincount(y, minlength=c)
        self.class_correct += np.bincount(y[correct], minlength=c)
        self.class_loss += np.bincount(y, weights=block.loss, minlength=c)
        if self.confusion is not None:  # scattered adds when the block is small next to C^2
            flat = y * c + predicted
            if 16 * len(flat) < c * c:
                np.add.at(self.confusion.reshape(-1), flat, 1)
            else:
                self.confusion += np.bincount(flat, minlength=c * c).reshape(c, c)
        self.reliability.add(block.confidence, correct)
        self.classwise.add(block.probabilities, y)
        index = block.offset + np.arange(len(y))
        self.hardest.add(block.loss, index, block, np.arange(len(y)))
        wrong = np.flatnonzero(~correct)
        self.mistakes.add(block.confidence[wrong], index[wrong], block, wrong)
        self.worst.add(block.loss)
        self.histogram.add(block.loss)
        if self.kept is not None:
            self.kept.append((block.loss, y, predicted, block.confidence))

    def merge(self, other: Accumulator) -> None:
        """Add the sums of ``other``, which saw the rows after this one's."""
        for name in (
            "rows",
            "loss_sum",
            "brier_sum",
            "correct",
            "class_count",
            "class_correct",
            "class_loss",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if self.confusion is not None:
            self.confusion += other.confusion
        for name in ("reliability", "classwise", "hardest", "mistakes", "worst", "histogram"):
            getattr(self, name).merge(getattr(other, name))
        if self.kept is not None:
            self.kept += other.kept or []

    def finish(self, temperature: Temperature | None = None) -> Evaluation:
        """The :class:`Evaluation` of every row added."""
        n, c = self.rows, self.num_classes
        if n == 0:
            raise ValueError("no rows were evaluated; give at least one")
        loss = self.loss_sum / n
        count = worst_count(n, self.worst_fraction)
        if self.worst.k is not None and self.worst.k < count:
            raise ValueError(
                f"{n} rows were evaluated where {self.worst.k / self.worst_fraction:.0f} were "
                "announced; the source changed while it was read"
            )
        top = self.worst.top_sum(count)
        with np.errstate(invalid="ignore", divide="ignore"):
            class_accuracy = self.class_correct / self.class_count
            class_loss = self.class_loss / self.class_count
        return Evaluation(
            size=n,
            num_classes=c,
            accuracy=self.correct / n,
            loss=loss,
            perplexity=math.exp(loss) if loss < 709 else math.inf,
            brier=self.brier_sum / n,
            uniform_loss=math.log(c),
            errors=n - self.correct,
            class_count=self.class_count.copy(),
            class_accuracy=class_accuracy,
            class_loss=class_loss,
            confusion=None if self.confusion is None else self.confusion.copy(),
            reliability=self.reliability.finish(),
            classwise_ece=self.classwise.ece(),
            hardest=self.hardest.examples(),
            confident_mistakes=self.mistakes.examples(),
            worst_fraction=self.worst_fraction,
            worst_count=count,
            # NaN when the total is 0 or infinite (a -inf true logit): no meaningful share.
            worst_share=top / self.loss_sum if 0 < self.loss_sum < math.inf else math.nan,
            temperature=temperature,
            concentration_points=self.histogram.curve(not math.isfinite(self.loss_sum)),
            binary=self.binary,
            positive=self.classwise.of_class(1) if self.binary else None,
            **self._rows(),
        )

    def _rows(self) -> dict[str, np.ndarray]:
        if not self.kept:
            return {}
        columns = [np.concatenate(parts) for parts in zip(*self.kept, strict=True)]
        return dict(zip(("losses", "target", "predicted", "confidence"), columns, strict=True))


def worst_count(rows: int, fraction: float) -> int:
    """``max(1, ceil(fraction * rows))``: how many rows "the worst fraction" is."""
    return max(1, math.ceil(fraction * rows))
