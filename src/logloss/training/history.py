"""What a training run tells its caller: per-epoch records, the outcome, and live events."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from logloss.training.config import TrainConfig


@dataclass
class EpochRecord:
    """One line of ``metrics.jsonl``."""

    epoch: int  # 1-based
    train_loss: float  # running mean over the epoch's batches (augmented, dropout on)
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float  # learning rate at the end of the epoch
    seconds: float  # this epoch's training time (evaluation excluded)
    elapsed: float  # training time since the start of the run
    samples_per_second: float


@dataclass
class History:
    """What ``train`` returns: per-epoch records and the run's outcome.

    ``test`` holds the test-split accuracy and loss of the last weights (``accuracy``,
    ``loss``) and of the best-validation weights (``best_accuracy``, ``best_loss``): the later
    commands (``evaluate``, ``explain``, ``report``, ``serve``) load the best weights by default.
    """

    config: TrainConfig
    out_dir: Path
    records: list[EpochRecord] = field(default_factory=list)
    status: str = "running"  # running | finished | target_reached | interrupted
    initial_loss: float = math.nan  # the untrained model's validation loss (near ln C)
    initial_accuracy: float = math.nan  # ... and accuracy (near 1/C)
    best_epoch: int | None = None
    test: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"

    @property
    def elapsed(self) -> float:
        return self.records[-1].elapsed if self.records else 0.0


@dataclass(frozen=True)
class SampleView:
    """One validation sample as the model sees it: for the before/after view of a run.

    ``logits`` (C,) float64 of the model in eval mode, ``target`` the true class, ``image`` the
    sample's uint8 pixels (H, W); ``classes`` names the C classes.
    """

    logits: np.ndarray
    target: int
    image: np.ndarray
    classes: tuple[str, ...]


class Reporter:
    """Receives a run's events; this base class ignores them (the CLI prints them)."""

    def on_start(self, info: Mapping[str, Any]) -> None:
        """Device, dataset sizes, parameter count, output folder, resume point."""

    def on_sample(self, stage: str, view: SampleView) -> None:
        """``stage`` is ``"before"`` or ``"after"`` training; ``view`` what the model says."""

    def on_warning(self, message: str) -> None:
        """Something the user should know (e.g. an initial loss far from ln C)."""

    def on_epoch_start(self, epoch: int, epochs: int, steps: int, first_step: int) -> None:
        """An epoch (1-based) of ``steps`` batches begins, at ``first_step`` when resumed."""

    def on_progress(self, step: int, loss: float, accuracy: float, samples_per_s: float) -> None:
        """Running train loss and accuracy after ``step`` batches of the current epoch."""

    def on_epoch_end(self, record: EpochRecord, is_best: bool) -> None:
        """An epoch finished and was checkpointed."""

    def on_end(self, history: History) -> None:
        """Training stopped (finished, reached the target, or interrupted and saved)."""
