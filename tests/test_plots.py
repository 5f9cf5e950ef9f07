"""Figures (logloss.insight.plots): the data drawn is checked against hand-derived values and
PyTorch; every PNG decodes with Pillow; writing is atomic; nothing needs a display."""

from __future__ import annotations

import dataclasses
import io
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from logloss.insight import plots
from logloss.insight.diagnostics import evaluate_logits
from logloss.training import run_folder


def decoded(png: bytes) -> np.ndarray:
    """Decode PNG bytes with Pillow: an independent check that the file is a real image."""
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def assert_drawn(figure) -> np.ndarray:
    pixels = decoded(plots.figure_bytes(figure))
    assert pixels.shape[0] > 100
    assert pixels.shape[1] > 100
    assert pixels.std() > 10  # not a blank canvas
    return pixels


@pytest.fixture(scope="module")
def evaluation():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 10, size=600)
    logits = rng.normal(scale=2.0, size=(600, 10))
    logits[np.arange(600), target] += 4.0
    return evaluate_logits(logits, target, top_k=10)


# --------------------------------------------------------------------------- likelihood


def test_likelihood_curve_is_the_articles_formula():
    curve = plots.likelihood_curve("wbwbb", points=101)
    p = curve["p"]
    np.testing.assert_allclose(curve["likelihood"], p**3 * (1 - p) ** 2, rtol=1e-12, atol=1e-300)
    inner = slice(1, -1)  # ln L is -inf at both ends
    np.testing.assert_allclose(
        curve["log_likelihood"][inner],
        3 * np.log(p[inner]) + 2 * np.log(1 - p[inner]),
        rtol=1e-12,
    )
    assert curve["log_likelihood"][0] == -math.inf
    assert curve["estimate"] == 0.6  # the article: p = 3/5
    assert p[curve["likelihood"].argmax()] == pytest.approx(0.6)
    assert curve["maximum"] == pytest.approx(0.6**3 * 0.4**2, rel=1e-12)
    assert curve["symbol"] == "b"


def test_likelihood_figure_marks_the_maximum():
    figure = plots.likelihood_figure("wbwbb")
    left, right = figure.axes
    marked = [line for line in left.lines if line.get_marker() == "o"]
    assert len(marked) == 1
    assert marked[0].get_xdata()[0] == pytest.approx(0.6)
    assert marked[0].get_ydata()[0] == pytest.approx(0.03456, rel=1e-12)
    marked_log = next(line for line in right.lines if line.get_marker() == "o")
    assert marked_log.get_ydata()[0] == pytest.approx(math.log(0.03456), rel=1e-12)
    assert_drawn(figure)


def test_likelihood_needs_two_kinds_of_outcome():
    with pytest.raises(ValueError, match="exactly two kinds, got 3"):
        plots.likelihood_curve("abc")


# --------------------------------------------------------------------------- activations


def test_sigmoid_figure_draws_the_sigmoid():
    figure = plots.sigmoid_figure()
    curve = figure.axes[0].lines[0]
    t = np.asarray(curve.get_xdata())
    np.testing.assert_allclose(
        curve.get_ydata(), torch.sigmoid(torch.from_numpy(t)).numpy(), rtol=1e-12
    )
    assert_drawn(figure)


def test_softmax_figure_bars_are_torch_softmax():
    logits = plots.ARTICLE_LOGITS
    figure = plots.softmax_figure(logits, target=7)
    heights = [bar.get_height() for bar in figure.axes[1].patches]
    expected = torch.softmax(torch.tensor(logits, dtype=torch.float64), dim=0).numpy()
    np.testing.assert_allclose(heights, expected, rtol=1e-12)
    assert heights[7] == pytest.approx(0.9948, abs=5e-5)  # the article's 99.5%
    assert figure.axes[1].patches[7].get_facecolor()[:3] == pytest.approx(
        tuple(int(plots.TRUE_COLOR[i : i + 2], 16) / 255 for i in (1, 3, 5))
    )
    assert_drawn(figure)


