"""``logloss evaluate``: every diagnostic of :mod:`logloss.insight.diagnostics` for a trained
run on one of its splits (``--checkpoint``) or for any model's predictions (``--predictions``);
``--json`` for programs, ``--figures DIR`` for PNGs.

Torch loads inside the handler, after argument checks, and only for ``--checkpoint``;
matplotlib only for ``--figures``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logloss._atomic import write_bytes_atomic
from logloss.cli import CLIError, add_json_flag, print_json
from logloss.cli.run_arguments import (
    add_prediction_arguments,
    add_run_arguments,
    check_at_least,
    check_source,
    prediction_inputs,
    writing,
)
from logloss.insight.binning import BINNINGS, DEFAULT_BINS, EDGE_RULE  # NumPy only: cheap
from logloss.insight.diagnostics import DEFAULT_TOP_K

if TYPE_CHECKING:
    from rich.table import Table

    from logloss.insight.evaluation import Evaluation, Examples
    from logloss.insight.result import EvaluationResult


def register(subparsers: Any) -> None:
    """Add ``logloss evaluate``."""
    evaluate = subparsers.add_parser(
        "evaluate",
        help="accuracy, cross-entropy, calibration and the hardest samples of a checkpoint or "
        "of any model's predictions",
        description="Report accuracy, mean cross-entropy (nats) and perplexity, Brier score, "
        "the ln C baseline, per-class accuracy and loss, the confusion matrix, calibration "
        "(ECE, MCE, class-wise ECE, temperature scaling fitted on held-out rows), the hardest "
        "samples, the most confident mistakes and the share of the loss carried by the worst "
        "1% of samples: of a trained run on one split (--checkpoint) or of any model's "
        "predictions file (--predictions), at any size.",
    )
    add_run_arguments(evaluate, which=True, predictions=True)
    add_prediction_arguments(evaluate, calibration=True, images=True)
    evaluate.add_argument(
        "--bins",
        type=int,
        default=DEFAULT_BINS,
        metavar="M",
        help=f"confidence bins for ECE/MCE and the reliability diagram (default: {DEFAULT_BINS})",
    )
    evaluate.add_argument(
        "--binning",
        choices=BINNINGS,
        default="uniform",
        help=f"uniform: equal-width bins {EDGE_RULE}; quantile: equal-count bins "
        "(default: uniform)",
    )
    evaluate.add_argument(
        "--top",
        type=int,
        default=DEFAULT_TOP_K,
        metavar="K",
        help=f"how many hardest samples and confident mistakes to list (default: {DEFAULT_TOP_K})",
    )
    evaluate.add_argument(
        "--no-calibration",
        dest="calibrate",
        action="store_false",
        default=True,
        help="with --checkpoint: skip temperature scaling (which needs a forward pass over the "
        "validation split)",
    )
    evaluate.add_argument(
        "--figures",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write PNG figures into DIR: reliability, confusion, per-class loss, loss "
        "concentration, hardest samples and mistakes (with images), training curves "
        "(checkpoint) (default: none)",
    )
    add_json_flag(evaluate)
    evaluate.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    check_at_least(args.bins, "--bins", 1)
    check_at_least(args.top, "--top", 0)
    result = predictions_result(args) if check_source(args) else checkpoint_result(args)
    written = []
    if args.figures is not None:
        written = writing("--figures", args.figures, lambda: write_figures(result, args.figures))
    if args.json:
        print_json({**result.to_dict(), "figures": [str(p) for p in written]})
        return 0
    print_evaluation(result)
    for path in written:
        print(f"wrote {path}")
    return 0


def checkpoint_result(args: argparse.Namespace) -> EvaluationResult:
    """The run's weights over its split (torch loads here, after the argument checks)."""
    if args.images is not None:
        raise CLIError("--images goes with --predictions; a checkpoint has its own images")
    from logloss.insight.run_evaluation import evaluate_checkpoint  # torch: after the checks

    return evaluate_checkpoint(
        args.checkpoint,
        split=args.split,
        which=args.which,
        data_dir=args.data_dir,
        calibrate=args.calibrate,
        n_bins=args.bins,
        binning=args.binning,
        top_k=args.top,
    )


def predictions_result(args: argparse.Namespace) -> EvaluationResult:
    """One streamed pass over the predictions file (never imports torch)."""
    from logloss.insight.prediction_evaluation import evaluate_reading  # NumPy only; off --help

    reading, calibration, images = prediction_inputs(args)
    return evaluate_reading(
        reading,
        calibration=calibration,
        n_bins=args.bins,
        binning=args.binning,
        top_k=args.top,
        images=images,
    )


