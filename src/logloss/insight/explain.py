"""Explain one prediction: from logits to softmax to the cross-entropy loss, step by step.

The article's walkthrough for one sample with logits ``z`` (C classes) and true class ``y``::

    p = softmax(z)                   p_i = exp(z_i) / sum_j exp(z_j)
    predicted = argmax_i p_i         (= argmax_i z_i)
    loss = -ln p_y = logsumexp(z) - z_y          (what torch.nn.CrossEntropyLoss returns)
    uniform guess: p_i = 1/C  ->  loss = ln C    (ln 10 = 2.3026: an untrained model's loss)

and the reverse question: which class ``k`` has ``-ln p_k`` closest to a reported loss?  (The
article's untrained model printed 2.2604, which is class 8's loss, not the true class 7's.)

:func:`explain` computes all of it in float64 and returns an :class:`Explanation`;
:func:`render_bars` draws probabilities as a plain-text bar chart for terminals.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from logloss._json import json_ready
from logloss._tensors import is_tensor
from logloss.activations import log_softmax
from logloss.insight import markup

__all__ = ["Explanation", "explain", "format_small", "render_bars"]

# Partial blocks for sub-character bar resolution: index k draws k/8 of a cell.
_EIGHTHS = ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")
_FULL = "█"


# --------------------------------------------------------------------------------------------
# validation


def _as_vector(values: Any, name: str) -> np.ndarray:
    """``values`` (list, NumPy array or torch tensor) as a float64 vector (C,).

    A (1, C) batch of one sample is accepted and flattened, as ``model(x)`` prints it.
    """
    if is_tensor(values):
        if values.is_complex():  # .double() would silently drop the imaginary part
            raise ValueError(
                f"{name} must be real numbers, got a complex tensor ({values.dtype}); pass .real"
            )
        values = values.detach().cpu().double().numpy()
    try:
        array = np.asarray(values)
    except ValueError:  # NumPy's "inhomogeneous shape" message for a ragged nested list
        raise ValueError(
            f"{name} must be one sample's vector of numbers, got rows of different lengths; "
            f"pass a flat list of C numbers"
        ) from None
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be real numbers, got dtype {array.dtype}")
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be one sample's vector of shape (C,) or (1, C), got shape "
            f"{tuple(array.shape)}; for a batch, pass one row at a time"
        )
    return array.astype(np.float64)


def _check_logits(logits: Any) -> np.ndarray:
    z = _as_vector(logits, "logits")
    if z.size < 2:
        raise ValueError(f"logits need at least 2 classes, got {z.size}")
    for index, value in enumerate(z):
        if math.isnan(value) or value == math.inf:
            raise ValueError(
                f"logits[{index}] is {value}; logits must be finite or -inf "
                f"(-inf means probability 0)"
            )
    if np.all(z == -math.inf):
        raise ValueError("all logits are -inf: no class has a probability, softmax is undefined")
    return z


def _check_target_index(target: Any, num_classes: int) -> int:
    if isinstance(target, bool):
        raise ValueError(f"target must be a class index, got {target!r}")
    try:
        index = operator.index(target)
    except TypeError:
        raise ValueError(
            f"target must be an integer class index, got {target!r} ({type(target).__name__})"
        ) from None
    if not 0 <= index < num_classes:
        raise ValueError(
            f"target {index} is outside [0, {num_classes}); the logits have {num_classes} classes"
        )
    return index


def _check_value(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"value must be a loss (a number >= 0), got {value!r}")
    loss = float(value)
    if not (math.isfinite(loss) and loss >= 0.0):
        raise ValueError(f"value must be a finite loss >= 0 (a cross-entropy), got {loss}")
    return loss


def _check_class_names(labels: Any, num_classes: int) -> tuple[str, ...] | None:
    if labels is None:
        return None
    names = tuple(str(label) for label in labels)
    if len(names) != num_classes:
        raise ValueError(f"got {len(names)} labels for {num_classes} classes; give one per class")
    return names


# --------------------------------------------------------------------------------------------
# the result


@dataclass(frozen=True)
class Explanation:
    """Everything about one prediction; see :func:`explain`.

    Attributes:
        logits: the C logits ``z`` (float64).
        probabilities: ``softmax(z)``, C values summing to 1.
        losses: ``-ln p_k`` for every class k: the loss the sample would have if k were its target.
        predicted: ``argmax z`` (the first on a tie, as NumPy and PyTorch).
        p_predicted: its probability.
        runner_up: the second most probable class.
        margin: ``p[predicted] - p[runner_up]``, in probability (0 = a tie, 1 = certain).
        logit_margin: ``z[predicted] - z[runner_up] = ln(p[predicted] / p[runner_up])``.
        entropy: ``-sum_i p_i ln p_i`` in nats, between 0 (certain) and ``ln C`` (uniform).
        uniform_loss: ``ln C``, the loss of a uniform guess.
        target: the true class, or None.
        p_target: ``p[target]``.
        loss: ``-ln p[target] = logsumexp(z) - z[target]``, computed as ``-log_softmax(z)[target]``.
        torch_loss: ``torch.nn.CrossEntropyLoss()`` on the same logits (float64), or None when
            not asked for.
        value: a reported loss to explain, or None.
        explained_by: the class whose ``-ln p_k`` is closest to ``value``.
        value_gap: ``losses[explained_by] - value``.
        next_closest: the class with the second closest loss (how unambiguous the answer is).
        next_gap: ``losses[next_closest] - value``.
        labels: class names, or None (classes are then called by their index).
    """

    logits: tuple[float, ...]
    probabilities: tuple[float, ...]
    losses: tuple[float, ...]
    predicted: int
    p_predicted: float
    runner_up: int
    margin: float
    logit_margin: float
    entropy: float
    uniform_loss: float
    target: int | None = None
    p_target: float | None = None
    loss: float | None = None
    torch_loss: float | None = None
    value: float | None = None
    explained_by: int | None = None
    value_gap: float | None = None
    next_closest: int | None = None
    next_gap: float | None = None
    labels: tuple[str, ...] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.logits)

    @property
    def correct(self) -> bool | None:
        """Whether the predicted class is the target (None without a target)."""
        return None if self.target is None else self.predicted == self.target

    def name(self, k: int) -> str:
        """How class ``k`` is called in text: ``"7"`` or ``"7 (sneaker)"`` with labels."""
        return str(k) if self.labels is None else f"{k} ({self.labels[k]})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of every field plus ``num_classes`` and ``correct``.

        Non-finite floats (a -inf logit, an infinite loss) become the strings ``"-Infinity"``,
        ``"Infinity"``, ``"NaN"`` so the output is strict JSON.
        """
        fields = json_ready(asdict(self))
        fields["num_classes"] = self.num_classes
        fields["correct"] = self.correct
        return fields

    def __repr__(self) -> str:
        target = "" if self.target is None else f", target {self.name(self.target)}"
        loss = "" if self.loss is None else f", loss {format_small(self.loss)}"
        return (
            f"<Explanation of {self.num_classes} classes: predicted {self.name(self.predicted)} "
            f"(p {self.p_predicted:.4f}){target}{loss}>"
        )

    def _repr_html_(self) -> str:
        """The walkthrough as an HTML table (one row per class, softmax as bars), for Jupyter."""
        rows = []
        for k in range(self.num_classes):
            notes = [
                n
                for n, hit in (("predicted", k == self.predicted), ("target", k == self.target))
                if hit
            ]
            rows.append(
                [
                    markup.escape(self.name(k)),
                    f"{self.logits[k]:.4f}",
                    f"{self.probabilities[k]:.4f}",
                    markup.bar(self.probabilities[k]),
                    format_small(self.losses[k]),
                    markup.escape(", ".join(notes)),
                ]
            )
        table = markup.table(
            ["class", "logit z", "p = softmax(z)", "", "-ln p", ""], rows, "explanation"
        )
        lines = [
            f"entropy {format_small(self.entropy)} nats; ln {self.num_classes} = "
            f"{self.uniform_loss:.4f} (uniform guess)"
        ]
        if self.target is not None:
            lines.insert(
                0,
                f"loss = -ln p({self.target}) = logsumexp(z) - z[{self.target}] = "
                f"{format_small(self.loss)} ({'correct' if self.correct else 'wrong'})",
            )
        text = "".join(f"<p>{markup.escape(line)}</p>" for line in lines)
        return f'<div class="logloss-explanation">{table}{text}</div>'

    def render(self, *, width: int = 40, digits: int = 4, ascii: bool = False) -> str:
        """The article's walkthrough as plain text: logits, softmax bars, prediction, loss.

        ``width``, ``digits`` and ``ascii`` are passed to :func:`render_bars`.
        """
        f = f".{digits}f"
        c = self.num_classes
        marks: dict[int, str] = {self.predicted: "predicted"}
        if self.target is not None:
            marks[self.target] = "target" if self.target != self.predicted else "predicted, target"
        if self.explained_by is not None and self.explained_by not in marks:
            marks[self.explained_by] = "explains the value"
        lines = [
            f"logits z ({c} classes): " + " ".join(f"{v:{f}}" for v in self.logits),
            "softmax p_i = exp(z_i) / sum_j exp(z_j):",
            render_bars(
                self.probabilities, self.labels, width, marks=marks, digits=digits, ascii=ascii
            ),
            f"predicted class: {self.name(self.predicted)}, "
            f"p = {self.p_predicted:{f}} (the largest probability)",
            f"runner-up: {self.name(self.runner_up)}, margin p - p' = {self.margin:{f}} "
            f"(logits {self.logit_margin:{f}} apart)",
        ]
        if self.target is not None:
            y = self.target
            verdict = "correct" if self.correct else "wrong"
            lines += [
                f"true class: {self.name(y)} ({verdict}), p({y}) = {self.p_target:{f}}",
                f"loss = -ln p({y}) = logsumexp(z) - z[{y}] = {format_small(self.loss, digits)}",
            ]
            if self.torch_loss is not None:
                # Equal losses differ by 0, also when both are inf (inf - inf would print "nan").
                same = self.torch_loss == self.loss
                difference = 0.0 if same else abs(self.torch_loss - self.loss)
                lines.append(
                    f"PyTorch CrossEntropyLoss: {format_small(self.torch_loss, digits)} "
                    f"(difference {difference:.1e})"
                )
        compare = ""
        if self.loss is not None:
            below = self.uniform_loss - self.loss
            compare = f": this loss is {abs(below):{f}} {'below' if below >= 0 else 'above'} it"
        lines.append(
            f"uniform guess over {c} classes: loss ln {c} = {self.uniform_loss:{f}}{compare}"
        )
        lines.append(
            f"entropy of the prediction: {format_small(self.entropy, digits)} nats "
            f"(0 = certain, ln {c} = {self.uniform_loss:{f}} = uniform)"
        )
        if self.value is not None:
            k, j = self.explained_by, self.next_closest
            lines.append(
                f"reported loss {self.value:{f}} is closest to -ln p({k}) = {self.losses[k]:{f}} "
                f"(off by {self.value_gap:+.{digits}f}): class {self.name(k)} explains it"
            )
            lines.append(
                f"  next closest: class {self.name(j)}, -ln p({j}) = {self.losses[j]:{f}} "
                f"(off by {self.next_gap:+.{digits}f})"
            )
            if self.target is not None and self.target != k:
                lines.append(
                    f"  the true class {self.name(self.target)} would give {self.loss:{f}}, "
                    f"so the reported loss does not belong to target {self.target}"
                )
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# public API