def test_before_after_titles_carry_the_losses():
    before = [0.0297, -0.0440, -0.0442, 0.0194, 0.0293, 0.0036, -0.0047, 0.0073, 0.0407, -0.0544]
    figure = plots.before_after_figure(before, plots.ARTICLE_LOGITS, 7)
    for axis, logits in zip(figure.axes, (before, plots.ARTICLE_LOGITS), strict=True):
        loss = torch.nn.functional.cross_entropy(
            torch.tensor([logits], dtype=torch.float64), torch.tensor([7])
        ).item()
        assert f"loss = -ln p = {loss:.4f}" in axis.get_title()
    assert_drawn(figure)


# --------------------------------------------------------------------------- training curves


def test_training_curves_plot_the_records_and_ln_c():
    records = [
        {
            "epoch": 1,
            "train_loss": 0.40,
            "val_loss": 0.20,
            "train_accuracy": 0.88,
            "val_accuracy": 0.94,
        },
        {
            "epoch": 2,
            "train_loss": 0.15,
            "val_loss": 0.10,
            "train_accuracy": 0.95,
            "val_accuracy": 0.97,
        },
        {"epoch": 3, "train_loss": 0.08, "train_accuracy": 0.98},  # no validation this epoch
    ]
    records = [{"epoch": 0, "val_loss": 2.31}, *records]  # the untrained model (read_metrics)
    figure = plots.training_curves_figure(records, num_classes=10)
    loss_axis, accuracy_axis = figure.axes
    lines = {line.get_label(): line for line in loss_axis.lines}
    assert list(lines["train"].get_ydata()) == [0.40, 0.15, 0.08]
    assert list(lines["validation"].get_xdata()) == [0.0, 1.0, 2.0]
    assert list(lines["validation"].get_ydata()) == [2.31, 0.20, 0.10]
    reference = lines[f"ln 10 = {math.log(10):.3f}"]
    assert list(reference.get_ydata()) == [math.log(10)] * 2
    accuracy = {line.get_label(): line for line in accuracy_axis.lines}
    assert list(accuracy["validation"].get_ydata()) == [0.94, 0.97]
    assert list(accuracy["chance"].get_ydata()) == [0.1, 0.1]
    assert_drawn(figure)


def validation_loss_line(figure):
    return next(line for line in figure.axes[0].lines if line.get_label() == "validation")


def test_one_epoch_curves_start_at_the_untrained_model():
    # A `--epochs 1` run: one metrics.jsonl line; the untrained model's loss (near ln 10) and
    # accuracy (near 1/10) are checkpoint.json's initial_loss and initial_accuracy, which
    # read_metrics puts first as epoch 0 -- on both panels.
    epoch_one = {"epoch": 1, "train_loss": 0.42, "val_loss": 0.14, "val_accuracy": 0.956}
    metadata = {"initial_loss": 2.3135, "initial_accuracy": 0.0974}
    records = run_folder.with_initial_epoch([epoch_one], metadata)
    assert records == [{"epoch": 0, "val_loss": 2.3135, "val_accuracy": 0.0974}, epoch_one]
    figure = plots.training_curves_figure(records, num_classes=10)
    line = validation_loss_line(figure)
    assert list(line.get_xdata()) == [0.0, 1.0]
    assert list(line.get_ydata()) == [2.3135, 0.14]
    loss_axis, accuracy_axis = figure.axes
    accuracy = next(x for x in accuracy_axis.lines if x.get_label() == "validation")
    assert list(accuracy.get_xdata()) == [0.0, 1.0]
    assert list(accuracy.get_ydata()) == [0.0974, 0.956]
    assert accuracy_axis.get_xlim() == loss_axis.get_xlim()  # both panels span epochs 0..1
    assert accuracy_axis.get_xlim()[0] < 0.0 < 1.0 < accuracy_axis.get_xlim()[1]
    # An epoch 0 already there is not added twice; unknown values are left out.
    assert run_folder.with_initial_epoch(records, metadata) == records
    assert run_folder.with_initial_epoch([epoch_one], {"initial_loss": None}) == [epoch_one]
    only_loss = {"initial_loss": 2.3, "initial_accuracy": math.nan}
    assert run_folder.with_initial_epoch([epoch_one], only_loss)[0] == {"epoch": 0, "val_loss": 2.3}
    # Records without "epoch" count on from the last.
    assert plots._series([{"epoch": 0, "val_loss": 2.3}, {"val_loss": 0.5}], "val_loss") == (
        [0.0, 1.0],
        [2.3, 0.5],
    )


