"""The result of an evaluation, whatever the source: numbers, where they come from, figures, and
how a terminal or a notebook shows them.

:class:`EvaluationResult` is what ``logloss.evaluate`` (predictions), ``evaluate_model`` and
``evaluate_checkpoint`` return.  :meth:`~EvaluationResult.to_dict` is the one JSON schema of
docs/predictions.md; the ``*_figure`` methods return matplotlib Figures; ``_repr_html_`` shows
the tables and the reliability diagram inline in Jupyter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from logloss._json import dumps
from logloss.insight import markup
from logloss.insight.binning import EDGE_RULE
from logloss.insight.evaluation import Evaluation, Examples

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SCHEMA = "logloss.evaluation/1"


def summary_rows(e: Evaluation) -> list[tuple[str, str, str]]:
    """(measure, value, meaning) of the headline numbers, for text and HTML tables alike."""
    bins = len(e.reliability.count)
    rows = [
        ("accuracy", f"{100 * e.accuracy:.2f}%", f"{e.errors} mistakes"),
        ("mean cross-entropy", f"{e.loss:.4f}", "nats, -1/N sum ln p(true)"),
        ("perplexity", f"{e.perplexity:.4f}", "e^loss: like guessing among this many classes"),
        (f"ln {e.num_classes} baseline", f"{e.uniform_loss:.4f}", "loss of a uniform guess"),
        (
            "Brier score",
            f"{e.brier:.4f}",
            "mean (P(1) - y)^2, in [0, 1]"
            if e.binary
            else "mean sum_c (p_c - onehot_c)^2, in [0, 2]",
        ),
        (
            "ECE",
            f"{e.reliability.ece:.4f}",
            f"expected calibration error, {bins} {e.reliability.binning} bins",
        ),
        ("MCE", f"{e.reliability.mce:.4f}", "maximum calibration error"),
        ("class-wise ECE", f"{e.classwise_ece:.4f}", "mean over classes of each p_c's ECE"),
        (
            f"worst {100 * e.worst_fraction:g}% share",
            f"{100 * e.worst_share:.1f}%",
            f"of the total loss is carried by the {e.worst_count} worst samples",
        ),
    ]
    if e.positive is not None:
        rows.insert(7, ("ECE of P(1)", f"{e.positive.ece:.4f}", "calibration of P(class 1)"))
    t = e.temperature
    if t is not None:
        bound = " (at the search range's end)" if t.at_bound else ""
        rows += [
            (
                "temperature T",
                f"{t.temperature:.4f}",
                f"fitted on {t.fit_size} held-out rows{bound}",
            ),
            ("loss after T", f"{t.loss_after:.4f}", f"was {t.loss_before:.4f}"),
            ("ECE after T", f"{t.ece_after:.4f}", f"was {t.ece_before:.4f}"),
        ]
    return rows


@dataclass(frozen=True)
class EvaluationResult:
    """An :class:`~logloss.insight.evaluation.Evaluation` with its class names, its source
    (``{"type": "predictions" | "checkpoint" | "model", ...}``), notes on what was decided or
    skipped, timings in seconds, and the images of the rows when given (for sample grids)."""

    evaluation: Evaluation
    classes: tuple[str, ...]
    source: dict[str, Any]
    notes: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    images: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON schema of docs/predictions.md (plain Python values; NaN stays NaN)."""
        numbers = self.evaluation.to_dict()
        for entry in numbers["per_class"]:
            entry["name"] = self.classes[entry["class"]]
        return {
            "schema": SCHEMA,
            "source": dict(self.source),
            "classes": list(self.classes),
            **numbers,
            "notes": list(self.notes),
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """:meth:`to_dict` as strict JSON under logloss's one policy (NaN as ``"NaN"``)."""
        return dumps(self.to_dict(), indent=indent)

    def name(self, k: int) -> str:
        return self.classes[k] if k < len(self.classes) else str(k)

    def __repr__(self) -> str:
        e = self.evaluation
        where = self.source.get("predictions") or self.source.get("checkpoint") or "model"
        return (
            f"<EvaluationResult {e.size} rows, {e.num_classes} classes"
            f"{' (binary)' if e.binary else ''}: accuracy {e.accuracy:.4f}, loss {e.loss:.4f}, "
            f"ECE {e.reliability.ece:.4f}; from {where}>"
        )

    # ----------------------------------------------------------------------- figures

    def figures(self) -> dict[str, Any]:
        """File name -> a function drawing that figure: what ``--figures DIR`` writes."""
        e = self.evaluation
        makers: dict[str, Any] = {
            "reliability.png": self.reliability_figure,
            "per_class_loss.png": self.per_class_figure,
            "loss_concentration.png": self.loss_concentration_figure,
        }
        if e.confusion is not None:
            makers["confusion.png"] = self.confusion_figure
        if e.temperature is not None:
            makers["reliability_after_temperature.png"] = lambda: self.reliability_figure(
                after=True
            )
        if self.images is not None:
            makers["hardest.png"] = lambda: self.examples_figure("hardest")
            makers["confident_mistakes.png"] = lambda: self.examples_figure("confident_mistakes")
        return makers

    def reliability_figure(self, *, after: bool = False) -> Figure:
        """The reliability diagram (``after``: after temperature scaling)."""
        from logloss.insight import plots  # matplotlib: only when a figure is drawn

        t = self.evaluation.temperature
        if after and t is not None:
            return plots.reliability_figure(t.reliability_after, title="after temperature scaling")
        return plots.reliability_figure(self.evaluation.reliability)

    def confusion_figure(self) -> Figure:
        from logloss.insight import plots  # matplotlib: only when a figure is drawn

        if self.evaluation.confusion is None:
            raise ValueError("no confusion matrix above 1000 classes")
        names = list(self.classes) if len(self.classes) <= 30 else None
        return plots.confusion_figure(self.evaluation.confusion, labels=names)

    def per_class_figure(self) -> Figure:
        from logloss.insight import plots  # matplotlib: only when a figure is drawn

        e = self.evaluation
        return plots.per_class_figure(
            e.class_loss, e.class_count, labels=self.classes, uniform_loss=e.uniform_loss
        )

    def loss_concentration_figure(self) -> Figure:
        from logloss.insight import plots  # matplotlib: only when a figure is drawn

        e = self.evaluation
        x, share = e.concentration()
        marked = (e.worst_count / e.size, e.worst_share)
        return plots.concentration_figure(x, share, marked=marked, worst_fraction=e.worst_fraction)

    def examples_figure(self, kind: str = "hardest", *, columns: int = 5) -> Figure:
        """The ``hardest`` samples or the ``confident_mistakes`` as images (needs ``images``)."""
        from logloss.insight import plots  # matplotlib: only when a figure is drawn

        if self.images is None:
            raise ValueError("no images: give images=... (an (N, H, W) or (N, H, W, 3) array)")
        examples: Examples = getattr(self.evaluation, kind)
        titles = {
            "hardest": "hardest samples: largest -ln p(true)",
            "confident_mistakes": "most confident mistakes",
        }
        return plots.examples_figure(
            self.images,
            examples,
            title=titles[kind],
            columns=plots.grid_columns(len(examples), columns),
            labels=self.classes,
        )

    # ----------------------------------------------------------------------- notebook display

    def _repr_html_(self) -> str:
        """Summary, per-class and hardest-rows tables and the reliability diagram, inline."""
        from logloss.insight import plots  # matplotlib: only when a notebook displays this

        e = self.evaluation
        summary = markup.table(
            ["measure", "value", "meaning"],
            [[markup.escape(c) for c in row] for row in summary_rows(e)],
            "summary",
        )
        diagram = markup.figure(
            plots.figure_bytes(self.reliability_figure()),
            "reliability",
            f"reliability diagram; bins {EDGE_RULE}",
        )
        notes = "".join(f"<li>{markup.escape(n)}</li>" for n in self.notes)
        return (
            f'<div class="logloss-evaluation"><p><b>{markup.escape(repr(self)[1:-1])}</b></p>'
            f"{summary}{self._per_class_html()}{self._examples_html()}{diagram}"
            f"{f'<ul>{notes}</ul>' if notes else ''}</div>"
        )

    def _per_class_html(self, limit: int = 20) -> str:
        e = self.evaluation
        present = [k for k in range(e.num_classes) if e.class_count[k]][:limit]
        rows = [
            [
                markup.escape(self.name(k)),
                str(e.class_count[k]),
                f"{100 * e.class_accuracy[k]:.2f}%",
                f"{e.class_loss[k]:.4f}",
            ]
            for k in present
        ]
        return markup.table(["class", "samples", "accuracy", "mean loss"], rows, "per-class")

    def _examples_html(self, limit: int = 8) -> str:
        h = self.evaluation.hardest
        rows = [
            [
                str(h.index[j]),
                markup.escape(self.name(h.target[j])),
                markup.escape(self.name(h.predicted[j])),
                f"{h.p_true[j]:.2e}",
                f"{h.loss[j]:.3f}",
            ]
            for j in range(min(limit, len(h)))
        ]
        return markup.table(["row", "true", "predicted", "p(true)", "loss"], rows, "hardest")
