"""Evaluate any model's predictions: one streamed pass over a source, every diagnostic.

``source -> classes -> kind -> (temperature fitted on the calibration source) -> one pass of
blocks through the accumulators -> EvaluationResult``.  Nothing here holds more than one block
of rows (plus what :mod:`.accumulators` keeps), so the size of the file does not matter; no
torch is imported.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from logloss.insight.accumulators import DEFAULT_TOP_K, WORST_FRACTION, Accumulator
from logloss.insight.binning import DEFAULT_BINS
from logloss.insight.blocks import Source, block_rows
from logloss.insight.diagnostics import ScaledSums, check_options, temperature_result
from logloss.insight.kinds import (
    KINDS,
    BadRow,
    KindChoice,
    Renormalized,
    Scored,
    detect_kind,
    score,
    score_binary,
    temperature_logits,
)
from logloss.insight.labels import Classes
from logloss.insight.result import EvaluationResult
from logloss.insight.temperature import Blocks, check_fit_rows, fit_temperature_blocks

MIN_ROWS = 2


@dataclass
class Reading:
    """A source with its classes and kind decided, and what reading it noticed."""

    source: Source
    classes: Classes
    choice: KindChoice
    renormalize: Renormalized | None
    notes: list[str] = field(default_factory=list)
    clipped: int = 0  # rows whose p(true) was below eps (probabilities only)

    @property
    def binary(self) -> bool:
        return self.source.columns == 1

    def blocks(self, size: int | None = None) -> Iterator[tuple[Any, np.ndarray]]:
        """(raw block, its values as float) in row order, with file-named errors."""
        size = size or block_rows(self.source.columns)
        try:
            for raw in self.source.blocks(self.classes, size):
                yield raw, raw.values
        except BadRow as error:
            raise ValueError(f"{self.source.name} {error}") from None

    def scored(self) -> Iterator[tuple[Any, np.ndarray, Scored]]:
        """(raw block, its values, the block scored by :func:`~logloss.insight.kinds.score`)."""
        kind = self.choice.kind
        for raw, values in self.blocks():
            try:
                if self.binary:
                    block = score_binary(values, raw.labels, kind, offset=raw.offset, ids=raw.ids)
                else:
                    block = score(
                        values,
                        raw.labels,
                        kind,
                        offset=raw.offset,
                        ids=raw.ids,
                        renormalize=self.renormalize,
                    )
            except BadRow as error:
                raise ValueError(f"{self.source.name} {error}") from None
            if kind == "probs":
                eps = float(np.finfo(values.dtype if values.dtype.kind == "f" else float).eps)
                self.clipped += int(np.count_nonzero(block.p_true < eps))
            yield raw, values, block

    def temperature_blocks(self) -> Blocks:
        """A callable giving (logits (n, C), y (n,)) blocks for temperature scaling."""

        def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for raw, values in self.blocks():
                z = temperature_logits(values, self.choice.kind)
                check_fit_rows(z, raw.labels, raw.offset)
                yield z, raw.labels

        return blocks


def read_source(
    source: Source,
    *,
    kind: str = "auto",
    class_names: list[str] | None = None,
    renormalize: bool = False,
) -> Reading:
    """Decide the classes (``class_names``, else the file's names) and the kind of ``source``."""
    if kind not in ("auto", *KINDS):
        raise ValueError(f"kind must be auto or one of {KINDS}, got {kind!r}")
    if source.rows is not None and source.rows < MIN_ROWS:
        raise ValueError(
            f"{source.name} has {source.rows} row{'s' * (source.rows != 1)}; evaluating needs at "
            f"least {MIN_ROWS} (calibration and rankings mean nothing on fewer)"
        )
    count = 2 if source.columns == 1 else source.columns
    given = "--class-names" if class_names is not None else f"{source.name}"
    classes = Classes.of(count, class_names or source.names, where=given)
    reading = Reading(
        source, classes, KindChoice("logits", ""), Renormalized() if renormalize else None
    )
    reading.choice = choose_kind(reading, kind)
    reading.notes.append(f"kind: {reading.choice.kind} ({reading.choice.reason})")
    if reading.choice.warning:
        reading.notes.append(f"warning: {reading.choice.warning}")
    return reading


def choose_kind(reading: Reading, kind: str) -> KindChoice:
    """``kind`` as given, the file's own (an .npz array's name), or detected on the first block."""
    stated = reading.source.kind
    if kind != "auto":
        if stated is not None and stated != kind:
            raise ValueError(
                f"{reading.source.name} names its array {stated!r} but --kind {kind} was given; "
                "drop --kind, or store the array under the name of its kind"
            )
        return KindChoice(kind, "given with --kind")
    if stated is not None:
        return KindChoice(stated, reading.source.kind_reason)
    _, first = next(reading.blocks())
    return detect_kind(first)


def evaluate_reading(
    reading: Reading,
    *,
    calibration: Reading | None = None,
    n_bins: int = DEFAULT_BINS,
    binning: str = "uniform",
    top_k: int = DEFAULT_TOP_K,
    worst_fraction: float = WORST_FRACTION,
    images: np.ndarray | None = None,
) -> EvaluationResult:
    """One pass over ``reading`` (after fitting the temperature on ``calibration``, if given)."""
    check_options(n_bins, binning, top_k, worst_fraction)
    started = time.perf_counter()
    t = None if calibration is None else fit_on(calibration, reading)
    fitted = time.perf_counter()
    sums = Accumulator(
        reading.classes.count,
        n_bins=n_bins,
        binning=binning,
        top_k=top_k,
        worst_fraction=worst_fraction,
        expected_rows=reading.source.rows,
        binary=reading.binary,
    )
    after = None if t is None else ScaledSums(n_bins, binning)
    for raw, values, block in reading.scored():
        sums.add(block)
        if after is not None:  # the same rows after scaling: same predictions, new confidences
            after.add(
                temperature_logits(values, reading.choice.kind) / t, raw.labels, block.predicted
            )
    evaluation = sums.finish()
    if t is not None and after is not None and calibration is not None:
        scaled = temperature_result(t, calibration.temperature_blocks(), evaluation, after)
        evaluation = replace(evaluation, temperature=scaled)
    done = time.perf_counter()
    return EvaluationResult(
        evaluation=evaluation,
        classes=reading.classes.names,
        source=source_record(reading, calibration),
        notes=tuple(reading.notes + outcome_notes(reading, calibration)),
        timings={
            "temperature": fitted - started,
            "evaluate": done - fitted,
            "total": done - started,
        },
        images=images,
    )


def fit_on(calibration: Reading, reading: Reading) -> float:
    """The temperature fitted on the calibration rows, which must have the same classes."""
    if calibration.classes.count != reading.classes.count:
        raise ValueError(
            f"--calibration {calibration.source.name} has {calibration.source.columns} "
            f"column(s), the predictions {reading.source.columns}; both must come from the same "
            "model"
        )
    return fit_temperature_blocks(calibration.temperature_blocks())


def source_record(reading: Reading, calibration: Reading | None) -> dict[str, Any]:
    """Where the numbers come from, for the JSON's ``source``."""
    labels = getattr(reading.source, "labels", None)
    return {
        "type": "predictions",
        "predictions": reading.source.name,
        "labels": getattr(labels, "name", None),
        "kind": reading.choice.kind,
        "kind_reason": reading.choice.reason,
        "calibration": None if calibration is None else calibration.source.name,
    }


def outcome_notes(reading: Reading, calibration: Reading | None) -> list[str]:
    """What the pass changed or skipped, in words."""
    notes = []
    fixed = reading.renormalize
    if fixed is not None and fixed.rows:
        notes.append(
            f"--renormalize changed {fixed.rows} row(s) whose sum was off by at most "
            f"{fixed.largest_change:.3g}"
        )
    if reading.clipped:
        notes.append(
            f"{reading.clipped} row(s) give the true class a probability below the dtype's eps; "
            "their loss is -ln(eps), as in scikit-learn's log_loss"
        )
    if calibration is None:
        notes.append(
            "temperature scaling skipped: give --calibration FILE (held-out predictions, e.g. "
            "the validation split) to fit it; it is never fitted and scored on the same rows"
        )
    return notes
