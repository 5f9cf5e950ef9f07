"""``logloss explain``: one dataset sample through a checkpoint, the article's way.

The digit as text art, the logits, softmax as bars, predicted vs true class, the loss;
``--untrained`` puts the untrained model's view of the same sample beside it (the article's
before and after: ~ln 10, then ~0).  Torch loads inside the handler, after argument checks.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logloss.cli import add_json_flag, print_json
from logloss.cli.run_arguments import add_run_arguments, load_run, run_sample, writing
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
    add_run_arguments(explain, which=True)
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
