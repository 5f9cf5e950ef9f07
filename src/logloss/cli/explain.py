"""Explain commands: ``logloss explain``, ``logloss evaluate``, ``logloss report``.

- ``explain`` shows one dataset sample through a checkpoint: the digit as text art, the logits,
  softmax as bars, predicted vs true class, the loss; ``--untrained`` puts the untrained model's
  view of the same sample beside it (the article's before and after: ~ln 10, then ~0).
- ``evaluate`` runs the checkpoint once over a split and prints every diagnostic of
  :mod:`logloss.diagnostics` (``--json`` for programs, ``--figures DIR`` for PNGs).
- ``report`` writes the one-page HTML story of :mod:`logloss.report`.

Heavy libraries (torch, matplotlib) are imported inside the handlers so ``logloss --help`` stays
fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from logloss.cli import CLIError, add_checkpoint_arguments, add_json_flag, print_json
from logloss.cli.data import add_data_arguments
from logloss.diagnostics import DEFAULT_BINS, DEFAULT_TOP_K  # numpy only: already loaded

SPLIT_CHOICES = ("test", "validation", "train")


def _add_checkpoint(parser: argparse.ArgumentParser, *, which: bool) -> None:
    add_checkpoint_arguments(parser, which=which)
    parser.add_argument(
        "--split",
        choices=SPLIT_CHOICES,
        default="test",
        help="which samples: test, or the run's own validation/train parts of the training set "
        "(same seed and size as training) (default: test)",
    )
    add_data_arguments(parser, dataset=False)  # the dataset is the checkpoint's own


def register(subparsers: Any) -> None:
    """Add ``explain``, ``evaluate`` and ``report`` to the ``logloss`` parser."""
    explain = subparsers.add_parser(
        "explain",
        help="one dataset sample through a checkpoint: digit, logits, softmax, loss",
        description="Show what a trained model does with one sample: the image as text art, "
        "its logits, softmax as bars, the predicted and true class, and the loss -ln p(true). "
        "--untrained adds the untrained weights' view of the same sample (loss near ln 10).",
    )
    _add_checkpoint(explain, which=True)
    explain.add_argument(
        "--index",
        type=int,
        default=0,
        metavar="I",
        help="sample number in the split, from 0 (default: 0, the article's 7)",
    )
    explain.add_argument(
        "--untrained",
        action="store_true",
        default=False,
        help="also show the untrained (initial) weights on the same sample, before and after",
    )
    explain.add_argument(
        "--png",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the sample's image as a PNG, 8x enlarged (default: none)",
    )
    add_json_flag(explain)
    explain.set_defaults(handler=run_explain)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="accuracy, cross-entropy, calibration and the hardest samples of a checkpoint",
        description="Run the checkpoint once over a split and report accuracy, mean "
        "cross-entropy (nats) and perplexity, Brier score, the ln C baseline, per-class "
        "accuracy and loss, the confusion matrix, calibration (ECE, MCE, temperature scaling "
        "fitted on the validation split), the hardest samples, the most confident mistakes and "
        "the share of the loss carried by the worst 1% of samples.",
    )
    _add_checkpoint(evaluate, which=True)
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

    report = subparsers.add_parser(
        "report",
        help="one self-contained HTML page telling the article's story on your run",
        description="Write one HTML page (images embedded) that walks from likelihood to "
        "log-likelihood, softmax, cross-entropy, training, the same sample before and after, "
        "where the remaining loss lives, and calibration, with your run's numbers.",
    )
    _add_checkpoint(report, which=False)
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
        help="the sample shown before and after training (default: 0)",
    )
    report.set_defaults(handler=run_report)


# --------------------------------------------------------------------------- helpers


def _load(directory: Path, which: str) -> Any:
    from logloss.checkpoint import load_checkpoint

    return load_checkpoint(directory, which=which)


def _sample(checkpoint: Any, split: str, index: int, data_dir: Path | None) -> tuple[Any, int]:
    """(image (H, W) uint8, label) of sample ``index`` of ``split``."""
    from logloss.diagnostics import load_split

    images, labels = load_split(checkpoint.config, split, data_dir=data_dir)
    if not 0 <= index < len(labels):
        raise CLIError(
            f"--index {index} is out of range: the {split} split has {len(labels)} samples, "
            f"numbered 0 to {len(labels) - 1}"
        )
    return images[index], int(labels[index])


def _writing(flag: str, path: Path, write: Any) -> Any:
    """Call ``write()``; an OS error (no such folder, no permission) becomes a one-line error."""
    try:
        return write()
    except OSError as error:
        raise CLIError(f"cannot write {flag} {path}: {error.strerror or error}") from None


def _check_positive(value: int, flag: str, minimum: int) -> None:
    if value < minimum:
        raise CLIError(f"{flag} must be at least {minimum}, got {value}")


# --------------------------------------------------------------------------- explain


def run_explain(args: argparse.Namespace) -> int:
    from logloss.data.render import image_to_text, save_png
    from logloss.explain import explain

    checkpoint = _load(args.checkpoint, args.which)
    image, label = _sample(checkpoint, args.split, args.index, args.data_dir)
    # Class names only when they say more than the index (fashion-mnist's "sneaker", not "7").
    names = checkpoint.classes
    labels = None if names == [str(k) for k in range(len(names))] else names
    trained = explain(checkpoint.logits(image[None])[0], label, labels=labels)
    untrained = None
    if args.untrained:
        initial = _load(args.checkpoint, "initial")
        untrained = explain(initial.logits(image[None])[0], label, labels=labels)
    if args.png is not None:
        _writing("--png", args.png, lambda: save_png(args.png, image, scale=8))

    where = f"{checkpoint.config.dataset} {args.split}[{args.index}]"
    if args.json:
        print_json(
            {
                "checkpoint": str(args.checkpoint),
                "weights": args.which,
                "dataset": checkpoint.config.dataset,
                "split": args.split,
                "index": args.index,
                "target": label,
                "explanation": trained.to_dict(),
                "untrained": None if untrained is None else untrained.to_dict(),
                "png": None if args.png is None else str(args.png),
            }
        )
        return 0
    print(image_to_text(image))
    print(f"{where}, true class {names[label]}; {args.which} weights of {args.checkpoint}")
    print()
    if untrained is None:
        print(trained.render())
    else:
        print(before_after_text(untrained, trained))
    if args.png is not None:
        print(f"wrote {args.png}")
    return 0


def before_after_text(before: Any, after: Any, *, width: int = 24) -> str:
    """Two :class:`~logloss.explain.Explanation` of one sample side by side (bars and numbers)."""
    from logloss.explain import format_small, render_bars

    left = render_bars(before.probabilities, before.labels, width).splitlines()
    right = render_bars(after.probabilities, after.labels, width).splitlines()
    heading = "untrained (initial weights)"
    column = max(len(heading), *(len(line) for line in left)) + 4
    y = after.target
    rows = [
        f"{heading:<{column}}trained",
        *(f"{a:<{column}}{b}" for a, b in zip(left, right, strict=True)),
        "",
        f"{'':<24}{'untrained':>12}{'trained':>12}",
        f"{'predicted class':<24}{before.predicted:>12}{after.predicted:>12}",
        f"{f'p(true = {y})':<24}{before.p_target:>12.4f}{after.p_target:>12.4f}",
        f"{'loss = -ln p(true)':<24}{format_small(before.loss):>12}{format_small(after.loss):>12}",
        f"{'entropy (nats)':<24}{format_small(before.entropy):>12}"
        f"{format_small(after.entropy):>12}",
        f"{f'ln {before.num_classes} (uniform guess)':<24}{before.uniform_loss:>12.4f}",
    ]
    return "\n".join(rows)


# --------------------------------------------------------------------------- evaluate


def run_evaluate(args: argparse.Namespace) -> int:
    from logloss.diagnostics import evaluate_checkpoint

    _check_positive(args.bins, "--bins", 1)
    _check_positive(args.top, "--top", 0)
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
        written = _writing("--figures", args.figures, lambda: write_figures(result, args.figures))
    if args.json:
        payload = result.to_dict()
        payload["figures"] = [str(p) for p in written]
        print_json(payload)
        return 0
    print_evaluation(result)
    for path in written:
        print(f"wrote {path}")
    return 0


def write_figures(result: Any, directory: Path) -> list[Path]:
    """Every diagnostic figure of ``result`` as PNG files in ``directory``."""
    from logloss import plots
    from logloss.report import read_metrics

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


def print_evaluation(result: Any) -> None:
    """The human-readable evaluation: summary, per class, confusion, hardest, mistakes."""
    from rich.console import Console
    from rich.table import Table

    e = result.evaluation
    console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    title = (
        f"{result.dataset} {result.split}: {e.size} samples, {result.which} weights of "
        f"{result.directory}"
    )
    summary = Table(title=title, show_header=False, title_justify="left")
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    summary.add_column("meaning")
    errors = int((e.predicted != e.target).sum())
    rows = [
        ("accuracy", f"{100 * e.accuracy:.2f}%", f"{errors} mistakes"),
        ("mean cross-entropy", f"{e.loss:.4f}", "nats, -1/N sum ln p(true)"),
        ("perplexity", f"{e.perplexity:.4f}", "e^loss: like guessing among this many classes"),
        (f"ln {e.num_classes} baseline", f"{e.uniform_loss:.4f}", "loss of a uniform guess"),
        ("Brier score", f"{e.brier:.4f}", "mean sum_c (p_c - onehot_c)^2, in [0, 2]"),
        (
            "ECE",
            f"{e.reliability.ece:.4f}",
            f"expected calibration error, {len(e.reliability.count)} bins",
        ),
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
        summary.add_row(*row)
    console.print(summary)

    per_class = Table(title="per class", title_justify="left")
    for name in ("class", "samples", "accuracy", "mean loss"):
        per_class.add_column(name, justify="right")
    for c in range(e.num_classes):
        if e.class_count[c]:
            per_class.add_row(
                result.classes[c] if c < len(result.classes) else str(c),
                str(e.class_count[c]),
                f"{100 * e.class_accuracy[c]:.2f}%",
                f"{e.class_loss[c]:.4f}",
            )
    console.print(per_class)

    if e.confusion is not None and e.num_classes <= 20:
        confusion = Table(
            title="confusion matrix (rows: true, columns: predicted)", title_justify="left"
        )
        confusion.add_column("")
        for c in range(e.num_classes):
            confusion.add_column(str(c), justify="right")
        for c in range(e.num_classes):
            cells = [
                f"[bold]{n}[/bold]" if i == c else (str(n) if n else "[dim]·[/dim]")
                for i, n in enumerate(e.confusion[c])
            ]
            confusion.add_row(str(c), *cells)
        console.print(confusion)

    for examples, heading in (
        (e.hardest, "hardest samples (largest -ln p(true))"),
        (e.confident_mistakes, "most confident mistakes"),
    ):
        table = Table(title=heading, title_justify="left")
        for name in ("index", "true", "predicted", "p(true)", "p(predicted)", "loss"):
            table.add_column(name, justify="right")
        for j in range(len(examples.index)):
            table.add_row(
                str(examples.index[j]),
                str(examples.target[j]),
                str(examples.predicted[j]),
                f"{examples.p_true[j]:.2e}",
                f"{examples.p_predicted[j]:.4f}",
                f"{examples.loss[j]:.3f}",
            )
        console.print(table)
    timings = result.timings
    console.print(
        f"one forward pass over {e.size} samples: {timings['forward']:.3f} s; diagnostics "
        f"{timings['diagnostics']:.3f} s; total {timings['total']:.3f} s"
    )


# --------------------------------------------------------------------------- report


def run_report(args: argparse.Namespace) -> int:
    from logloss.report import build_report, write_report

    report = build_report(
        args.checkpoint, split=args.split, index=args.index, data_dir=args.data_dir
    )
    _writing("--out", args.out, lambda: write_report(args.out, report.html))
    print(f"wrote {args.out} ({len(report.html) / 1024:.0f} KiB) in {report.seconds:.2f} s")
    return 0
