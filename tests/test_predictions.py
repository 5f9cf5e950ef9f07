"""Any model's predictions (issue 12): every format gives the numbers of independent references
(scikit-learn, a hand-written ECE, SciPy for the temperature), multiclass and binary; streaming
equals one pass; the kind is detected by the stated rules."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn import metrics

import logloss
from logloss.insight.accumulators import Accumulator
from logloss.insight.binning import reliability
from logloss.insight.diagnostics import evaluate_logits
from logloss.insight.kinds import detect_kind, score
from test_diagnostics import reference_bins


def synthetic(n: int, c: int, *, seed: int, signal: float = 2.5):
    """Float32 logits (n, c) of a classifier right most of the time, and int64 targets."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, c, size=n)
    logits = rng.normal(scale=2.0, size=(n, c))
    logits[np.arange(n), target] += signal
    return logits.astype(np.float32), target


def hand_ece(confidence, correct, n_bins):
    """ECE with bins ((m-1)/M, m/M], the first closed at 0: test_diagnostics' plain loop."""
    return reference_bins(np.asarray(confidence), np.asarray(correct, float), n_bins)[0]


def hand_classwise_ece(p, y, n_bins):
    return np.mean([hand_ece(p[:, c], (y == c).astype(float), n_bins) for c in range(p.shape[1])])


def scipy_temperature(z, y):
    """argmin_T mean NLL of softmax(z / T), by SciPy's bounded scalar search."""

    def nll(t):
        return -log_softmax(z / t, axis=1)[np.arange(len(y)), y].mean()

    return minimize_scalar(nll, bounds=(0.01, 100), method="bounded", options={"xatol": 1e-10}).x


def check_multiclass(result, p, y, *, rel=1e-12):
    """The numbers of ``result`` against scikit-learn and the hand-written ECEs."""
    e, c = result.evaluation, p.shape[1]
    labels = list(range(c))
    assert e.loss == pytest.approx(metrics.log_loss(y, p, labels=labels), rel=rel)
    brier = metrics.brier_score_loss(y, p, labels=labels, scale_by_half=False)
    assert e.brier == pytest.approx(brier, rel=rel, abs=1e-14)
    predicted = p.argmax(axis=1)
    assert e.accuracy == metrics.accuracy_score(y, predicted)
    np.testing.assert_array_equal(
        e.confusion, metrics.confusion_matrix(y, predicted, labels=labels)
    )
    confidence = p[np.arange(len(y)), predicted]
    assert e.reliability.ece == pytest.approx(hand_ece(confidence, predicted == y, 15), rel=1e-9)
    assert e.classwise_ece == pytest.approx(hand_classwise_ece(p, y, 15), rel=1e-9, abs=1e-15)


# --------------------------------------------------------------------------- every format


