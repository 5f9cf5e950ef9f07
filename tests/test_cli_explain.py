"""The ``explain``, ``evaluate`` and ``report`` commands, run through ``logloss.cli.main`` on a
small model trained on the real MNIST; numbers checked against PyTorch and scikit-learn."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn import metrics

from logloss.cli import main
from logloss.insight.diagnostics import DEFAULT_TOP_K


@pytest.fixture(scope="module")
def run(small_run):
    return small_run


@pytest.fixture(scope="module")
def mnist_test(data_dir):
    from logloss.data import load_dataset

    return load_dataset("mnist", "test", data_dir=data_dir, download=False)


def call(capsys, *argv):
    """Run ``logloss argv...`` in-process: (exit status, stdout, stderr)."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def torch_logits(run, images, which="best"):
    """The model's logits in float64, computed here with the model and its saved normalisation."""
    from logloss.training.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(run, which=which)
    mean, std = (
        checkpoint.metadata["normalization"]["mean"],
        checkpoint.metadata["normalization"]["std"],
    )
    x = (torch.from_numpy(np.asarray(images)).float() / 255.0 - mean) / std
    with torch.no_grad():
        return checkpoint.model(x).double()


# --------------------------------------------------------------------------- explain


def test_explain_json_matches_pytorch(capsys, run, data_dir, mnist_test):
    status, out, _ = call(
        capsys,
        "explain",
        "--checkpoint",
        run,
        "--index",
        0,
        "--untrained",
        "--json",
        "--data-dir",
        data_dir,
    )
    assert status == 0
    payload = json.loads(out)
    images, labels = mnist_test
    assert payload["target"] == int(labels[0]) == 7  # the article's first test digit
    for key, which in (("explanation", "best"), ("untrained", "initial")):
        logits = torch_logits(run, images[:1], which)
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([7])).item()
        assert payload[key]["loss"] == pytest.approx(loss, rel=1e-5)
        assert payload[key]["predicted"] == int(logits.argmax())
        np.testing.assert_allclose(
            payload[key]["probabilities"], torch.softmax(logits[0], 0).numpy(), rtol=1e-5, atol=1e-7
        )
    # The article's before and after: about ln 10, then far below it.
    assert abs(payload["untrained"]["loss"] - math.log(10)) < 0.5
    assert payload["explanation"]["loss"] < 0.5


def test_explain_text_shows_digit_bars_and_loss(capsys, run, data_dir, mnist_test, tmp_path):
    png = tmp_path / "digit.png"
    status, out, _ = call(
        capsys, "explain", "--checkpoint", run, "--index", 3, "--png", png, "--data-dir", data_dir
    )
    assert status == 0
    lines = out.splitlines()
    art = lines[:28]
    assert all(len(line) == 56 for line in art)  # 28 pixels, 2 characters each
    assert "@" in "".join(art)
    images, labels = mnist_test
    y = int(labels[3])
    assert f"mnist test[3], true class {y}" in out
    loss = torch.nn.functional.cross_entropy(torch_logits(run, images[3:4]), torch.tensor([y]))
    assert f"loss = -ln p({y}) = logsumexp(z) - z[{y}] = {loss.item():.4f}" in out
    assert "█" in out  # the softmax bars
    with Image.open(png) as image:
        assert image.size == (224, 224)  # 28 pixels, 8x
        np.testing.assert_array_equal(np.asarray(image)[::8, ::8], images[3])


def test_explain_untrained_side_by_side(capsys, run, data_dir):
    status, out, _ = call(
        capsys, "explain", "--checkpoint", run, "--untrained", "--data-dir", data_dir
    )
    assert status == 0
    assert "untrained (initial weights)" in out
    row = next(line for line in out.splitlines() if line.startswith("loss = -ln p(true)"))
    before, after = (float(v) for v in row.split()[-2:])
    assert abs(before - math.log(10)) < 0.5
    assert after < before
    assert f"{math.log(10):.4f}" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--index", "10000"], "--index 10000 is out of range: the test split has 10000 samples"),
        (["--index", "-1"], "--index must be at least 0, got -1"),
    ],
)
def test_explain_bad_index(capsys, run, data_dir, argv, message):
    status, _, err = call(capsys, "explain", "--checkpoint", run, "--data-dir", data_dir, *argv)
    assert status == 2
    assert message in err


def test_missing_checkpoint_is_a_clear_error(capsys, tmp_path):
    status, _, err = call(capsys, "evaluate", "--checkpoint", tmp_path / "nothing")
    assert status == 2
    assert "is not a logloss checkpoint directory (no checkpoint.json" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def evaluate_json(run, data_dir):
    stdout = io.StringIO()
    from contextlib import redirect_stdout

    with redirect_stdout(stdout):
        status = main(["evaluate", "--checkpoint", str(run), "--json", "--data-dir", str(data_dir)])
    assert status == 0
    return json.loads(stdout.getvalue())


