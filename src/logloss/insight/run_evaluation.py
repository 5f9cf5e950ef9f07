"""A trained run evaluated on one of its splits: one forward pass, then every diagnostic.

The split is the run's own (:func:`logloss.training.splits.run_arrays`): ``"validation"`` is
exactly the set training validated on, and temperature scaling is fitted there.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from logloss.insight.diagnostics import DEFAULT_BINS, DEFAULT_TOP_K, Evaluation, evaluate_logits
from logloss.training.checkpoint import Checkpoint, load_checkpoint
from logloss.training.splits import run_arrays


@dataclass(frozen=True)
class SplitEvaluation:
    """:class:`Evaluation` of a checkpoint on one split, with what figures and reports need.

    ``images`` (N, H, W) uint8 and ``logits`` (N, C) float32 are the split and the model's one
    forward pass over it; ``timings`` gives seconds per stage (``data``, ``forward``,
    ``diagnostics``, and ``total``).
    """

    evaluation: Evaluation
    dataset: str
    split: str
    which: str
    directory: Path
    classes: tuple[str, ...]
    images: np.ndarray = field(repr=False)
    logits: np.ndarray = field(repr=False)
    timings: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: where the numbers come from, then :meth:`Evaluation.to_dict`."""
        return {
            "checkpoint": str(self.directory),
            "weights": self.which,
            "dataset": self.dataset,
            "split": self.split,
            "classes": list(self.classes),
            **self.evaluation.to_dict(),
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
        }


def evaluate_checkpoint(
    checkpoint: Checkpoint | str | os.PathLike[str],
    *,
    split: str = "test",
    which: str = "best",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    calibrate: bool = True,
    n_bins: int = DEFAULT_BINS,
    top_k: int = DEFAULT_TOP_K,
) -> SplitEvaluation:
    """Run a checkpoint once over a split and compute every diagnostic from the logits.

    Temperature scaling (``calibrate``) is fitted on the run's own validation split (one more
    forward pass, over those samples) and reported on ``split``.

    Args:
        checkpoint: a run directory, or a :class:`~logloss.training.checkpoint.Checkpoint`
            already loaded.
        split: ``"test"``, ``"validation"`` or ``"train"`` (the training part without validation).
        which: the weights to load from a directory: ``"best"``, ``"last"`` or ``"initial"``.
        data_dir: where the dataset is (see :func:`logloss.data.load_dataset`).
        download: whether a missing dataset may be downloaded.
        calibrate: fit the temperature on the validation split.
        n_bins, top_k: as in :func:`evaluate_logits`.
    """
    started = time.perf_counter()
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint, which=which)
    loaded = time.perf_counter()
    config = checkpoint.config
    # With calibration on, the validation split is needed too: one read of each file.
    wanted = (split, "validation") if calibrate else (split,)
    splits = run_arrays(config, wanted, data_dir=data_dir, download=download)
    images, labels = splits[split]
    validation = splits["validation"] if calibrate else None
    read = time.perf_counter()
    logits = checkpoint.logits(images)  # (N, C) float32: the one pass over the split
    fit_logits = None
    if validation is not None:
        fit_logits = logits if split == "validation" else checkpoint.logits(validation[0])
    forward = time.perf_counter()
    evaluation = evaluate_logits(
        logits,
        labels.astype(np.int64),
        validation_logits=fit_logits,
        validation_target=None if validation is None else validation[1].astype(np.int64),
        n_bins=n_bins,
        top_k=top_k,
    )
    done = time.perf_counter()
    return SplitEvaluation(
        evaluation=evaluation,
        dataset=config.dataset,
        split=split,
        which=checkpoint.which,
        directory=Path(checkpoint.directory),
        classes=tuple(checkpoint.classes),
        images=images,
        logits=logits,
        timings={
            "load_checkpoint": loaded - started,
            "data": read - loaded,
            "forward": forward - read,
            "diagnostics": done - forward,
            "total": done - started,
        },
    )