def explain(
    logits: Any,
    target: Any = None,
    *,
    value: Any = None,
    labels: Sequence[Any] | None = None,
    torch_reference: bool = True,
) -> Explanation:
    """Explain one prediction: softmax, predicted class, ``-ln p(target)``, and more.

    ``p = softmax(z)``; ``loss = -ln p[target] = logsumexp(z) - z[target]`` (log space, so a
    confident wrong prediction gives a large finite loss rather than ``-ln 0``).  With ``value``,
    finds ``argmin_k |(-ln p_k) - value|``: the target class a reported loss belongs to.

    Args:
        logits: one sample's logits, shape (C,) or (1, C), C >= 2; list, NumPy array or torch
            tensor (computed in float64).  Entries must be finite or -inf.
        target: the true class index in [0, C), or None.
        value: a reported loss (finite, >= 0) to attribute to a class, or None.
        labels: C class names for the text rendering, or None.
        torch_reference: also compute PyTorch's ``CrossEntropyLoss`` (imports torch); False
            leaves ``torch_loss`` None.

    Returns:
        :class:`Explanation`.

    Raises:
        ValueError: logits of the wrong shape, NaN or +inf logits, all -inf, fewer than 2
            classes, a target outside [0, C), a negative or non-finite value, wrong label count.

    >>> e = explain([0.0, 0.0, 0.0, 0.0], target=2)
    >>> round(e.loss, 6) == round(e.uniform_loss, 6) == round(math.log(4), 6)
    True
    >>> explain([0.1, 2.0, -1.0], value=0.2).explained_by
    1
    """
    z = _check_logits(logits)
    c = z.size
    y = None if target is None else _check_target_index(target, c)
    reported = None if value is None else _check_value(value)
    names = _check_class_names(labels, c)
    log_p = log_softmax(z)  # (C,) stable: z - logsumexp(z); -inf where z is -inf
    fields = _prediction_fields(z, log_p)
    if y is not None:
        fields.update(_target_fields(z, log_p, y, torch_reference))
    if reported is not None:
        fields.update(_value_fields(-log_p, reported))
    return Explanation(labels=names, **fields)


