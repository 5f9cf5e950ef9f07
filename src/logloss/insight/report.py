"""One self-contained HTML page telling the article's story on the user's own training run.

likelihood -> log-likelihood -> softmax -> cross-entropy -> training -> the same sample before
and after -> where the remaining loss lives -> calibration.

The page needs nothing but itself: styles inline, every figure a PNG in a ``data:`` URI, no
scripts, no fonts or files fetched.  Every key number sits in a ``<data>`` element with a stable
``id`` and its exact value in ``value``; numbers that ``logloss evaluate --json`` also prints
carry ``data-json="path.in.that.json"`` so a program (or a test) can check one against the other.
"""

from __future__ import annotations

import base64
import html
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from logloss._atomic import atomic_write
from logloss._version import __version__
from logloss.data.render import png_bytes
from logloss.insight import plots
from logloss.insight.diagnostics import Evaluation, evaluate_logits
from logloss.insight.explain import Explanation, explain, format_small
from logloss.insight.run_evaluation import SplitEvaluation, evaluate_checkpoint
from logloss.likelihood import log_likelihood, mle
from logloss.training.checkpoint import Checkpoint, load_checkpoint
from logloss.training.run_folder import read_metrics, trained_epochs

# The article's five balls: white, black, white, black, black; and a second draw for additivity.
BALLS = "wbwbb"
MORE_BALLS = "bbw"
# Sample grids in 5 columns of plots.TILE_INCHES (810 px): the page (at most 948 px wide) shows
# them at their natural size, so their 12.5 px captions are not scaled down.
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
    encoded = base64.b64encode(plots.figure_bytes(figure)).decode("ascii")
    return (
        f'<figure><img id="figure-{key}" alt="{html.escape(alt)}" '
        f'src="data:image/png;base64,{encoded}"><figcaption>{html.escape(alt)}</figcaption></figure>'
    )


def _digit(image: np.ndarray, key: str, alt: str, scale: int = 4) -> str:
    """A uint8 (H, W) image as an inline PNG, ink dark on white, ``scale`` times enlarged."""
    encoded = base64.b64encode(png_bytes(image, scale=scale, invert=True)).decode("ascii")
    return (
        f'<img class="digit" id="figure-{key}" alt="{html.escape(alt)}" '
        f'src="data:image/png;base64,{encoded}">'
    )