def test_evaluate_json_matches_scikit_learn(run, evaluate_json, mnist_test):
    images, labels = mnist_test
    p = torch.softmax(torch_logits(run, images), dim=1).numpy()
    classes = list(range(10))
    e = evaluate_json
    assert e["size"] == 10_000
    assert e["source"] == {
        "type": "checkpoint",
        "checkpoint": str(run),
        "weights": "best",
        "dataset": "mnist",
        "split": "test",
    }
    assert e["accuracy"] == metrics.accuracy_score(labels, p.argmax(axis=1))
    assert e["loss"] == pytest.approx(metrics.log_loss(labels, p, labels=classes), rel=1e-5)
    assert e["perplexity"] == pytest.approx(math.exp(e["loss"]), rel=1e-12)
    assert e["brier"] == pytest.approx(
        metrics.brier_score_loss(labels, p, labels=classes, scale_by_half=False), rel=1e-5
    )
    assert e["uniform_loss"] == pytest.approx(math.log(10), rel=1e-15)
    assert e["confusion"] == metrics.confusion_matrix(labels, p.argmax(axis=1)).tolist()
    assert e["errors"] == int((p.argmax(axis=1) != labels).sum())
    recall = metrics.recall_score(labels, p.argmax(axis=1), average=None)
    np.testing.assert_allclose([c["accuracy"] for c in e["per_class"]], recall, rtol=1e-12)
    losses = -np.log(p[np.arange(len(labels)), labels])
    # --top defaults to the library's DEFAULT_TOP_K.
    hardest = np.argsort(-losses, kind="stable")[:DEFAULT_TOP_K]
    assert len(e["hardest"]) == DEFAULT_TOP_K
    assert [h["index"] for h in e["hardest"]] == hardest.tolist()
    assert e["worst"]["count"] == 100
    assert e["worst"]["share"] == pytest.approx(
        np.sort(losses)[-100:].sum() / losses.sum(), rel=1e-5
    )
    t = e["temperature"]
    assert t["fit_size"] == 5000
    assert t["fit_loss_after"] <= t["fit_loss_before"]
    assert 0 <= e["calibration"]["ece"] <= e["calibration"]["mce"] <= 1


def test_evaluate_text_and_figures(capsys, run, data_dir, tmp_path, evaluate_json):
    figures = tmp_path / "figures"
    status, out, _ = call(
        capsys,
        "evaluate",
        "--checkpoint",
        run,
        "--data-dir",
        data_dir,
        "--figures",
        figures,
        "--top",
        3,
    )
    assert status == 0
    assert f"{100 * evaluate_json['accuracy']:.2f}%" in out
    assert f"{evaluate_json['loss']:.4f}" in out
    assert "temperature T" in out
    assert "most confident mistakes" in out
    names = sorted(p.name for p in figures.iterdir())
    assert names == [
        "confident_mistakes.png",
        "confusion.png",
        "hardest.png",
        "loss_concentration.png",
        "per_class_loss.png",
        "reliability.png",
        "reliability_after_temperature.png",
        "training_curves.png",
    ]
    for name in names:
        with Image.open(figures / name) as image:
            image.load()
            assert image.format == "PNG"
            assert min(image.size) > 100


def test_evaluate_initial_weights_without_calibration(capsys, run, data_dir):
    status, out, _ = call(
        capsys,
        "evaluate",
        "--checkpoint",
        run,
        "--which",
        "initial",
        "--no-calibration",
        "--json",
        "--data-dir",
        data_dir,
    )
    assert status == 0
    payload = json.loads(out)
    assert payload["source"]["weights"] == "initial"
    assert payload["temperature"] is None
    assert abs(payload["loss"] - math.log(10)) < 0.25


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--bins", "0"], "--bins must be at least 1, got 0"), (["--top", "-2"], "--top must be")],
)
def test_evaluate_bad_options(capsys, run, argv, message):
    status, _, err = call(capsys, "evaluate", "--checkpoint", run, *argv)
    assert status == 2
    assert message in err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("explain", "evaluate", "report"):
        assert command in out


def test_unwritable_png_is_a_clear_error(capsys, run, data_dir, tmp_path):
    target = tmp_path / "no-such-folder" / "digit.png"
    status, _, err = call(
        capsys, "explain", "--checkpoint", run, "--png", target, "--data-dir", data_dir
    )
    assert status == 2
    assert f"cannot write --png {target}: the folder {target.parent} does not exist" in err