def _prediction_fields(z: np.ndarray, log_p: np.ndarray) -> dict[str, Any]:
    """Logits, probabilities, per-class losses, the prediction, its runner-up and the entropy."""
    p = np.exp(log_p)
    # Sort by logit (stable, so ties keep index order and the first maximum is the prediction).
    top, second = (int(k) for k in np.argsort(-z, kind="stable")[:2])
    nonzero = p > 0  # 0 ln 0 = 0 in the entropy
    return {
        "logits": tuple(z.tolist()),
        "probabilities": tuple(p.tolist()),
        "losses": tuple((-log_p).tolist()),
        "predicted": top,
        "p_predicted": float(p[top]),
        "runner_up": second,
        "margin": float(p[top] - p[second]),
        "logit_margin": float(z[top] - z[second]),
        "entropy": float(-np.sum(p[nonzero] * log_p[nonzero])),
        "uniform_loss": math.log(z.size),
    }


def _target_fields(
    z: np.ndarray, log_p: np.ndarray, target: int, torch_reference: bool
) -> dict[str, Any]:
    """The true class, its probability, ``-ln p(target)`` and PyTorch's value of it."""
    return {
        "target": target,
        "p_target": float(np.exp(log_p[target])),
        "loss": float(-log_p[target]),  # -log_softmax(z)[y] = logsumexp(z) - z[y]
        "torch_loss": _torch_loss(z, target) if torch_reference else None,
    }


