"""``logloss explain``: one sample, the article's way: a dataset sample through a checkpoint,
or one row of any model's predictions file (``--predictions FILE --row I`` or ``--id ID``).

The digit as text art, the logits, softmax as bars, predicted vs true class, the loss;
``--untrained`` puts the untrained model's view of the same sample beside it (the article's
before and after: ~ln 10, then ~0).  Torch loads inside the handler, after argument checks, and
only for ``--checkpoint``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logloss.cli import CLIError, add_json_flag, print_json
from logloss.cli.run_arguments import (
    add_prediction_arguments,
    add_run_arguments,
    check_source,
    load_run,
    read_predictions,
    run_sample,
    writing,
)
from logloss.data.render import image_to_text, save_png
from logloss.insight.explain import explain, format_small, render_bars

if TYPE_CHECKING:
    from logloss.insight.explain import Explanation


def register(subparsers: Any) -> None:
    """Add ``logloss explain``."""
    explain = subparsers.add_parser(
        "explain",
        help="one dataset sample through a checkpoint: digit, logits, softmax, loss",
        description="Show what a trained model does with one sample: the image as text art, "
        "its logits, softmax as bars, the predicted and true class, and the loss -ln p(true). "
        "--untrained adds the untrained weights' view of the same sample (loss near ln 10).",
    )
    add_run_arguments(explain, which=True, predictions=True)
    add_prediction_arguments(explain, calibration=False)
    explain.add_argument(
        "--row",
        type=int,
        default=None,
        metavar="I",
        help="with --predictions: the row to explain, from 0 (default: 0)",
    )
    explain.add_argument(
        "--id",
        default=None,
        metavar="ID",
        help="with --predictions: the row whose id is ID (an 'id' column or .npz 'ids')",
    )
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


def run_explain(args: argparse.Namespace) -> int:
    if check_source(args):
        return explain_prediction(args)
    if args.row is not None or args.id is not None:
        raise CLIError("--row and --id go with --predictions FILE; with --checkpoint use --index")
    checkpoint = load_run(args.checkpoint, args.which)
    image, label = run_sample(checkpoint, args.split, args.index, args.data_dir)
    # Class names only when they say more than the index (fashion-mnist's "sneaker", not "7").
    names = checkpoint.classes
    labels = None if names == [str(k) for k in range(len(names))] else names
    trained = explain(checkpoint.logits(image[None])[0], label, labels=labels)
    untrained = None
    if args.untrained:
        initial = load_run(args.checkpoint, "initial")
        untrained = explain(initial.logits(image[None])[0], label, labels=labels)
    if args.png is not None:
        writing("--png", args.png, lambda: save_png(args.png, image, scale=8))
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
    where = f"{checkpoint.config.dataset} {args.split}[{args.index}]"
    print(f"{where}, true class {names[label]}; {args.which} weights of {args.checkpoint}")
    print()
    print(trained.render() if untrained is None else before_after_text(untrained, trained))
    if args.png is not None:
        print(f"wrote {args.png}")
    return 0


def explain_prediction(args: argparse.Namespace) -> int:
    """One row of a predictions file through the article's steps (no torch)."""
    if args.untrained or args.png is not None:
        raise CLIError(
            "--untrained and --png go with --checkpoint; a predictions file has no "
            "weights or images"
        )
    from logloss.insight.prediction_row import explain_row, find_row  # NumPy only; off --help

    reading = read_predictions(args, args.predictions, args.labels)
    index = 0 if args.row is None and args.id is None else args.row
    row = find_row(reading, index=index, row_id=args.id)
    explanation = explain_row(reading, row)
    if args.json:
        print_json(
            {
                "source": {
                    "type": "predictions",
                    "predictions": str(args.predictions),
                    "kind": reading.choice.kind,
                },
                "row": row.index,
                "id": row.id,
                "target": row.label,
                "explanation": explanation.to_dict(),
            }
        )
        return 0
    named = f" (id {row.id})" if row.id is not None else ""
    print(
        f"{args.predictions} row {row.index}{named}, true class "
        f"{reading.classes.names[row.label]}; {reading.notes[0]}"
    )
    print()
    print(explanation.render())
    return 0


def before_after_text(before: Explanation, after: Explanation, *, width: int = 24) -> str:
    """Two explanations of one sample side by side (bars and numbers)."""
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