@pytest.fixture(scope="module")
def model():
    """A logistic regression (scikit-learn, not logloss) on synthetic 4-class data: its
    probabilities and log-probabilities on a test part and a calibration part."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(
        n_samples=3000, n_features=12, n_informative=8, n_classes=4, random_state=0
    )
    fit = LogisticRegression(max_iter=500).fit(x[:1000], y[:1000])
    return {
        "test": (
            fit.predict_proba(x[1000:2500]),
            fit.predict_log_proba(x[1000:2500]),
            fit.decision_function(x[1000:2500]),
            y[1000:2500],
        ),
        "calibration": (fit.predict_proba(x[2500:]), fit.decision_function(x[2500:]), y[2500:]),
    }


def test_npy_logits_and_text_labels(model, tmp_path):
    _, _, z, y = model["test"]
    np.save(tmp_path / "z.npy", z)
    (tmp_path / "y.txt").write_text("".join(f"{v}\n" for v in y))
    result = logloss.evaluate(tmp_path / "z.npy", tmp_path / "y.txt")
    assert result.to_dict()["source"]["kind"] == "logits"
    check_multiclass(result, softmax(z, axis=1), y)


@pytest.mark.parametrize("key", ["probs", "log_probs", "logits"])
def test_npz_arrays_name_their_kind(model, tmp_path, key):
    p, log_p, z, y = model["test"]
    values = {"probs": p, "log_probs": log_p, "logits": z}[key]
    np.savez(tmp_path / "p.npz", **{key: values}, labels=y)
    result = logloss.evaluate(tmp_path / "p.npz")
    assert result.source["kind"] == key.replace("_", "-")
    assert "the .npz array is named" in result.source["kind_reason"]
    reference = softmax(z, axis=1) if key == "logits" else p
    check_multiclass(result, reference, y, rel=1e-9)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_tables_with_class_names_and_name_labels(model, tmp_path, suffix):
    p, _, _, y = model["test"]
    names = ["cat", "dog", "owl", "yak"]
    frame = pd.DataFrame(p, columns=names)
    frame.insert(0, "label", [names[v] for v in y])
    frame.insert(0, "id", [f"r{k}" for k in range(len(y))])
    path = tmp_path / f"p{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pandas(frame), path, row_group_size=400)
    else:
        frame.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False, float_format="%.17g")
    result = logloss.evaluate(path)
    assert result.classes == tuple(names)
    assert result.source["kind"] == "probs"
    check_multiclass(result, p, y, rel=1e-12)
    hardest = result.evaluation.hardest
    assert list(hardest.ids) == [f"r{k}" for k in hardest.index]


def test_temperature_from_a_calibration_file_equals_scipy(model, tmp_path):
    _, _, z, y = model["test"]
    _, zc, yc = model["calibration"]
    np.savez(tmp_path / "test.npz", logits=z, labels=y)
    np.savez(tmp_path / "val.npz", logits=zc, labels=yc)
    result = logloss.evaluate(tmp_path / "test.npz", calibration=tmp_path / "val.npz")
    t = result.evaluation.temperature
    assert t.temperature == pytest.approx(scipy_temperature(zc, yc), rel=1e-6)
    assert t.fit_size == len(yc)
    after = softmax(z / t.temperature, axis=1)
    assert t.loss_after == pytest.approx(metrics.log_loss(y, after, labels=range(4)), rel=1e-10)
    confidence = after.max(axis=1)
    assert t.ece_after == pytest.approx(hand_ece(confidence, after.argmax(1) == y, 15), rel=1e-9)
    assert not any("temperature scaling skipped" in n for n in result.notes)
    plain = logloss.evaluate(tmp_path / "test.npz")
    assert plain.evaluation.temperature is None
    assert any("temperature scaling skipped" in n for n in plain.notes)


# --------------------------------------------------------------------------- binary


def binary_file(folder, fmt, values, y):
    """One column of ``values`` and the labels ``y`` written as ``fmt``."""
    if fmt == "npy":
        np.save(folder / "v.npy", values)
        np.save(folder / "y.npy", y)
        return folder / "v.npy", folder / "y.npy"
    if fmt == "npz":
        np.savez(folder / "v.npz", probs=values, labels=y)
        return folder / "v.npz", None
    frame = pd.DataFrame({"label": y, "spam": values})
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pandas(frame), folder / "v.parquet", row_group_size=999)
    else:
        frame.to_csv(folder / "v.csv", index=False, float_format="%.17g")
    return folder / f"v.{fmt}", None


@pytest.mark.parametrize(
    ("kind", "fmt"),
    [
        ("probs", "npy"),
        ("logits", "npy"),
        ("probs", "npz"),
        ("probs", "csv"),
        ("logits", "parquet"),
    ],
)
def test_binary_column_takes_the_sigmoid_path(tmp_path, kind, fmt):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 4000)
    t = rng.normal(size=4000) + 1.5 * (2 * y - 1)
    p1 = 1 / (1 + np.exp(-t))
    values = (p1 if kind == "probs" else t).astype(np.float64)
    predictions, labels = binary_file(tmp_path, fmt, values, y)
    result = logloss.evaluate(predictions, labels, kind="auto" if fmt == "npz" else kind)
    e = result.evaluation
    assert e.binary
    assert e.loss == pytest.approx(metrics.log_loss(y, p1), rel=1e-12)
    reference_bce = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(t), torch.from_numpy(y.astype(np.float64))
    )
    assert e.loss == pytest.approx(float(reference_bce), rel=1e-10)
    assert e.brier == pytest.approx(metrics.brier_score_loss(y, p1), rel=1e-12)  # binary: halved
    predicted = (p1 > 0.5).astype(int)
    assert e.accuracy == metrics.accuracy_score(y, predicted)
    top = np.where(predicted == 1, p1, 1 - p1)
    assert e.reliability.ece == pytest.approx(hand_ece(top, predicted == y, 15), rel=1e-9)
    assert e.positive.ece == pytest.approx(hand_ece(p1, y.astype(float), 15), rel=1e-9)
    payload = result.to_dict()
    assert payload["calibration"]["positive"]["ece"] == e.positive.ece
    assert payload["brier_definition"].startswith("mean_i (P_i(1) - y_i)^2")


def test_binary_probabilities_are_clipped_as_scikit_learn_does():
    p1 = np.array([0.0, 1.0, 0.3, 0.9])
    y = np.array([1, 0, 0, 1])
    result = logloss.evaluate(p1, y, kind="probs")
    assert result.evaluation.loss == pytest.approx(metrics.log_loss(y, p1), rel=1e-12)


# --------------------------------------------------------------------------- streaming


def test_streaming_equals_one_pass():
    z, y = synthetic(20_000, 7, seed=4)
    one = evaluate_logits(z, y)
    streamed = logloss.evaluate(z, y).evaluation  # blocks of 18724 rows and a tail
    chunks = Accumulator(7, expected_rows=len(y))
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, len(y)), size=30, replace=False))
    for start, stop in zip([0, *cuts], [*cuts, len(y)], strict=True):
        part = Accumulator(7, expected_rows=len(y))
        part.add(score(z[start:stop], y[start:stop], "logits", offset=start))
        chunks.merge(part)  # merged in row order, each from its own accumulator
    merged = chunks.finish()
    for result in (streamed, merged):
        for name in ("size", "errors", "worst_count"):
            assert getattr(result, name) == getattr(one, name)
        np.testing.assert_array_equal(result.confusion, one.confusion)
        np.testing.assert_array_equal(result.reliability.count, one.reliability.count)
        np.testing.assert_array_equal(result.hardest.index, one.hardest.index)
        np.testing.assert_array_equal(result.confident_mistakes.index, one.confident_mistakes.index)
        for name in ("loss", "brier", "accuracy", "worst_share", "classwise_ece"):
            assert getattr(result, name) == pytest.approx(getattr(one, name), rel=1e-12)
        assert result.reliability.ece == pytest.approx(one.reliability.ece, rel=1e-12)
        np.testing.assert_allclose(result.class_loss, one.class_loss, rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 400), c=st.integers(2, 6), block=st.integers(1, 97), seed=st.integers(0, 99)
)
def test_any_block_size_gives_the_same_evaluation(n, c, block, seed):
    z, y = synthetic(n, c, seed=seed)
    one = evaluate_logits(z, y, top_k=5)
    sums = Accumulator(c, top_k=5, expected_rows=n)
    for start in range(0, n, block):
        sums.add(score(z[start : start + block], y[start : start + block], "logits", offset=start))
    streamed = sums.finish()
    np.testing.assert_array_equal(streamed.hardest.index, one.hardest.index)
    np.testing.assert_array_equal(streamed.confident_mistakes.index, one.confident_mistakes.index)
    np.testing.assert_array_equal(streamed.confusion, one.confusion)
    assert streamed.loss == pytest.approx(one.loss, rel=1e-12)
    assert streamed.worst_share == pytest.approx(one.worst_share, rel=1e-12)
    # The streamed Lorenz curve's points lie on the exact curve of all losses.
    x, share = streamed.concentration_points
    exact_x, exact_share = one.concentration()
    np.testing.assert_allclose(share, np.interp(x, exact_x, exact_share), rtol=1e-9, atol=1e-12)


def test_worst_share_is_exact_in_streaming(tmp_path):
    z, y = synthetic(30_001, 5, seed=6, signal=1.0)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", y)
    e = logloss.evaluate(tmp_path / "z.npy", tmp_path / "y.npy").evaluation
    losses = -log_softmax(z.astype(np.float64), axis=1)[np.arange(len(y)), y]
    k = math.ceil(len(y) / 100)
    assert e.worst_count == k == 301
    assert e.worst_share == pytest.approx(np.sort(losses)[-k:].sum() / losses.sum(), rel=1e-12)


# --------------------------------------------------------------------------- kinds


@pytest.mark.parametrize(
    ("values", "kind", "warns"),
    [
        (np.array([[0.2, 0.8], [0.5, 0.5]]), "probs", False),
        (np.log(np.array([[0.2, 0.8], [0.5, 0.5]])), "log-probs", False),
        (np.array([[2.0, -1.0], [0.3, 0.1]]), "logits", False),
        (np.array([[0.2, 0.3], [0.5, 0.1]]), "logits", True),  # in [0, 1], rows not summing to 1
        (np.array([[-0.2, -3.0], [-1.0, -0.5]]), "logits", True),  # <= 0, logsumexp not 0
        (np.array([[0.3], [0.9]]), "probs", True),  # one column in [0, 1]: P(1), or logits?
        (np.array([[3.0], [-2.0]]), "logits", False),
    ],
)
def test_auto_kind_rules(values, kind, warns):
    choice = detect_kind(values)
    assert choice.kind == kind
    assert (choice.warning is not None) == warns


def test_renormalize_says_how_many_rows_and_by_how_much():
    p = np.array([[0.5, 0.5], [0.3, 0.6], [0.1, 0.9], [0.45, 0.45]])
    y = np.array([0, 1, 1, 0])
    with pytest.raises(ValueError, match=r"row 1: the row sums to 0\.9.*pass --renormalize"):
        logloss.evaluate(p, y, kind="probs")
    result = logloss.evaluate(p, y, kind="probs", renormalize=True)
    fixed = p / p.sum(axis=1, keepdims=True)
    assert result.evaluation.loss == pytest.approx(metrics.log_loss(y, fixed), rel=1e-12)
    (note,) = [n for n in result.notes if "--renormalize" in n]
    assert "changed 2 row(s)" in note
    assert "at most 0.1" in note


# --------------------------------------------------------------------------- the bin convention


def test_the_docs_worked_example_under_three_conventions():
    """Confidences 0.5, 0.6, 0.8, 1.0, correct T, F, T, F, 4 bins (docs/predictions.md)."""
    from torchmetrics.functional.classification import binary_calibration_error

    confidence = np.array([0.5, 0.6, 0.8, 1.0])
    correct = np.array([1.0, 0.0, 1.0, 0.0])
    # logloss: (lo, hi]: 0.5 alone in (0.25, 0.5]; 0.6 in (0.5, 0.75]; 0.8 and 1.0 together.
    assert reliability(confidence, correct, 4).ece == pytest.approx(0.475, abs=1e-15)
    assert hand_ece(confidence, correct, 4) == pytest.approx(0.475, abs=1e-15)
    # torchmetrics: [lo, hi) with 1.0 in a bin of its own (torch.bucketize(right=True) - 1).
    measured = binary_calibration_error(
        torch.from_numpy(confidence), torch.from_numpy(correct).long(), n_bins=4, norm="l1"
    )
    assert float(measured) == pytest.approx(0.325, abs=1e-12)
    # netcal: numpy.histogramdd, [lo, hi) with the last bin closed: 0.5 and 0.6 share a bin.
    counts, edges = np.histogram(confidence, bins=np.linspace(0, 1, 5))
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, 3)
    netcal = sum(
        (which == m).sum() / 4 * abs(correct[which == m].mean() - confidence[which == m].mean())
        for m in range(4)
        if counts[m]
    )
    assert netcal == pytest.approx(0.225, abs=1e-15)


def test_quantile_bins_hold_equal_counts():
    rng = np.random.default_rng(7)
    confidence = rng.random(1003)
    correct = rng.random(1003) < confidence
    bins = reliability(confidence, correct, 10, "quantile")
    assert sorted(set(bins.count.tolist())) == [100, 101]
    order = np.argsort(confidence, kind="stable")
    expected = (
        sum(
            len(run) * abs(correct[run].mean() - confidence[run].mean())
            for run in np.array_split(order, 10)
        )
        / 1003
    )
    assert bins.ece == pytest.approx(expected, rel=1e-12)
    assert bins.to_dict()["binning"] == "quantile"


# --------------------------------------------------------------------------- inputs from Python


def test_lists_tensors_and_dataframes_give_the_same_numbers():
    z, y = synthetic(500, 3, seed=8)
    reference = logloss.evaluate(z, y).evaluation
    names = ["a", "b", "c"]
    pandas_frame = pd.DataFrame(z, columns=names).assign(label=y)
    polars_frame = pl.DataFrame({**{n: z[:, k] for k, n in enumerate(names)}, "label": y})
    for predictions, labels in (
        (z.tolist(), y.tolist()),
        (torch.from_numpy(z), torch.from_numpy(y)),
        (pandas_frame, "label"),
        (polars_frame, "label"),
    ):
        result = logloss.evaluate(predictions, labels)
        assert result.evaluation.loss == pytest.approx(reference.loss, rel=1e-12)
        np.testing.assert_array_equal(result.evaluation.confusion, reference.confusion)
    assert logloss.evaluate(pandas_frame, "label").classes == tuple(names)


def test_evaluate_model_streams_a_loader():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    x, y = torch.randn(700, 6), torch.randint(0, 4, (700,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    result = logloss.evaluate_model(model, loader, device="cpu", keep_logits=True)
    with torch.no_grad():
        logits = model(x).numpy()
    np.testing.assert_allclose(result.logits, logits, rtol=1e-6)
    reference = evaluate_logits(logits, y.numpy())
    assert result.evaluation.loss == pytest.approx(reference.loss, rel=1e-6)
    assert result.evaluation.loss == pytest.approx(
        float(torch.nn.functional.cross_entropy(model(x), y).detach()), rel=1e-5
    )
    assert result.source["type"] == "model"
    assert model.training  # put back as it was
