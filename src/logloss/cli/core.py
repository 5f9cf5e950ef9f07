"""Core commands: ``logloss mle``, ``logloss sigmoid``, ``logloss softmax``, ``logloss loss``.

Each prints what the article shows for its step (human-readable text by default, ``--json`` for
programs).  The work is done by :mod:`logloss.likelihood`, :mod:`logloss.activations` and
:mod:`logloss.insight.explain` (NumPy only, so ``logloss --help`` stays fast).

Negative numbers are values, not options: ``logloss sigmoid 0 2 -2``,
``logloss loss --logits 0.0297 -0.0440 ... --target 7``, and also ``-1e4`` and ``-inf``.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from logloss.activations import sigmoid, softmax
from logloss.cli import CLIError, add_json_flag, print_json
from logloss.insight.explain import explain
from logloss.likelihood import mle

# argparse reads "-2" and "-0.5" as negative numbers but "-1e4" and "-inf" as unknown options.
# Its pattern is the private attribute _negative_number_matcher (checked on 3.10 to 3.13); these
# subcommands widen it to every float spelling.  Safe: none of their options looks like a number.
_NEGATIVE_NUMBER = re.compile(
    r"^-(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?$|^-inf(?:inity)?$", re.IGNORECASE
)


def _accept_negative_numbers(parser: argparse.ArgumentParser) -> None:
    if hasattr(parser, "_negative_number_matcher"):
        parser._negative_number_matcher = _NEGATIVE_NUMBER


def register(subparsers: Any) -> None:
    """Add the core subcommands to the ``logloss`` parser."""
    _add_mle(subparsers)
    _add_sigmoid(subparsers)
    _add_softmax(subparsers)
    _add_loss(subparsers)


def _add_mle(subparsers: Any) -> None:
    mle = subparsers.add_parser(
        "mle",
        help="maximum-likelihood estimate from observed outcomes (e.g. wbwbb)",
        description="Count the outcomes, write their likelihood as a formula, and find the "
        "probabilities that maximise it: in closed form (count / n) and numerically.",
    )
    mle.add_argument(
        "outcomes",
        nargs="+",
        metavar="OUTCOMES",
        help="one word whose characters are the outcomes (wbwbb), or several words, each one "
        "outcome (cat dog cat)",
    )
    mle.add_argument(
        "--no-numerical",
        dest="numerical",
        action="store_false",
        default=True,
        help="skip the numerical check (Newton's method on log L, in NumPy)",
    )
    add_json_flag(mle)
    mle.set_defaults(handler=run_mle)


def _add_sigmoid(subparsers: Any) -> None:
    sigmoid = subparsers.add_parser(
        "sigmoid",
        help="sigmoid of numbers, and its properties",
        description="sigmoid(t) = 1 / (1 + exp(-t)) of each T, with the properties the article "
        "lists: values in [0, 1], monotone, symmetric about (0, 0.5), slope s(1-s).",
    )
    _accept_negative_numbers(sigmoid)
    sigmoid.add_argument("t", nargs="+", type=float, metavar="T", help="logits, e.g. 0 2 -2")
    add_json_flag(sigmoid)
    sigmoid.set_defaults(handler=run_sigmoid)


def _add_softmax(subparsers: Any) -> None:
    softmax = subparsers.add_parser(
        "softmax",
        help="softmax of a vector of logits, and its properties",
        description="softmax(t)_i = exp(t_i) / sum_j exp(t_j): probabilities that sum to 1, "
        "largest for the largest logit, unchanged by adding a constant to every logit.",
    )
    _accept_negative_numbers(softmax)
    softmax.add_argument(
        "t", nargs="+", type=float, metavar="T", help="logits (-inf allowed), e.g. 0.0297 -0.0440"
    )
    add_json_flag(softmax)
    softmax.set_defaults(handler=run_softmax)


def _add_loss(subparsers: Any) -> None:
    loss = subparsers.add_parser(
        "loss",
        help="cross-entropy of one prediction, step by step (or: which class a loss belongs to)",
        description="The article's walkthrough for one prediction: softmax of the logits, the "
        "predicted class, p(target), the loss -ln p(target), PyTorch's CrossEntropyLoss beside "
        "it and the ln C loss of a uniform guess.  With --value, which target class explains a "
        "reported loss.",
    )
    _accept_negative_numbers(loss)
    loss.add_argument(
        "--logits",
        nargs="+",
        type=float,
        required=True,
        metavar="Z",
        help="one sample's logits, C >= 2 numbers (finite or -inf)",
    )
    loss.add_argument(
        "--target", type=int, default=None, metavar="K", help="the true class, in [0, C)"
    )
    loss.add_argument(
        "--value",
        type=float,
        default=None,
        metavar="X",
        help="a reported loss: say which target class it belongs to",
    )
    loss.add_argument(
        "--labels", nargs="+", default=None, metavar="NAME", help="C class names for the output"
    )
    loss.add_argument(
        "--width", type=int, default=40, help="characters of the bar for probability 1 (40)"
    )
    loss.add_argument(
        "--ascii", action="store_true", default=False, help="draw bars with # instead of blocks"
    )
    add_json_flag(loss)
    loss.set_defaults(handler=run_loss)


# --------------------------------------------------------------------------------------------
# handlers


def _check_numbers(values: Sequence[float], name: str, *, inf_allowed: bool) -> None:
    """NaN is never allowed; ``+inf`` only where the command defines it (sigmoid(inf) = 1).

    The message states the rule the check applies and names the position as ``T[1]``.
    """
    rule = "numbers (inf and -inf are allowed)" if inf_allowed else "finite or -inf (-inf: p = 0)"
    for index, value in enumerate(values):
        if math.isnan(value) or (value == math.inf and not inf_allowed):
            raise CLIError(f"{name}[{index}] is {value}; {name} must be {rule}")


def run_mle(args: argparse.Namespace) -> int:
    words: list[str] = args.outcomes
    outcomes: Sequence[Any] = words[0] if len(words) == 1 else words
    if all(symbol in ("0", "1") for symbol in outcomes):
        outcomes = [int(symbol) for symbol in outcomes]  # 0/1 outcomes: p = P(1)
    result = mle(outcomes, numerical=args.numerical)
    if args.json:
        print_json(result.to_dict())
        return 0

    # The symbol called p in the formula first, then the others in order of appearance.
    symbols = sorted(result.counts, key=lambda s: s != result.parameter)
    shown = " ".join(map(str, outcomes))
    counts = ", ".join(f"{s}: {result.counts[s]}" for s in symbols)
    lines = [f"outcomes: {shown}  (n = {result.n})", f"counts: {counts}"]
    if result.parameter is not None:
        lines.append(f"likelihood: L(p) = {result.formula}, with p = P({result.parameter})")
    else:
        lines.append(f"likelihood: L = {result.formula}")
    if result.derivation is not None:
        lines.append(f"maximum: {result.derivation}")
    lines.append("maximum-likelihood estimate, P(s) = count(s) / n:")
    lines += [
        f"  P({s}) = {result.fraction(s)} = {result.estimate[s]:.6g}"
        if result.fraction(s).denominator != 1
        else f"  P({s}) = {result.estimate[s]:.6g}"
        for s in symbols
    ]
    powers = " * ".join(
        f"{result.estimate[s]:.6g}" + (f"^{result.counts[s]}" if result.counts[s] > 1 else "")
        for s in symbols
        if result.counts[s] > 0
    )
    lines.append(f"likelihood at the estimate: {powers} = {result.likelihood:.6g}")
    lines.append(f"log-likelihood at the estimate: {result.log_likelihood:.6f}")
    if result.numerical is not None:
        found = ", ".join(f"P({s}) = {result.numerical[s]:.9f}" for s in symbols)
        steps = result.numerical_iterations
        lines.append(
            f"numerical check ({result.numerical_method}): {found}; largest difference from "
            f"count / n: {result.max_difference:.1e} after {steps} step{'' if steps == 1 else 's'}"
        )
    print("\n".join(lines))
    return 0


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Right-aligned plain-text columns."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    )


def run_sigmoid(args: argparse.Namespace) -> int:
    _check_numbers(args.t, "T", inf_allowed=True)
    t = np.array(args.t, dtype=np.float64)  # (n,)
    s = sigmoid(t)
    mirror = 1.0 - sigmoid(-t)  # the symmetry: sigmoid(t) = 1 - sigmoid(-t)
    slope = s * (1.0 - s)  # sigmoid'(t) = s (1 - s)
    order = np.argsort(t, kind="stable")
    checks = {
        "in_unit_interval": bool(np.all((s >= 0.0) & (s <= 1.0))),
        "monotone": bool(np.all(np.diff(s[order]) >= 0.0)),
        "symmetry_max_difference": float(np.max(np.abs(s - mirror))),
    }
    if args.json:
        print_json(
            {
                "t": t.tolist(),
                "sigmoid": s.tolist(),
                "one_minus_sigmoid_of_minus_t": mirror.tolist(),
                "slope": slope.tolist(),
                "checks": checks,
            }
        )
        return 0
    rows = [
        [f"{a:g}", f"{b:.6f}", f"{c:.6f}", f"{d:.6f}"]
        for a, b, c, d in zip(t, s, mirror, slope, strict=True)
    ]
    print(_table(["t", "sigmoid(t)", "1 - sigmoid(-t)", "slope s(1-s)"], rows))
    print("what it shows:")
    print(
        f"  in [0, 1], so it can be read as a probability: "
        f"{'yes' if checks['in_unit_interval'] else 'NO'}"
    )
    print(
        f"  monotone (a larger t never gives a smaller sigmoid): "
        f"{'yes' if checks['monotone'] else 'NO'}"
    )
    print(
        f"  symmetric about (0, 0.5), sigmoid(-t) = 1 - sigmoid(t): largest difference "
        f"{checks['symmetry_max_difference']:.1e}"
    )
    print("  differentiable everywhere, slope s(1-s) <= 0.25, the largest at t = 0")
    return 0


def run_softmax(args: argparse.Namespace) -> int:
    _check_numbers(args.t, "T", inf_allowed=False)  # softmax of +inf is undefined
    t = np.array(args.t, dtype=np.float64)  # (C,)
    if np.all(t == -math.inf):
        raise CLIError("every T is -inf: no class has a probability; give a finite number")
    p = softmax(t)
    shifted = np.exp(t - t.max())  # exp(t_i - max t): the numerators after the max shift
    argmax = int(np.argmax(t))
    shift_difference = float(np.max(np.abs(softmax(t + 100.0) - p)))
    two_class = float(sigmoid(t[1] - t[0])) if t.size == 2 else None
    summary = {
        "logits": t.tolist(),
        "probabilities": p.tolist(),
        "sum": float(p.sum()),
        "argmax": argmax,
        "uniform_probability": 1.0 / t.size,
        "shift_invariance_max_difference": shift_difference,
        "sigmoid_of_difference": two_class,
    }
    if args.json:
        print_json(summary)
        return 0
    rows = [
        [str(i), f"{a:g}", f"{b:.6g}", f"{c:.6f}"]
        for i, (a, b, c) in enumerate(zip(t, shifted, p, strict=True))
    ]
    print(_table(["i", "t_i", "exp(t_i - max t)", "softmax_i"], rows))
    print("what it shows:")
    print(f"  every value is in [0, 1] and they sum to {summary['sum']:.12f}")
    print(
        f"  the largest logit gets the largest probability: class {argmax}, p = {p[argmax]:.6f} "
        f"(a uniform guess would be 1/{t.size} = {1.0 / t.size:.6f})"
    )
    print(f"  adding 100 to every logit changes nothing: largest difference {shift_difference:.1e}")
    if two_class is not None:
        print(
            f"  two classes: softmax_1 = sigmoid(t_1 - t_0) = {two_class:.6f}, "
            f"so softmax generalises the sigmoid"
        )
    return 0


def run_loss(args: argparse.Namespace) -> int:
    if args.target is None and args.value is None:
        raise CLIError("give --target K (the true class) or --value X (a reported loss), or both")
    if args.width < 1:
        raise CLIError(f"--width must be at least 1, got {args.width}")
    # explain() checks the logits: "logits[1] is nan; logits must be finite or -inf (...)".
    explanation = explain(args.logits, args.target, value=args.value, labels=args.labels)
    if args.json:
        print_json(explanation.to_dict())
        return 0
    print(explanation.render(width=args.width, ascii=args.ascii))
    return 0
