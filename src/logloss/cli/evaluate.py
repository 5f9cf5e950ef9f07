"""``logloss evaluate``: run a checkpoint once over a split and print every diagnostic of
:mod:`logloss.insight.diagnostics` (``--json`` for programs, ``--figures DIR`` for PNGs).

Torch and matplotlib load inside the handler, after argument checks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logloss.cli import add_json_flag, print_json
from logloss.cli.run_arguments import add_run_arguments, check_at_least, writing
from logloss.insight.diagnostics import DEFAULT_BINS, DEFAULT_TOP_K  # NumPy only: cheap

if TYPE_CHECKING:
    from rich.table import Table

    from logloss.insight.diagnostics import Evaluation, Examples
    from logloss.insight.run_evaluation import SplitEvaluation


def register(subparsers: Any) -> None:
    """Add ``logloss evaluate``."""
    evaluate = subparsers.add_parser(
        "evaluate",
        help="accuracy, cross-entropy, calibration and the hardest samples of a checkpoint",
        description="Run the checkpoint once over a split and report accuracy, mean "
        "cross-entropy (nats) and perplexity, Brier score, the ln C baseline, per-class "
        "accuracy and loss, the confusion matrix, calibration (ECE, MCE, temperature scaling "
        "fitted on the validation split), the hardest samples, the most confident mistakes and "
        "the share of the loss carried by the worst 1% of samples.",
    )
    add_run_arguments(evaluate, which=True)
    evaluate.add_argument(
        "--bins",
        type=int,
        default=DEFAULT_BINS,
        metavar="M",
        help=f"confidence bins for ECE/MCE and the reliability diagram (default: {DEFAULT_BINS})",
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
        help="skip temperature scaling (which needs a forward pass over the validation split)",
    )
    evaluate.add_argument(
        "--figures",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write PNG figures into DIR: reliability, confusion, hardest, mistakes, "
        "loss concentration, training curves (default: none)",
    )
    add_json_flag(evaluate)
    evaluate.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    check_at_least(args.bins, "--bins", 1)
    check_at_least(args.top, "--top", 0)
    from logloss.insight.run_evaluation import evaluate_checkpoint  # torch: after the checks

    result = evaluate_checkpoint(
        args.checkpoint,
        split=args.split,
        which=args.which,
        data_dir=args.data_dir,
        calibrate=args.calibrate,
        n_bins=args.bins,
        top_k=args.top,
    )
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


def write_figures(result: SplitEvaluation, directory: Path) -> list[Path]:
    """Every diagnostic figure of ``result`` as PNG files in ``directory``."""
    from logloss.insight import plots  # matplotlib: only when figures are asked for
    from logloss.training.run_folder import read_metrics  # torch: after argument checks

    e = result.evaluation
    figures = {
        "reliability.png": lambda: plots.reliability_figure(e.reliability),
        "loss_concentration.png": lambda: plots.loss_concentration_figure(
            e.losses, worst_fraction=e.worst_fraction
        ),
        "hardest.png": lambda: plots.examples_figure(
            result.images, e.hardest, title="hardest samples: largest -ln p(true)"
        ),
        "confident_mistakes.png": lambda: plots.examples_figure(
            result.images, e.confident_mistakes, title="most confident mistakes"
        ),
    }
    if e.confusion is not None:
        figures["confusion.png"] = lambda: plots.confusion_figure(e.confusion)
    records = read_metrics(result.directory)
    if records:
        figures["training_curves.png"] = lambda: plots.training_curves_figure(
            records, num_classes=e.num_classes
        )
    return [plots.save_figure(make(), directory / name) for name, make in figures.items()]


def print_evaluation(result: SplitEvaluation) -> None:
    """The human-readable evaluation: summary, per class, confusion, hardest, mistakes."""
    from rich.console import Console  # rich: only for text output

    e = result.evaluation
    console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    title = (
        f"{result.dataset} {result.split}: {e.size} samples, {result.which} weights of "
        f"{result.directory}"
    )
    console.print(summary_table(e, title))
    console.print(per_class_table(e, result.classes))
    if e.confusion is not None and e.num_classes <= 20:
        console.print(confusion_table(e))
    console.print(examples_table(e.hardest, "hardest samples (largest -ln p(true))"))
    console.print(examples_table(e.confident_mistakes, "most confident mistakes"))
    timings = result.timings
    console.print(
        f"one forward pass over {e.size} samples: {timings['forward']:.3f} s; diagnostics "
        f"{timings['diagnostics']:.3f} s; total {timings['total']:.3f} s"
    )


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
    table = _table(title, ("measure", "value", "meaning"), left=(0, 2), show_header=False)
    errors = int((e.predicted != e.target).sum())
    bins = len(e.reliability.count)
    rows = [
        ("accuracy", f"{100 * e.accuracy:.2f}%", f"{errors} mistakes"),
        ("mean cross-entropy", f"{e.loss:.4f}", "nats, -1/N sum ln p(true)"),
        ("perplexity", f"{e.perplexity:.4f}", "e^loss: like guessing among this many classes"),
        (f"ln {e.num_classes} baseline", f"{e.uniform_loss:.4f}", "loss of a uniform guess"),
        ("Brier score", f"{e.brier:.4f}", "mean sum_c (p_c - onehot_c)^2, in [0, 2]"),
        ("ECE", f"{e.reliability.ece:.4f}", f"expected calibration error, {bins} bins"),
        ("MCE", f"{e.reliability.mce:.4f}", "maximum calibration error"),
        (
            f"worst {100 * e.worst_fraction:g}% share",
            f"{100 * e.worst_share:.1f}%",
            f"of the total loss is carried by the {e.worst_count} worst samples",
        ),
    ]
    t = e.temperature
    if t is not None:
        bound = " (at the search range's end)" if t.at_bound else ""
        rows += [
            (
                "temperature T",
                f"{t.temperature:.4f}",
                f"fitted on {t.fit_size} validation samples{bound}",
            ),
            ("loss after T", f"{t.loss_after:.4f}", f"was {t.loss_before:.4f}"),
            ("ECE after T", f"{t.ece_after:.4f}", f"was {t.ece_before:.4f}"),
        ]
    for row in rows:
        table.add_row(*row)
    return table


def per_class_table(e: Evaluation, classes: tuple[str, ...]) -> Table:
    """Samples, accuracy and mean loss of each class present in the split."""
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


def confusion_table(e: Evaluation) -> Table:
    """Counts [true, predicted], the diagonal in bold, zeros as dots."""
    classes = tuple(str(c) for c in range(e.num_classes))
    table = _table("confusion matrix (rows: true, columns: predicted)", ("", *classes), left=(0,))
    for c in range(e.num_classes):
        cells = [
            f"[bold]{n}[/bold]" if i == c else (str(n) if n else "[dim]·[/dim]")
            for i, n in enumerate(e.confusion[c])
        ]
        table.add_row(str(c), *cells)
    return table


def examples_table(examples: Examples, title: str) -> Table:
    """A ranked selection: index, true and predicted class, p(true), p(predicted), loss."""
    table = _table(title, ("index", "true", "predicted", "p(true)", "p(predicted)", "loss"))
    for j in range(len(examples.index)):
        table.add_row(
            str(examples.index[j]),
            str(examples.target[j]),
            str(examples.predicted[j]),
            f"{examples.p_true[j]:.2e}",
            f"{examples.p_predicted[j]:.4f}",
            f"{examples.loss[j]:.3f}",
        )
    return table