# --------------------------------------------------------------------------- diagnostics


def test_reliability_bars_are_the_bin_accuracies(evaluation):
    bins = evaluation.reliability
    figure = plots.reliability_figure(bins)
    accuracy_bars = figure.axes[0].containers[0]
    filled = bins.count > 0
    np.testing.assert_allclose([b.get_height() for b in accuracy_bars], bins.accuracy[filled])
    assert f"ECE {bins.ece:.4f}" in figure.axes[0].get_title()
    assert_drawn(figure)


def test_reliability_legend_shows_what_is_drawn(evaluation):
    bins = evaluation.reliability
    filled = bins.count > 0
    gap = bins.confidence[filled] - bins.accuracy[filled]
    assert (gap < 0).any()  # underconfident bins: gap bars drawn over the accuracy bars
    assert (gap > 0).any()  # overconfident bins: gap bars above them
    axis = plots.reliability_figure(bins).axes[0]
    legend = axis.get_legend()
    handles = {
        text.get_text(): handle
        for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True)
    }
    for container, label in zip(axis.containers, ("accuracy", "gap to confidence"), strict=True):
        handle = handles[label]
        for bar in container:
            assert bar.get_facecolor() == handle.get_facecolor(), label
            assert bar.get_edgecolor() == handle.get_edgecolor(), label
            assert bar.get_hatch() == handle.get_hatch(), label
            assert bar.get_linewidth() == handle.get_linewidth(), label
            # Opaque: a translucent bar over the accuracy bar looks unlike its legend entry.
            assert bar.get_facecolor()[3] == 1.0, label
            assert bar.get_alpha() in (None, 1.0), label
    gap_handle = handles["gap to confidence"]
    assert gap_handle.get_facecolor() == (0xF4 / 255, 0xBE / 255, 0xB1 / 255, 1.0)  # GAP_COLOR
    assert gap_handle.get_hatch() == "//"
    assert handles["accuracy"].get_facecolor()[:3] == pytest.approx(
        (0x26 / 255, 0x46 / 255, 0x53 / 255)  # TRAIN_COLOR
    )


def test_confusion_figure_shows_the_counts(evaluation):
    figure = plots.confusion_figure(evaluation.confusion)
    image = figure.axes[0].images[0].get_array()
    np.testing.assert_array_equal(image.filled(0), evaluation.confusion)
    texts = {t.get_text() for t in figure.axes[0].texts}
    assert str(evaluation.confusion[0, 0]) in texts
    right = int(np.trace(evaluation.confusion))
    assert f"{right} of 600 right" in figure.axes[0].get_title()
    assert_drawn(figure)


def test_examples_grid_tiles_and_captions(evaluation):
    images = np.random.default_rng(1).integers(0, 256, size=(600, 28, 28), dtype=np.uint8)
    figure = plots.examples_figure(images, evaluation.hardest, title="hardest", columns=4)
    (axis,) = figure.axes
    grid = axis.images[0].get_array()
    hardest = evaluation.hardest
    # Tile j at row r, column c: 14 caption rows above each 28x28 tile, 2 pixels between tiles.
    for j, k in enumerate(hardest.index):
        r, c = divmod(j, 4)
        top, left = r * (28 + 14 + 2) + 14, c * (28 + 2)
        np.testing.assert_array_equal(grid[top : top + 28, left : left + 28], images[k])
    captions = [t.get_text() for t in axis.texts]
    assert len(captions) == 10
    assert captions[0] == (
        f"#{hardest.index[0]} true {hardest.target[0]}\n"
        f"pred {hardest.predicted[0]} p(true) {hardest.p_true[0]:.2g}"
    )
    assert_drawn(figure)