def _value_fields(losses: np.ndarray, reported: float) -> dict[str, Any]:
    """The class whose ``-ln p_k`` is closest to a reported loss, and the next closest."""
    distance = np.abs(losses - reported)  # inf for -inf logits, never NaN (reported finite)
    order = np.argsort(distance, kind="stable")
    k, j = int(order[0]), int(order[1])
    return {
        "value": reported,
        "explained_by": k,
        "value_gap": float(losses[k] - reported),
        "next_closest": j,
        "next_gap": float(losses[j] - reported),
    }


def _torch_loss(z: np.ndarray, target: int) -> float:
    """PyTorch's ``CrossEntropyLoss`` for one sample, as the article computes it."""
    import torch  # the article's reference value; `import logloss` stays NumPy-only

    loss_fn = torch.nn.CrossEntropyLoss()
    return float(loss_fn(torch.from_numpy(z)[None, :], torch.tensor([target])))


def format_small(x: float, digits: int = 4) -> str:
    """``x`` with ``digits`` decimals, or in scientific notation when that would print as zero.

    A confident model's loss is often below 1e-4: "0.0000" would hide it.

    >>> format_small(2.2941), format_small(2.1e-05), format_small(0.0)
    ('2.2941', '2.10e-05', '0.0000')
    """
    if x != 0 and math.isfinite(x) and abs(x) < 0.5 * 10**-digits:
        return f"{x:.2e}"
    return f"{x:.{digits}f}"


def render_bars(
    probabilities: Any,
    labels: Sequence[Any] | None = None,
    width: int = 40,
    *,
    marks: Mapping[int, str] | None = None,
    digits: int = 4,
    ascii: bool = False,
) -> str:
    """A plain-text horizontal bar chart of probabilities, one line per class.

    Each line is ``label  p  bar``; a bar is ``p * width`` characters long (full scale = 1),
    drawn with eighth-width Unicode blocks, or ``round(p * width)`` ``#`` with ``ascii=True``.

    Args:
        probabilities: shape (C,) or (1, C), values in [0, 1] (they need not sum to 1).
        labels: C names; default the class indices.
        width: characters for probability 1 (>= 1).
        marks: class index -> a note printed after its bar (e.g. ``{7: "target"}``).
        digits: decimals of the printed probabilities.
        ascii: draw with ``#`` only.

    Returns:
        the chart, lines joined by newlines (no trailing newline or trailing spaces).

    >>> print(render_bars([0.25, 0.75], ["cat", "dog"], width=8, ascii=True))
    cat  0.2500  ##
    dog  0.7500  ######
    """
    p = _as_vector(probabilities, "probabilities")
    for index, value in enumerate(p):
        # 1e-6 leaves room for float32 rounding (a softmax that sums to 1.0000001).
        if not 0.0 <= value <= 1.0 + 1e-6:
            raise ValueError(f"probabilities[{index}] is {value}, outside [0, 1]")
    if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    names = [str(k) for k in range(p.size)] if labels is None else list(map(str, labels))
    if len(names) != p.size:
        raise ValueError(f"got {len(names)} labels for {p.size} probabilities")
    marks = dict(marks or {})
    name_width = max(len(name) for name in names)
    lines = []
    for k, (name, value) in enumerate(zip(names, p, strict=True)):
        if ascii:
            bar = "#" * round(value * width)
        else:
            eighths = round(value * width * 8)
            bar = _FULL * (eighths // 8) + _EIGHTHS[eighths % 8]
        line = f"{name:>{name_width}}  {value:.{digits}f}  {bar}"
        if k in marks:
            line = f"{line:<{name_width + digits + 6 + width + 1}}  <- {marks[k]}"
        lines.append(line.rstrip())
    return "\n".join(lines)