def _table(header: list[str], rows: list[list[str]], key: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{key}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


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
"""


# --------------------------------------------------------------------------- the story


@dataclass(frozen=True)
class _Story:
    """Everything the page tells, computed once: the run, its evaluation, and one sample."""

    trained: Checkpoint
    result: SplitEvaluation  # the best weights on the split
    untrained: Evaluation  # the initial weights on the same split
    index: int
    before: Explanation  # the sample under the initial weights
    after: Explanation  # ... and under the best weights
    records: list[dict[str, Any]]  # epoch 0, then metrics.jsonl
    best_epoch: int | None
    epochs: int

    @property
    def evaluation(self) -> Evaluation:
        return self.result.evaluation

    @property
    def label(self) -> int:
        return int(self.evaluation.target[self.index])


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
    story = _tell(checkpoint, split, index, data_dir=data_dir, download=download)
    page = _Page()
    sections = [
        _header(story, page),
        _likelihood_section(page),
        _log_likelihood_section(page),
        _softmax_section(story),
        _cross_entropy_section(story, page),
        _training_section(story, page),
        _before_after_section(story, page),
        _loss_location_section(story, page),
        _calibration_section(story, page),
    ]
    seconds = time.perf_counter() - started
    return Report(html=_html(sections, seconds), numbers=dict(page.numbers), seconds=seconds)


def _tell(
    checkpoint: str | os.PathLike[str],
    split: str,
    index: int,
    *,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
) -> _Story:
    """Load the run's best and initial weights, evaluate both on ``split``, explain one sample."""
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
    return _Story(
        trained=trained,
        result=result,
        untrained=evaluate_logits(untrained_logits, target, top_k=0),
        index=index,
        before=explain(untrained_logits[index], label, labels=result.classes),
        after=explain(result.logits[index], label, labels=result.classes),
        records=records,
        best_epoch=best_epoch,
        epochs=epochs,
    )


def _header(story: _Story, page: _Page) -> str:
    """The run in numbers: data, network, which weights, accuracy, loss, ln C, ECE."""
    n, e, result = page.number, story.evaluation, story.result
    architecture = story.trained.model.architecture
    widths = "-".join(map(str, [architecture.input_size, *architecture.hidden, e.num_classes]))
    # The page evaluates the best weights: name their epoch, which may precede the last one.
    weights = (
        f"best epoch {n('best-epoch', story.best_epoch, '.0f')} of "
        f"{n('epochs', story.epochs, '.0f')}"
        if story.best_epoch is not None
        else f"{n('epochs', story.epochs, '.0f')} epoch(s)"
    )
    return (
        f"<h1>Cross-entropy, on your own run</h1>"
        f'<p class="lead">{html.escape(result.dataset)} · dense network {widths} · {weights} · '
        f"{html.escape(result.split)} split of {e.size} samples · seed "
        f"{story.trained.config.seed} · checkpoint "
        f"<code>{html.escape(str(result.directory))}</code></p>"
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


def _likelihood_section(page: _Page) -> str:
    """1. The article's five balls: L(p) = p^3 (1 - p)^2, maximised at p = 3/5."""
    n = page.number
    balls = mle(BALLS, numerical=False)
    return (
        "<h2>1. Likelihood</h2>"
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


def _log_likelihood_section(page: _Page) -> str:
    """2. Logarithms turn the product of likelihoods into a sum: ln(L1 L2) = ln L1 + ln L2."""
    n = page.number
    estimate = mle(BALLS, numerical=False).estimate
    model = {"b": estimate["b"], "w": estimate["w"]}
    first, second = log_likelihood(BALLS, model), log_likelihood(MORE_BALLS, model)
    both = log_likelihood(BALLS + MORE_BALLS, model)
    return (
        "<h2>2. Log-likelihood</h2>"
        "<p>Likelihoods multiply: two independent draws have likelihood L1 · L2. A loss should "
        "add up over samples, so take the logarithm: ln(L1 · L2) = ln L1 + ln L2. The logarithm "
        "is monotonic, so the maximum stays at the same p, and optimisers minimise, so the "
        "loss is <b>minus</b> the log-likelihood. At p = 0.6: "
        f"ln L({BALLS}) = {n('log-likelihood-first', first, '.4f')}, "
        f"ln L({MORE_BALLS}) = {n('log-likelihood-second', second, '.4f')}, and "
        f"ln L({BALLS}{MORE_BALLS}) = {n('log-likelihood-both', both, '.4f')}: "
        "the sum.</p>"
    )


def _softmax_section(story: _Story) -> str:
    """3. Sigmoid for one output, softmax for C: the model's logits on the chosen sample."""
    result, index, label = story.result, story.index, story.label
    return (
        "<h2>3. From network outputs to probabilities</h2>"
        "<p>A network outputs arbitrary real numbers, logits. For one output, the sigmoid "
        "sig(t) = 1 / (1 + e<sup>-t</sup>) maps it into (0, 1); for C outputs, softmax "
        "e<sup>z<sub>i</sub></sup> / Σ<sub>j</sub> e<sup>z<sub>j</sub></sup> maps them to C "
        f"probabilities that sum to 1. Below: your model's logits for {result.split} sample "
        f"#{index} (a {html.escape(result.classes[label])}) and their softmax.</p>"
        + _figure(plots.sigmoid_figure(), "sigmoid", "the sigmoid")
        + _figure(
            plots.softmax_figure(result.logits[index], label),
            "softmax",
            f"your model's logits and softmax on sample #{index}",
        )
    )


def _cross_entropy_section(story: _Story, page: _Page) -> str:
    """4. The sample's loss -ln p(true), the dataset's mean, perplexity and Brier score."""
    n, e, after = page.number, story.evaluation, story.after
    c = e.num_classes
    return (
        "<h2>4. Cross-entropy: softmax, then the negative log-likelihood</h2>"
        "<p>The loss of one sample is minus the log-probability the model gives its true "
        f"class: here -ln p({story.label}) = -ln "
        f"{n('sample-p-true', after.p_target, '.4f')} = "
        f"{n('sample-loss-after', after.loss, 'small')} "
        f"(PyTorch's CrossEntropyLoss: {format_small(after.torch_loss)}). The loss on the data "
        "set is the mean over its samples: "
        f"{n('loss-again', e.loss, '.4f', json_key='loss')} nats, a perplexity of "
        f"{n('perplexity', e.perplexity, '.4f', json_key='perplexity')} "
        f"(as unsure as a uniform choice among that many classes; a uniform guess over {c} "
        f"classes scores ln {c} = {e.uniform_loss:.4f}). The Brier score, for comparison, is "
        f"{n('brier', e.brier, '.4f', json_key='brier')}.</p>"
        f"<pre>{html.escape(after.render())}</pre>"
    )


def _training_section(story: _Story, page: _Page) -> str:
    """5. From the untrained model (loss near ln C) to the trained one, with the curves."""
    n, e = page.number, story.evaluation
    c = e.num_classes
    initial_loss = story.trained.metadata.get("initial_loss")
    uniform_line = (
        f"Before the first step the untrained model's mean validation loss was "
        f"{n('initial-validation-loss', initial_loss, '.4f')}, close to "
        f"ln {c} = {e.uniform_loss:.4f}: its softmax is near 1/{c} for every class. "
        if isinstance(initial_loss, (int, float)) and math.isfinite(initial_loss)
        else ""
    )
    curves = (
        _figure(
            plots.training_curves_figure(story.records, num_classes=c),
            "training",
            "loss and accuracy per epoch, train vs validation",
        )
        if story.records
        else "<p>(This run has no metrics.jsonl: no epochs recorded.)</p>"
    )
    trained_phrase = (
        f"the best epoch, {story.best_epoch} of {story.epochs} (highest validation accuracy)"
        if story.best_epoch is not None
        else f"best.safetensors ({story.epochs} epoch(s) recorded)"
    )
    return (
        "<h2>5. Training</h2>"
        f"<p>{uniform_line}On this {story.result.split} split the untrained weights score "
        f"{n('untrained-loss', story.untrained.loss, '.4f')} nats and "
        f"{n('untrained-accuracy', story.untrained.accuracy, '.2%')} "
        f"accuracy; with the weights of {trained_phrase}, {e.loss:.4f} nats and "
        f"{100 * e.accuracy:.2f}%.</p>" + curves
    )


def _before_after_section(story: _Story, page: _Page) -> str:
    """6. One sample under the untrained and the trained weights."""
    n, result, index, label = page.number, story.result, story.index, story.label
    before, after = story.before, story.after
    image = _digit(result.images[index], "sample", f"{result.split} sample #{index}")
    return (
        "<h2>6. The same sample, before and after</h2>"
        f'<div class="sample">{image}<p>'
        f"Sample #{index}, a {html.escape(result.classes[label])}. Untrained: p({label}) = "
        f"{n('sample-p-true-before', before.p_target, '.4f')}, loss "
        f"{n('sample-loss-before', before.loss, '.4f')} (≈ ln {story.evaluation.num_classes} = "
        f"{story.evaluation.uniform_loss:.4f}); predicted {before.predicted}. Trained: "
        f"p({label}) = {after.p_target:.4f}, loss {format_small(after.loss)}; predicted "
        f"{after.predicted}.</p></div>"
        + _figure(
            plots.before_after_figure(before.logits, after.logits, label),
            "before-after",
            "softmax of the untrained and the trained model on the same sample",
        )
    )


def _loss_location_section(story: _Story, page: _Page) -> str:
    """7. The worst samples' share of the loss, the hardest samples, per class, confusion."""
    n, e = page.number, story.evaluation
    errors = int(np.count_nonzero(e.predicted != e.target))
    return (
        "<h2>7. Where the remaining loss lives</h2>"
        f"<p>The mean loss is {e.loss:.4f}, but it is not spread evenly: the worst "
        f"{100 * e.worst_fraction:g}% of samples ({e.worst_count} of {e.size}) carry "
        f"{n('worst-share', e.worst_share, '.1%', json_key='worst.share')} of the total. "
        f"A confident mistake is expensive: p(true) = 0.001 costs -ln 0.001 = "
        f"{-math.log(0.001):.2f} nats, as much as {math.log(0.001) / math.log(0.99):.0f} correct "
        "answers at p = 0.99 (0.01 nats each). The model made "
        f"{n('errors', errors, '.0f', json_key='errors')} "
        "mistakes.</p>"
        + _figure(
            plots.loss_concentration_figure(e.losses, worst_fraction=e.worst_fraction),
            "concentration",
            "share of the total loss carried by the worst samples",
        )
        + _examples(story, "hardest", "hardest samples: largest -ln p(true)")
        + _examples(story, "confident_mistakes", "most confident mistakes")
        + _per_class_table(story)
        + (
            _figure(plots.confusion_figure(e.confusion), "confusion", "confusion matrix")
            if e.confusion is not None
            else ""
        )
    )


def _examples(story: _Story, kind: str, title: str) -> str:
    """A grid of the ranked samples ``kind`` (``hardest`` or ``confident_mistakes``)."""
    key, alt = {
        "hardest": ("hardest", "the hardest samples with p(true)"),
        "confident_mistakes": ("mistakes", "the most confident mistakes"),
    }[kind]
    examples = getattr(story.evaluation, kind)
    figure = plots.examples_figure(
        story.result.images, examples, title=title, columns=EXAMPLE_COLUMNS
    )
    return _figure(figure, key, alt)


def _per_class_table(story: _Story) -> str:
    e, classes = story.evaluation, story.result.classes
    rows = [
        [
            html.escape(classes[k]),
            str(e.class_count[k]),
            f"{100 * e.class_accuracy[k]:.2f}%",
            f"{e.class_loss[k]:.4f}",
        ]
        for k in range(e.num_classes)
        if e.class_count[k]
    ]
    return _table(["class", "samples", "accuracy", "mean loss"], rows, "per-class")


def _calibration_section(story: _Story, page: _Page) -> str:
    """8. Reliability, ECE and MCE; temperature scaling when it was fitted."""
    n, bins = page.number, story.evaluation.reliability
    section = (
        "<h2>8. Calibration</h2>"
        "<p>Cross-entropy rewards honest probabilities. Among the predictions made with "
        "confidence about 0.9, about 90% should be right. The expected calibration error "
        f"averages the gap over {len(bins.count)} confidence bins: ECE = "
        f"{n('ece-again', bins.ece, '.4f', json_key='calibration.ece')}, and the "
        f"largest gap is MCE = {n('mce', bins.mce, '.4f', json_key='calibration.mce')}.</p>"
        + _figure(plots.reliability_figure(bins), "reliability", "reliability diagram")
    )
    return section + _temperature_part(story, page)


def _temperature_part(story: _Story, page: _Page) -> str:
    """Temperature scaling fitted on the validation split, before/after on this split."""
    t, n = story.evaluation.temperature, page.number
    if t is None:
        return ""
    after_loss = n("temperature-loss-after", t.loss_after, json_key="temperature.loss_after")
    after_ece = n("temperature-ece-after", t.ece_after, json_key="temperature.ece_after")
    rows = [
        ["before", f"{t.loss_before:.4f}", f"{t.ece_before:.4f}"],
        [f"after (T = {t.temperature:.3f})", after_loss, after_ece],
    ]
    return (
        "<p>Temperature scaling divides every logit by one number T, fitted to minimise the "
        f"loss on the {t.fit_size} validation samples: T = "
        f"{n('temperature', t.temperature, '.4f', json_key='temperature.temperature')} "
        f"({'softer' if t.temperature > 1 else 'sharper'} probabilities; the predictions "
        "do not change). On this split:</p>"
        + _table(["", "loss (nats)", "ECE"], rows, "temperature-table")
        + _figure(
            plots.reliability_figure(t.reliability_after, title="after temperature scaling"),
            "reliability-after",
            "reliability diagram after temperature scaling",
        )
    )


def _html(sections: list[str], seconds: float) -> str:
    """The whole self-contained page around its sections."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>logloss report</title>"
        f"<style>{STYLE}</style></head><body><main>"
        + "\n".join(f"<section>{s}</section>" for s in sections)
        + f"</main><footer>logloss {html.escape(__version__)} · built in {seconds:.2f} s · "
        "every number on this page is computed from your checkpoint and data</footer>"
        "</body></html>\n"
    )
