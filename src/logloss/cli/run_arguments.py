"""Arguments and helpers shared by the commands that read a trained run (``explain``,
``evaluate``, ``report``): ``--checkpoint``, ``--which``, ``--split`` and the data options.

Torch is imported inside :func:`load_run` and :func:`run_sample` (through the training layer) so
that argument errors are reported before it loads.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from logloss.cli import CLIError, add_checkpoint_arguments
from logloss.cli.data import add_data_arguments

if TYPE_CHECKING:
    from logloss.training.checkpoint import Checkpoint

T = TypeVar("T")

SPLIT_CHOICES = ("test", "validation", "train")


def add_run_arguments(parser: argparse.ArgumentParser, *, which: bool) -> None:
    """``--checkpoint DIR`` (and ``--which``), ``--split`` and ``--data-dir``."""
    add_checkpoint_arguments(parser, which=which)
    parser.add_argument(
        "--split",
        choices=SPLIT_CHOICES,
        default="test",
        help="which samples: test, or the run's own validation/train parts of the training set "
        "(same seed and size as training) (default: test)",
    )
    add_data_arguments(parser, dataset=False)  # the dataset is the checkpoint's own


def load_run(directory: Path, which: str) -> Checkpoint:
    """The ``which`` weights of the run in ``directory``, on the CPU."""
    from logloss.training.checkpoint import load_checkpoint  # torch: after argument checks

    return load_checkpoint(directory, which=which)


def run_sample(
    checkpoint: Checkpoint, split: str, index: int, data_dir: Path | None
) -> tuple[np.ndarray, int]:
    """(image (H, W) uint8, label) of sample ``index`` of the run's ``split``."""
    from logloss.training.splits import run_arrays  # torch: after argument checks

    images, labels = run_arrays(checkpoint.config, (split,), data_dir=data_dir)[split]
    if not 0 <= index < len(labels):
        raise CLIError(
            f"--index {index} is out of range: the {split} split has {len(labels)} samples, "
            f"numbered 0 to {len(labels) - 1}"
        )
    return images[index], int(labels[index])


def writing(flag: str, path: Path, write: Callable[[], T]) -> T:
    """Call ``write()``; an OS error (no such folder, no permission) becomes a one-line error."""
    try:
        return write()
    except OSError as error:
        raise CLIError(f"cannot write {flag} {path}: {error.strerror or error}") from None


def check_at_least(value: int, flag: str, minimum: int) -> None:
    """``flag``'s ``value`` is at least ``minimum``, or a one-line error."""
    if value < minimum:
        raise CLIError(f"{flag} must be at least {minimum}, got {value}")
