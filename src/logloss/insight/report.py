"""One self-contained HTML page telling the article's story on the user's own training run, or
on any model's predictions.

likelihood -> log-likelihood -> softmax -> cross-entropy -> training -> the same sample before
and after -> where the remaining loss lives -> calibration.  A predictions file has no training
and no untrained weights: its page leaves those two sections out (:func:`build_predictions_report`).

The page needs nothing but itself: styles inline, every figure a PNG in a ``data:`` URI, no
scripts, no fonts or files fetched.  Every key number sits in a ``<data>`` element with a stable
``id`` and its exact value in ``value``; numbers that ``logloss evaluate --json`` also prints
carry ``data-json="path.in.that.json"`` so a program (or a test) can check one against the other.
"""

from __future__ import annotations

import html
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from logloss._atomic import atomic_write
from logloss._version import __version__
from logloss.data.render import png_bytes
from logloss.insight import markup, plots
from logloss.insight.diagnostics import Evaluation, evaluate_logits
from logloss.insight.explain import Explanation, explain, format_small
from logloss.insight.prediction_evaluation import Reading, evaluate_reading
from logloss.insight.prediction_row import explain_row, find_row, row_logits
from logloss.insight.result import EvaluationResult
from logloss.likelihood import log_likelihood, mle

if TYPE_CHECKING:
    from logloss.training.checkpoint import Checkpoint

# The article's five balls: white, black, white, black, black; and a second draw for additivity.
BALLS = "wbwbb"
MORE_BALLS = "bbw"
# Sample grids in at most 5 columns of plots.TILE_INCHES (810 px): the page (at most 948 px
# wide) shows them at their natural size, so their 12.5 px captions are not scaled down; the
# columns are chosen so that no row holds a single image (plots.grid_columns).
EXAMPLE_COLUMNS = 5


@dataclass(frozen=True)
class Report:
    """The page and the key numbers on it (``id`` -> value), built in ``seconds``."""

    html: str
    numbers: dict[str, float]
    seconds: float