def write_figures(result: EvaluationResult, directory: Path) -> list[Path]:
    """Every figure of ``result`` as PNG files in ``directory``: all drawn first, then each
    written atomically, so a drawing error leaves nothing behind."""
    from logloss.insight import plots  # matplotlib: only when figures are asked for

    makers = dict(result.figures())
    if result.source["type"] == "checkpoint":
        from logloss.training.run_folder import read_metrics  # torch: checkpoint only

        records = read_metrics(Path(result.source["checkpoint"]))
        if records:
            makers["training_curves.png"] = lambda: plots.training_curves_figure(
                records, num_classes=result.evaluation.num_classes
            )
    drawn = {name: plots.figure_bytes(make()) for name, make in makers.items()}
    for name, data in drawn.items():
        write_bytes_atomic(directory / name, data)
    return [directory / name for name in drawn]


def print_evaluation(result: EvaluationResult) -> None:
    """The human-readable evaluation: summary, per class, confusion, hardest, mistakes, notes."""
    from rich.console import Console  # rich: only for text output

    e = result.evaluation
    console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    console.print(summary_table(e, title_of(result)))
    console.print(per_class_table(e, result.classes))
    if e.confusion is not None and e.num_classes <= 20:
        console.print(confusion_table(e, result.classes))
    console.print(examples_table(e.hardest, "hardest samples (largest -ln p(true))", result))
    console.print(examples_table(e.confident_mistakes, "most confident mistakes", result))
    binning = e.reliability.binning
    rule = EDGE_RULE if binning == "uniform" else "equal counts"
    console.print(f"calibration bins: {len(e.reliability.count)} {binning}, {rule}")
    for note in result.notes:
        console.print(note)
    timings = result.timings
    if "forward" in timings:
        console.print(
            f"one forward pass over {e.size} samples: {timings['forward']:.3f} s; diagnostics "
            f"{timings['diagnostics']:.3f} s; total {timings['total']:.3f} s"
        )
    else:
        console.print(f"read and evaluated {e.size} rows in {timings['total']:.3f} s")


def title_of(result: EvaluationResult) -> str:
    s, e = result.source, result.evaluation
    if s["type"] == "checkpoint":
        return (
            f"{s['dataset']} {s['split']}: {e.size} samples, {s['weights']} weights of "
            f"{s['checkpoint']}"
        )
    kind = "binary " if e.binary else ""
    return f"{s['predictions']}: {e.size} rows, {e.num_classes} classes, {kind}{s['kind']}"


def _table(
    title: str, columns: tuple[str, ...], *, left: tuple[int, ...] = (), show_header: bool = True
) -> Table:
    """A rich table; the columns numbered in ``left`` are left-justified, the others right."""
    from rich.table import Table  # rich: only for text output

    table = Table(title=title, title_justify="left", show_header=show_header)
    for k, name in enumerate(columns):
        table.add_column(name, justify="left" if k in left else "right")
    return table


def summary_table(e: Evaluation, title: str) -> Table:
    """Accuracy, loss, perplexity, ln C, Brier, ECE, MCE, the worst share, temperature."""
    from logloss.insight.result import summary_rows  # NumPy only; one list for text and HTML

    table = _table(title, ("measure", "value", "meaning"), left=(0, 2), show_header=False)
    for row in summary_rows(e):
        table.add_row(*row)
    return table


def per_class_table(e: Evaluation, classes: tuple[str, ...]) -> Table:
    """Samples, accuracy and mean loss of each class present in the data."""
    table = _table("per class", ("class", "samples", "accuracy", "mean loss"))
    for c in range(e.num_classes):
        if e.class_count[c]:
            table.add_row(
                classes[c] if c < len(classes) else str(c),
                str(e.class_count[c]),
                f"{100 * e.class_accuracy[c]:.2f}%",
                f"{e.class_loss[c]:.4f}",
            )
    return table


def confusion_table(e: Evaluation, classes: tuple[str, ...]) -> Table:
    """Counts [true, predicted], the diagonal in bold, zeros as dots."""
    names = tuple(classes[c] if c < len(classes) else str(c) for c in range(e.num_classes))
    table = _table("confusion matrix (rows: true, columns: predicted)", ("", *names), left=(0,))
    for c in range(e.num_classes):
        cells = [
            f"[bold]{n}[/bold]" if i == c else (str(n) if n else "[dim]·[/dim]")
            for i, n in enumerate(e.confusion[c])
        ]
        table.add_row(names[c], *cells)
    return table


def examples_table(examples: Examples, title: str, result: EvaluationResult) -> Table:
    """A ranked selection: row (and id), true and predicted class, p(true), p(predicted), loss."""
    ids = examples.ids is not None
    columns = (
        "index",
        *(("id",) if ids else ()),
        "true",
        "predicted",
        "p(true)",
        "p(predicted)",
        "loss",
    )
    table = _table(title, columns)
    for j in range(len(examples.index)):
        table.add_row(
            str(examples.index[j]),
            *((examples.ids[j],) if ids else ()),
            result.name(examples.target[j]),
            result.name(examples.predicted[j]),
            f"{examples.p_true[j]:.2e}",
            f"{examples.p_predicted[j]:.4f}",
            f"{examples.loss[j]:.3f}",
        )
    return table
