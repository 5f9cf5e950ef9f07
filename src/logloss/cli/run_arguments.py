"""Arguments and helpers shared by the commands that read a trained run or a predictions file
(``explain``, ``evaluate``, ``report``): ``--checkpoint``, ``--which``, ``--split`` and the data
options, or ``--predictions FILE`` with its labels, kind and class names.

Torch is imported inside :func:`load_run` and :func:`run_sample` (through the training layer) so
that argument errors are reported before it loads; the predictions path never imports it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from logloss.cli import CLIError, add_checkpoint_arguments, check_run_folder
from logloss.cli.data import add_data_arguments
from logloss.insight.kinds import KINDS  # NumPy only: cheap
from logloss.insight.labels import parse_class_names

if TYPE_CHECKING:
    from logloss.insight.prediction_evaluation import Reading
    from logloss.training.checkpoint import Checkpoint

T = TypeVar("T")

SPLIT_CHOICES = ("test", "validation", "train")


def add_run_arguments(
    parser: argparse.ArgumentParser, *, which: bool, predictions: bool = False
) -> None:
    """``--checkpoint DIR`` (and ``--which``), ``--split`` and ``--data-dir``; with
    ``predictions``, ``--checkpoint`` becomes one of two sources (see
    :func:`add_prediction_arguments`)."""
    add_checkpoint_arguments(parser, which=which, required=not predictions)
    parser.add_argument(
        "--split",
        choices=SPLIT_CHOICES,
        default="test",
        help="which samples: test, or the run's own validation/train parts of the training set "
        "(same seed and size as training) (default: test)",
    )
    add_data_arguments(parser, dataset=False)  # the dataset is the checkpoint's own


def add_prediction_arguments(
    parser: argparse.ArgumentParser, *, calibration: bool, images: bool = False
) -> None:
    """``--predictions FILE`` and what says how to read it: labels, kind, class names; with
    ``calibration`` and ``images``, the held-out file and the rows' images too."""
    group = parser.add_argument_group(
        "predictions of any model (instead of --checkpoint; see docs/predictions.md)"
    )
    group.add_argument(
        "--predictions",
        type=Path,
        default=None,
        metavar="FILE",
        help="a model's outputs: .npy (N, C) or (N,), .npz (logits|probs|log_probs + labels), "
        ".csv/.tsv with a header, or .parquet (pip install 'logloss[parquet]')",
    )
    group.add_argument(
        "--labels",
        type=Path,
        default=None,
        metavar="FILE",
        help="the true classes, one per row: .npy, or text with one label per line (indices or "
        "class names); needed with a .npy (default: the file's own labels)",
    )
    group.add_argument(
        "--kind",
        choices=("auto", *KINDS),
        default="auto",
        help="what the values are: auto decides from the first rows and says why (default: auto)",
    )
    group.add_argument(
        "--class-names",
        type=parse_class_names,
        default=None,
        metavar="A,B,...",
        help="class names, comma-separated (default: the header's, else 0, 1, ...)",
    )
    group.add_argument(
        "--label-column",
        default="label",
        metavar="NAME",
        help="the label column of a .csv/.tsv/.parquet (default: label); an 'id' column, if "
        "any, names the rows",
    )
    group.add_argument(
        "--renormalize",
        action="store_true",
        default=False,
        help="divide probability rows that do not sum to 1 (within 1e-6) by their sum, and say "
        "how many (default: such a row is an error)",
    )
    if calibration:
        group.add_argument(
            "--calibration",
            type=Path,
            default=None,
            metavar="FILE",
            help="held-out predictions (same model, e.g. the validation split; same format "
            "rules, labels inside) to fit temperature scaling on (default: skip it)",
        )
    if images:
        group.add_argument(
            "--images",
            type=Path,
            default=None,
            metavar="FILE",
            help="a .npy of uint8 images (N, H, W) or (N, H, W, 3), one per row, to show the "
            "hardest samples and confident mistakes as images (default: none)",
        )


def check_source(args: argparse.Namespace) -> bool:
    """Exactly one of --checkpoint and --predictions; True for --predictions."""
    if (args.checkpoint is None) == (args.predictions is None):
        raise CLIError(
            "give either --checkpoint DIR (a trained run) or --predictions FILE (any model's "
            "outputs), not both or neither"
        )
    if getattr(args, "index", None) is not None:
        check_at_least(args.index, "--index", 0)
    if args.predictions is None:
        for flag in ("labels", "class_names", "calibration"):
            if getattr(args, flag, None) is not None:
                raise CLIError(f"--{flag.replace('_', '-')} goes with --predictions FILE")
        check_run_folder(args.checkpoint)  # before torch loads
    return args.predictions is not None


def read_predictions(args: argparse.Namespace, path: Path, labels: Path | None) -> Reading:
    """The predictions at ``path`` opened and their classes and kind decided (no torch)."""
    from logloss.insight.prediction_evaluation import read_source  # NumPy only; kept off --help
    from logloss.insight.predictions import open_predictions  # NumPy only; kept off --help

    source = open_predictions(path, labels, label_column=args.label_column)
    return read_source(
        source, kind=args.kind, class_names=args.class_names, renormalize=args.renormalize
    )


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


def prediction_inputs(args: argparse.Namespace) -> tuple[Reading, Reading | None, Any]:
    """(the predictions, the --calibration file or None, the --images array or None)."""
    from logloss.insight.arrays import open_images  # NumPy only; kept off --help

    reading = read_predictions(args, args.predictions, args.labels)
    calibration = None
    if args.calibration is not None:
        calibration = read_predictions(args, args.calibration, None)
    images = None if args.images is None else open_images(args.images, reading.source.rows)
    return reading, calibration, images