def write_report(path: str | os.PathLike[str], page: str) -> Path:
    """Write the page to ``path`` atomically (a reader sees the old file or the whole new one)."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"--out {target} is a folder; give a file name such as report.html")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as file:
        file.write(page.encode("utf-8"))
    return target


# --------------------------------------------------------------------------- page pieces


class _Page:
    """Collects the key numbers while the sections are written."""

    def __init__(self) -> None:
        self.numbers: dict[str, float] = {}

    def number(
        self, key: str, value: float, spec: str = ".4f", *, json_key: str | None = None
    ) -> str:
        """``<data id=key value=exact>shown</data>``: a number a program can read back exactly.

        ``shown`` is ``format(value, spec)`` (``".2%"`` for a percentage), or for
        ``spec="small"`` :func:`~logloss.insight.explain.format_small` (scientific notation for
        tiny values); ``json_key`` is the path of the same number in ``logloss evaluate --json``
        (``"calibration.ece"``), if any.
        """
        value = float(value)
        self.numbers[key] = value
        exact = repr(value) if math.isfinite(value) else str(value)
        source = f' data-json="{html.escape(json_key)}"' if json_key else ""
        shown = format_small(value) if spec == "small" else format(value, spec)
        return f'<data id="{key}" value="{exact}"{source}>{shown}</data>'


def _figure(figure: Any, key: str, alt: str) -> str:
    return markup.figure(plots.figure_bytes(figure), key, alt)


def _digit(image: np.ndarray, key: str, alt: str, scale: int = 4) -> str:
    """A uint8 (H, W) image as an inline PNG, ink dark on white, ``scale`` times enlarged."""
    return markup.png_image(png_bytes(image, scale=scale, invert=True), key, alt, "digit")


def _pair(left: str, right: str) -> str:
    """Two pieces side by side (a half-width figure beside its text or table)."""
    return f'<div class="pair"><div>{left}</div><div>{right}</div></div>'


STYLE = """
body { font: 16px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 980px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.9em; margin-bottom: .2em; }
h2 { margin-top: 2.2em; border-bottom: 1px solid #ddd; }
.lead { color: #555; } .key { display: flex; flex-wrap: wrap; gap: 1em; margin: 1em 0; }
.key div { background: #f4f6f8; border-radius: 8px; padding: .6em 1em; min-width: 9em; }
.key b { display: block; font-size: 1.5em; } .key span { color: #666; font-size: .85em; }
figure { margin: 1em 0; } figure img { max-width: 100%; }
figcaption { color: #666; font-size: .85em; }
img.digit { image-rendering: pixelated; border: 1px solid #ccc; }
.sample { display: flex; gap: 1.2em; align-items: flex-start; } .sample p { margin-top: 0; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .8em; line-height: 1.3; }
table { border-collapse: collapse; margin: 1em 0; } td, th { padding: .2em .7em; text-align: right;
        border-bottom: 1px solid #eee; } .formula { font-family: ui-monospace, monospace; }
footer { margin-top: 3em; color: #888; font-size: .8em; }
.pair { display: flex; gap: 1.5em; align-items: center; flex-wrap: wrap; }
.pair > div { flex: 1 1 20em; min-width: 0; } .pair > div:last-child { flex: 0 0 auto; }
"""


# --------------------------------------------------------------------------- the story


@dataclass(frozen=True)
class _Run:
    """What only a trained run has: its weights, the untrained view, the training records."""

    trained: Checkpoint
    untrained: Evaluation  # the initial weights on the same split
    before: Explanation  # the sample under the initial weights
    image: np.ndarray  # (H, W) uint8, the sample
    records: list[dict[str, Any]]  # epoch 0, then metrics.jsonl
    best_epoch: int | None
    epochs: int


@dataclass(frozen=True)
class _Story:
    """Everything the page tells, computed once: the evaluation, one sample, and the run."""

    result: EvaluationResult  # the best weights on the split, or the predictions
    index: int
    sample_logits: np.ndarray  # (C,) the sample's logits
    after: Explanation  # the sample under the (best) model
    run: _Run | None  # None for a predictions file

    @property
    def evaluation(self) -> Evaluation:
        return self.result.evaluation

    @property
    def label(self) -> int:
        return int(self.after.target)

    @property
    def where(self) -> str:
        """The evaluated rows in words: ``test split`` or the predictions file."""
        s = self.result.source
        return f"{s['split']} split" if s["type"] == "checkpoint" else f"file {s['predictions']}"


def build_report(
    checkpoint: str | os.PathLike[str],
    *,
    split: str = "test",
    index: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> Report:
    """Evaluate a run and write its story as one HTML page (see the module doc).

    Args:
        checkpoint: the run folder of ``logloss train --out DIR``.
        split: the split evaluated (``test`` by default).
        index: the sample shown before and after training.
        data_dir: where the dataset is.
        download: whether a missing dataset may be downloaded.
    """
    started = time.perf_counter()
    story = _tell_run(checkpoint, split, index, data_dir=data_dir, download=download)
    return _report(story, started)


def build_predictions_report(
    reading: Reading,
    *,
    calibration: Reading | None = None,
    index: int = 0,
    images: np.ndarray | None = None,
) -> Report:
    """The page for any model's predictions: the sections that apply (no training, no
    before/after); sample grids only with ``images`` (N, H, W) or (N, H, W, 3) uint8."""
    started = time.perf_counter()
    result = evaluate_reading(reading, calibration=calibration, images=images)
    row = find_row(reading, index=index)
    story = _Story(
        result=result,
        index=row.index,
        sample_logits=row_logits(row.values, reading.choice.kind),
        after=explain_row(reading, row),
        run=None,
    )
    return _report(story, started)


def _report(story: _Story, started: float) -> Report:
    page = _Page()
    sections = [
        _likelihood_section(page),
        _log_likelihood_section(page),
        _softmax_section(story),
        _cross_entropy_section(story, page),
        _training_section(story, page),
        _before_after_section(story, page),
        _loss_location_section(story, page),
        _calibration_section(story, page),
    ]
    numbered = [
        f"<h2>{k}. {title}</h2>{body}"
        for k, (title, body) in enumerate((s for s in sections if s is not None), start=1)
    ]
    seconds = time.perf_counter() - started
    html_page = _html([_header(story, page), *numbered], seconds, story.run is not None)
    return Report(html=html_page, numbers=dict(page.numbers), seconds=seconds)


def _tell_run(
    checkpoint: str | os.PathLike[str],
    split: str,
    index: int,
    *,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
) -> _Story:
    """Load the run's best and initial weights, evaluate both on ``split``, explain one sample."""
    # torch, through the training layer: only a trained run's page needs it
    from logloss.insight.run_evaluation import evaluate_checkpoint
    from logloss.training.checkpoint import load_checkpoint  # torch, as above
    from logloss.training.run_folder import read_metrics, trained_epochs  # torch, as above

    trained = load_checkpoint(checkpoint, which="best")
    initial = load_checkpoint(checkpoint, which="initial")
    result = evaluate_checkpoint(trained, split=split, data_dir=data_dir, download=download)
    size = result.evaluation.size
    if not 0 <= index < size:
        raise ValueError(
            f"index {index} is out of range: the {split} split has {size} samples, numbered "
            f"0 to {size - 1}"
        )
    target = result.evaluation.target
    untrained_logits = initial.logits(result.images)  # (N, C): the untrained model's view
    label = int(target[index])
    records = read_metrics(result.directory, trained.metadata)
    best_epoch, epochs = trained_epochs(trained.metadata, records)
    run = _Run(
        trained=trained,
        untrained=evaluate_logits(untrained_logits, target, top_k=0),
        before=explain(untrained_logits[index], label, labels=result.classes),
        image=result.images[index],
        records=records,
        best_epoch=best_epoch,
        epochs=epochs,
    )
    return _Story(
        result=result,
        index=index,
        sample_logits=result.logits[index],
        after=explain(result.logits[index], label, labels=result.classes),
        run=run,
    )


def _lead(story: _Story, page: _Page) -> str:
    """Where the numbers come from, in one line."""
    n, e, s = page.number, story.evaluation, story.result.source
    if story.run is None:
        kind = "binary " if e.binary else ""
        return (
            f"predictions <code>{html.escape(s['predictions'])}</code> · {e.size} rows · "
            f"{e.num_classes} classes · {kind}{html.escape(s['kind'])}"
        )
    run = story.run
    architecture = run.trained.model.architecture
    widths = "-".join(map(str, [architecture.input_size, *architecture.hidden, e.num_classes]))
    # The page evaluates the best weights: name their epoch, which may precede the last one.
    weights = (
        f"best epoch {n('best-epoch', run.best_epoch, '.0f')} of {n('epochs', run.epochs, '.0f')}"
        if run.best_epoch is not None
        else f"{n('epochs', run.epochs, '.0f')} epoch(s)"
    )
    return (
        f"{html.escape(s['dataset'])} · dense network {widths} · {weights} · "
        f"{html.escape(s['split'])} split of {e.size} samples · seed "
        f"{run.trained.config.seed} · checkpoint <code>{html.escape(s['checkpoint'])}</code>"
    )


def _header(story: _Story, page: _Page) -> str:
    """The source in one line, then accuracy, loss, ln C and ECE."""
    n, e = page.number, story.evaluation
    title = "on your own run" if story.run is not None else "on your model's predictions"
    return (
        f"<h1>Cross-entropy, {title}</h1>"
        f'<p class="lead">{_lead(story, page)}</p>'
        f'<div class="key">'
        f"<div><b>{n('accuracy', e.accuracy, '.2%', json_key='accuracy')}</b>"
        f"<span>accuracy</span></div>"
        f"<div><b>{n('loss', e.loss, '.4f', json_key='loss')}</b>"
        f"<span>mean cross-entropy (nats)</span></div>"
        f"<div><b>{n('uniform-loss', e.uniform_loss, '.4f', json_key='uniform_loss')}</b>"
        f"<span>ln {e.num_classes}: a uniform guess</span></div>"
        f"<div><b>{n('ece', e.reliability.ece, '.4f', json_key='calibration.ece')}</b>"
        f"<span>expected calibration error</span></div>"
        f"</div>"
    )


Section = tuple[str, str] | None  # (title, body), or None when it does not apply


def _likelihood_section(page: _Page) -> Section:
    """The article's five balls: L(p) = p^3 (1 - p)^2, maximised at p = 3/5."""
    n = page.number
    balls = mle(BALLS, numerical=False)
    return "Likelihood", (
        f"<p>Five balls come out of a generator: <span class=formula>{BALLS}</span> (w = white, "
        "b = black). If it makes a black ball with probability p, the probability of exactly "
        f"this picture is <span class=formula>L(p) = {balls.formula}</span>: the likelihood. "
        "The generator that most likely made it maximises L: setting dL/dp = 0 gives "
        f"<span class=formula>p = {balls.fraction('b')} = "
        f"{n('mle-estimate', balls.estimate['b'], 'g')}</span>, "
        "the share of black balls, where "
        f"L = {n('mle-likelihood', balls.likelihood, '.5f')}.</p>"
        + _figure(plots.likelihood_figure(BALLS), "likelihood", "L(p) and ln L(p) for wbwbb")
    )


def _log_likelihood_section(page: _Page) -> Section:
    """Logarithms turn the product of likelihoods into a sum: ln(L1 L2) = ln L1 + ln L2."""
    n = page.number
    estimate = mle(BALLS, numerical=False).estimate
    model = {"b": estimate["b"], "w": estimate["w"]}
    first, second = log_likelihood(BALLS, model), log_likelihood(MORE_BALLS, model)
    both = log_likelihood(BALLS + MORE_BALLS, model)
    return "Log-likelihood", (
        "<p>Likelihoods multiply: two independent draws have likelihood L1 · L2. A loss should "
        "add up over samples, so take the logarithm: ln(L1 · L2) = ln L1 + ln L2. The logarithm "
        "is monotonic, so the maximum stays at the same p, and optimisers minimise, so the "
        "loss is <b>minus</b> the log-likelihood. At p = 0.6: "
        f"ln L({BALLS}) = {n('log-likelihood-first', first, '.4f')}, "
        f"ln L({MORE_BALLS}) = {n('log-likelihood-second', second, '.4f')}, and "
        f"ln L({BALLS}{MORE_BALLS}) = {n('log-likelihood-both', both, '.4f')}: "
        "the sum.</p>"
    )


def _softmax_section(story: _Story) -> Section:
    """Sigmoid for one output, softmax for C: the model's logits on the chosen sample."""
    index, classes = story.index, story.result.classes
    text = (
        "<p>A network outputs arbitrary real numbers, logits. For one output, the sigmoid "
        "sig(t) = 1 / (1 + e<sup>-t</sup>) maps it into (0, 1); for C outputs, softmax "
        "e<sup>z<sub>i</sub></sup> / Σ<sub>j</sub> e<sup>z<sub>j</sub></sup> maps them to C "
        "probabilities that sum to 1. Below: your model's logits for sample "
        f"#{index} of the {html.escape(story.where)} (a "
        f"{html.escape(classes[story.label])}) and their softmax.</p>"
    )
    return "From network outputs to probabilities", (
        _pair(text, _figure(plots.sigmoid_figure(), "sigmoid", "the sigmoid"))
        + _figure(
            plots.softmax_figure(story.sample_logits, story.label),
            "softmax",
            f"your model's logits and softmax on sample #{index}",
        )
    )


def _cross_entropy_section(story: _Story, page: _Page) -> Section:
    """The sample's loss -ln p(true), the dataset's mean, perplexity and Brier score."""
    n, e, after = page.number, story.evaluation, story.after
    c = e.num_classes
    # Both losses with the same rule: scientific notation where 4 decimals would show 0.
    reference = (
        f" (PyTorch's CrossEntropyLoss: {format_small(after.torch_loss)})"
        if after.torch_loss is not None
        else ""
    )
    brier = "binary Brier score, (P(1) - y)² averaged" if e.binary else "Brier score"
    return "Cross-entropy: softmax, then the negative log-likelihood", (
        "<p>The loss of one sample is minus the log-probability the model gives its true "
        f"class: here -ln p({story.label}) = -ln "
        f"{n('sample-p-true', after.p_target, 'small')} = "
        f"{n('sample-loss-after', after.loss, 'small')}{reference}. The loss on the data "
        "set is the mean over its samples: "
        f"{n('loss-again', e.loss, '.4f', json_key='loss')} nats, a perplexity of "
        f"{n('perplexity', e.perplexity, '.4f', json_key='perplexity')} "
        f"(as unsure as a uniform choice among that many classes; a uniform guess over {c} "
        f"classes scores ln {c} = {e.uniform_loss:.4f}). The {brier}, for comparison, is "
        f"{n('brier', e.brier, '.4f', json_key='brier')}.</p>"
        f"<pre>{html.escape(after.render())}</pre>"
    )


def _training_section(story: _Story, page: _Page) -> Section:
    """From the untrained model (loss near ln C) to the trained one, with the curves."""
    run = story.run
    if run is None:
        return None
    n, e = page.number, story.evaluation
    c = e.num_classes
    initial_loss = run.trained.metadata.get("initial_loss")
    uniform_line = (
        f"Before the first step the untrained model's mean validation loss was "
        f"{n('initial-validation-loss', initial_loss, '.4f')}, close to "
        f"ln {c} = {e.uniform_loss:.4f}: its softmax is near 1/{c} for every class. "
        if isinstance(initial_loss, (int, float)) and math.isfinite(initial_loss)
        else ""
    )
    curves = (
        _figure(
            plots.training_curves_figure(run.records, num_classes=c),
            "training",
            "loss and accuracy per epoch, train vs validation",
        )
        if run.records
        else "<p>(This run has no metrics.jsonl: no epochs recorded.)</p>"
    )
    trained_phrase = (
        f"the best epoch, {run.best_epoch} of {run.epochs} (highest validation accuracy)"
        if run.best_epoch is not None
        else f"best.safetensors ({run.epochs} epoch(s) recorded)"
    )
    return "Training", (
        f"<p>{uniform_line}On this {html.escape(story.where)} the untrained weights score "
        f"{n('untrained-loss', run.untrained.loss, '.4f')} nats and "
        f"{n('untrained-accuracy', run.untrained.accuracy, '.2%')} "
        f"accuracy; with the weights of {trained_phrase}, {e.loss:.4f} nats and "
        f"{100 * e.accuracy:.2f}%.</p>" + curves
    )


def _before_after_section(story: _Story, page: _Page) -> Section:
    """One sample under the untrained and the trained weights."""
    run = story.run
    if run is None:
        return None
    n, index, label = page.number, story.index, story.label
    before, after = run.before, story.after
    image = _digit(run.image, "sample", f"{story.where} sample #{index}")
    return "The same sample, before and after", (
        f'<div class="sample">{image}<p>'
        f"Sample #{index}, a {html.escape(story.result.classes[label])}. Untrained: p({label}) = "
        f"{n('sample-p-true-before', before.p_target, '.4f')}, loss "
        f"{n('sample-loss-before', before.loss, '.4f')} (≈ ln {story.evaluation.num_classes} = "
        f"{story.evaluation.uniform_loss:.4f}); predicted {before.predicted}. Trained: "
        f"p({label}) = {format_small(after.p_target)}, loss {format_small(after.loss)}; "
        f"predicted {after.predicted}.</p></div>"
        + _figure(
            plots.before_after_figure(before.logits, after.logits, label),
            "before-after",
            "softmax of the untrained and the trained model on the same sample",
        )
    )


def _loss_location_section(story: _Story, page: _Page) -> Section:
    """The worst samples' share of the loss, the hardest samples, per class, confusion."""
    n, e, result = page.number, story.evaluation, story.result
    text = (
        f"<p>The mean loss is {e.loss:.4f}, but it is not spread evenly: the worst "
        f"{100 * e.worst_fraction:g}% of samples ({e.worst_count} of {e.size}) carry "
        f"{n('worst-share', e.worst_share, '.1%', json_key='worst.share')} of the total. "
        f"A confident mistake is expensive: p(true) = 0.001 costs -ln 0.001 = "
        f"{-math.log(0.001):.2f} nats, as much as {math.log(0.001) / math.log(0.99):.0f} correct "
        "answers at p = 0.99 (0.01 nats each). The model made "
        f"{n('errors', e.errors, '.0f', json_key='errors')} mistakes.</p>"
    )
    concentration = _figure(
        result.loss_concentration_figure(),
        "concentration",
        "share of the total loss carried by the worst samples",
    )
    confusion = (
        _figure(result.confusion_figure(), "confusion", "confusion matrix")
        if e.confusion is not None
        else ""
    )
    per_class = _figure(result.per_class_figure(), "per-class", "mean loss per true class")
    return "Where the remaining loss lives", (
        _pair(text, concentration)
        + _examples(story, "hardest", "hardest")
        + _examples(story, "confident_mistakes", "mistakes")
        + per_class
        + _pair(_per_class_table(story), confusion)
    )


def _examples(story: _Story, kind: str, key: str) -> str:
    """A grid of the ranked samples ``kind`` as images, or a table without images."""
    examples = getattr(story.evaluation, kind)
    alt = {
        "hardest": "the hardest samples with p(true)",
        "confident_mistakes": "the most confident mistakes",
    }[kind]
    if story.result.images is not None:
        return _figure(story.result.examples_figure(kind, columns=EXAMPLE_COLUMNS), key, alt)
    name = story.result.name
    rows = [
        [
            str(examples.index[j]),
            html.escape(name(examples.target[j])),
            html.escape(name(examples.predicted[j])),
            f"{examples.p_true[j]:.2e}",
            f"{examples.p_predicted[j]:.4f}",
            f"{examples.loss[j]:.3f}",
        ]
        for j in range(len(examples))
    ]
    header = ["row", "true", "predicted", "p(true)", "p(predicted)", "loss"]
    return f"<p>{html.escape(alt.capitalize())}:</p>" + markup.table(header, rows, key)


def _per_class_table(story: _Story, limit: int = 40) -> str:
    e, name = story.evaluation, story.result.name
    present = [k for k in range(e.num_classes) if e.class_count[k]]
    if len(present) > limit:  # the classes with the largest mean loss
        present = sorted(present, key=lambda k: -e.class_loss[k])[:limit]
    rows = [
        [
            html.escape(name(k)),
            str(e.class_count[k]),
            f"{100 * e.class_accuracy[k]:.2f}%",
            f"{e.class_loss[k]:.4f}",
        ]
        for k in present
    ]
    return markup.table(["class", "samples", "accuracy", "mean loss"], rows, "per-class")


def _calibration_section(story: _Story, page: _Page) -> Section:
    """Reliability, ECE and MCE; temperature scaling when it was fitted."""
    n, e = page.number, story.evaluation
    bins = e.reliability
    rule = "equal-width bins (lo, hi]" if bins.binning == "uniform" else "equal-count bins"
    body = (
        "<p>Cross-entropy rewards honest probabilities. Among the predictions made with "
        "confidence about 0.9, about 90% should be right. The expected calibration error "
        f"averages the gap over {len(bins.count)} confidence {rule}: ECE = "
        f"{n('ece-again', bins.ece, '.4f', json_key='calibration.ece')}, and the "
        f"largest gap is MCE = {n('mce', bins.mce, '.4f', json_key='calibration.mce')}; "
        "per class (each p<sub>c</sub> against [y = c]), the class-wise ECE is "
        f"{n('classwise-ece', e.classwise_ece, '.4f', json_key='calibration.classwise_ece')}"
        ".</p>" + _figure(story.result.reliability_figure(), "reliability", "reliability diagram")
    )
    return "Calibration", body + _temperature_part(story, page)


def _temperature_part(story: _Story, page: _Page) -> str:
    """Temperature scaling fitted on held-out rows, before/after on the evaluated rows."""
    t, n = story.evaluation.temperature, page.number
    if t is None:
        return (
            "<p>Temperature scaling was skipped: it is fitted on held-out predictions "
            "(<code>--calibration FILE</code>), never on the rows it is scored on.</p>"
        )
    after_loss = n("temperature-loss-after", t.loss_after, json_key="temperature.loss_after")
    after_ece = n("temperature-ece-after", t.ece_after, json_key="temperature.ece_after")
    rows = [
        ["before", f"{t.loss_before:.4f}", f"{t.ece_before:.4f}"],
        [f"after (T = {t.temperature:.3f})", after_loss, after_ece],
    ]
    held_out = "validation samples" if story.run is not None else "held-out rows"
    return (
        "<p>Temperature scaling divides every logit by one number T, fitted to minimise the "
        f"loss on the {t.fit_size} {held_out}: T = "
        f"{n('temperature', t.temperature, '.4f', json_key='temperature.temperature')} "
        f"({'softer' if t.temperature > 1 else 'sharper'} probabilities; the predictions "
        f"do not change). On the {html.escape(story.where)}:</p>"
        + markup.table(["", "loss (nats)", "ECE"], rows, "temperature-table")
        + _figure(
            story.result.reliability_figure(after=True),
            "reliability-after",
            "reliability diagram after temperature scaling",
        )
    )


def _html(sections: list[str], seconds: float, from_run: bool) -> str:
    """The whole self-contained page around its sections."""
    origin = "your checkpoint and data" if from_run else "your predictions file"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>logloss report</title>"
        f"<style>{STYLE}</style></head><body><main>"
        + "\n".join(f"<section>{s}</section>" for s in sections)
        + f"</main><footer>logloss {html.escape(__version__)} · built in {seconds:.2f} s · "
        f"every number on this page is computed from {origin}</footer>"
        "</body></html>\n"
    )