@pytest.mark.parametrize("columns", [5, 8])
def test_examples_captions_are_readable_and_apart(evaluation, columns):
    images = np.zeros((600, 28, 28), np.uint8)
    figure = plots.examples_figure(images, evaluation.hardest, title="hardest", columns=columns)
    decoded(plots.figure_bytes(figure))  # lays the figure out
    (axis,) = figure.axes
    renderer = figure.canvas.get_renderer()
    boxes = [text.get_window_extent(renderer) for text in axis.texts]
    for text in axis.texts:
        assert text.get_fontsize() * plots.DPI / 72 >= 12  # pixels, at the PNG's natural size
    # A column (tile + gap) is at least as wide as any caption: neighbours never overlap.
    pitch = axis.images[0].get_window_extent(renderer).width / (columns * 30 - 2) * 30
    assert max(box.width for box in boxes) < pitch
    for i, first in enumerate(boxes):
        assert figure.bbox.contains(first.x0, first.y0)
        assert figure.bbox.contains(first.x1, first.y1)
        assert not any(first.overlaps(second) for second in boxes[i + 1 :])


def test_examples_grid_with_no_examples(evaluation):
    arrays = {k: a[:0] for k, a in vars(evaluation.hardest).items() if a is not None}
    empty = dataclasses.replace(evaluation.hardest, **arrays)
    figure = plots.examples_figure(np.zeros((1, 28, 28), np.uint8), empty, title="none")
    assert not figure.axes[0].images
    assert figure.axes[0].texts[0].get_text() == "none"
    decoded(plots.figure_bytes(figure))


def test_loss_concentration_marks_the_worst_percent():
    losses = np.array([10.0] * 2 + [0.1] * 198)  # worst 1% = 2 samples carry 20 / 39.8
    figure = plots.loss_concentration_figure(losses)
    point = next(line for line in figure.axes[0].lines if line.get_marker() == "o")
    assert point.get_xdata()[0] == pytest.approx(1.0)
    assert point.get_ydata()[0] == pytest.approx(100 * 20 / 39.8, rel=1e-12)
    assert "carry 50.3% of the loss" in figure.axes[0].texts[0].get_text()
    assert_drawn(figure)


# --------------------------------------------------------------------------- files


def test_save_figure_writes_a_decodable_file_and_no_temporaries(tmp_path):
    path = plots.save_figure(plots.sigmoid_figure(), tmp_path / "deep" / "sigmoid.png")
    assert path == tmp_path / "deep" / "sigmoid.png"
    decoded(path.read_bytes())
    assert [p.name for p in path.parent.iterdir()] == ["sigmoid.png"]


def test_save_figure_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "figure.png"
    path.write_bytes(b"old")

    class Broken:
        def savefig(self, *args, **kwargs):
            raise RuntimeError("drawing failed")

    with pytest.raises(RuntimeError, match="drawing failed"):
        plots.save_figure(Broken(), path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]

    # A failure while writing (after the temporary file exists) also leaves the old file.
    def fail_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", fail_replace)
    with pytest.raises(OSError, match="disk full"):
        plots.save_figure(plots.sigmoid_figure(), path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]


def test_figures_never_load_pyplot_or_need_a_display():
    code = (
        "import os, sys; os.environ.pop('DISPLAY', None)\n"
        "from logloss import plots\n"
        "plots.figure_bytes(plots.likelihood_figure())\n"
        "plots.figure_bytes(plots.softmax_figure())\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "False"
