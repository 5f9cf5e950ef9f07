"""``logloss report``: the one-page HTML story of :mod:`logloss.insight.report` on a run, or on
any model's predictions (``--predictions FILE``: the sections that apply)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from logloss.cli import CLIError
from logloss.cli.run_arguments import (
    add_prediction_arguments,
    add_run_arguments,
    check_source,
    prediction_inputs,
    writing,
)


def register(subparsers: Any) -> None:
    """Add ``logloss report``."""
    report = subparsers.add_parser(
        "report",
        help="one self-contained HTML page telling the article's story on your run",
        description="Write one HTML page (images embedded) that walks from likelihood to "
        "log-likelihood, softmax, cross-entropy, training, the same sample before and after, "
        "where the remaining loss lives, and calibration, with your run's numbers; or, with "
        "--predictions, with any model's numbers (no training sections).",
    )
    add_run_arguments(report, which=False, predictions=True)
    add_prediction_arguments(report, calibration=True, images=True)
    report.add_argument(
        "--out",
        type=Path,
        default=Path("report.html"),
        metavar="FILE",
        help="the HTML file to write (default: report.html)",
    )
    report.add_argument(
        "--index",
        type=int,
        default=0,
        metavar="I",
        help="the sample (row) shown before and after training (default: 0)",
    )
    report.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    if check_source(args):
        report = predictions_report(args)
    else:
        if args.images is not None:
            raise CLIError("--images goes with --predictions; a checkpoint has its own images")
        from logloss.insight.report import build_report  # torch, matplotlib: slow

        report = build_report(
            args.checkpoint, split=args.split, index=args.index, data_dir=args.data_dir
        )
    from logloss.insight.report import write_report  # matplotlib: slow

    writing("--out", args.out, lambda: write_report(args.out, report.html))
    print(f"wrote {args.out} ({len(report.html) / 1024:.0f} KiB) in {report.seconds:.2f} s")
    return 0


def predictions_report(args: argparse.Namespace) -> Any:
    """The page for a predictions file (matplotlib, no torch)."""
    from logloss.insight.report import build_predictions_report  # matplotlib: slow

    reading, calibration, images = prediction_inputs(args)
    return build_predictions_report(
        reading, calibration=calibration, index=args.index, images=images
    )
