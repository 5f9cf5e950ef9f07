"""A trained run evaluated on one of its splits: one forward pass, then every diagnostic.

The split is the run's own (:func:`logloss.training.splits.run_arrays`): ``"validation"`` is
exactly the set training validated on, and temperature scaling is fitted there.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from logloss.insight.diagnostics import DEFAULT_BINS, DEFAULT_TOP_K, evaluate_logits
from logloss.insight.result import EvaluationResult
from logloss.training.checkpoint import Checkpoint, load_checkpoint
from logloss.training.splits import run_arrays


@dataclass(frozen=True)
class SplitEvaluation(EvaluationResult):
    """:class:`EvaluationResult` of a checkpoint on one split, with the model's logits.

    ``images`` (N, H, W) uint8 and ``logits`` (N, C) float32 are the split and the model's one
    forward pass over it; ``timings`` gives seconds per stage (``data``, ``forward``,
    ``diagnostics``, and ``total``); ``source`` names the checkpoint, its weights, the dataset
    and the split.
    """

    logits: np.ndarray | None = field(default=None, repr=False)

    @property
    def dataset(self) -> str:
        return str(self.source["dataset"])

    @property
    def split(self) -> str:
        return str(self.source["split"])

    @property
    def which(self) -> str:
        return str(self.source["weights"])

    @property
    def directory(self) -> Path:
        return Path(self.source["checkpoint"])


def evaluate_checkpoint(
    checkpoint: Checkpoint | str | os.PathLike[str],
    *,
    split: str = "test",
    which: str = "best",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    calibrate: bool = True,
    n_bins: int = DEFAULT_BINS,
    binning: str = "uniform",
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
        n_bins, binning, top_k: as in :func:`evaluate_logits`.
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
        binning=binning,
        top_k=top_k,
    )
    done = time.perf_counter()
    return SplitEvaluation(
        evaluation=evaluation,
        classes=tuple(checkpoint.classes),
        source=checkpoint_source(checkpoint, split),
        notes=() if calibrate else ("temperature scaling skipped (--no-calibration)",),
        images=images,
        logits=logits,
        timings=dict(
            zip(
                ("load_checkpoint", "data", "forward", "diagnostics"),
                np.diff([started, loaded, read, forward, done]).tolist(),
                strict=True,
            ),
            total=done - started,
        ),
    )


def checkpoint_source(checkpoint: Checkpoint, split: str) -> dict[str, str]:
    """The JSON's ``source`` of a checkpoint evaluated on ``split``."""
    return {
        "type": "checkpoint",
        "checkpoint": str(checkpoint.directory),
        "weights": checkpoint.which,
        "dataset": checkpoint.config.dataset,
        "split": split,
    }
