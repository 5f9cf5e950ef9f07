"""Dataset diagnostics (logloss.insight.diagnostics) against scikit-learn, PyTorch, SciPy and
hand-derived numbers.  The checkpoint-based tests (one real forward pass over MNIST) are at the
end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import minimize_scalar
from sklearn import metrics

from logloss._json import dumps
from logloss.insight import diagnostics, run_evaluation
from logloss.insight.diagnostics import evaluate_logits, fit_temperature, reliability

SMALL_RUN_VALIDATION = 5000  # TrainConfig's default validation_size (conftest.small_run)


def synthetic(n: int, c: int, *, seed: int, signal: float = 3.0, scale: float = 2.0):
    """Logits (n, c) float32 of a noisy classifier that is right most of the time, and targets."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, c, size=n)
    logits = rng.normal(scale=scale, size=(n, c))
    logits[np.arange(n), target] += signal
    return logits.astype(np.float32), target


def torch_losses(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy from PyTorch in float64: the independent reference."""
    return torch.nn.functional.cross_entropy(
        torch.from_numpy(np.asarray(logits, dtype=np.float64)),
        torch.from_numpy(np.asarray(target, dtype=np.int64)),
        reduction="none",
    ).numpy()


def probabilities(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(np.asarray(logits, dtype=np.float64)), dim=1).numpy()


# --------------------------------------------------------------------------- headline numbers


def test_headline_numbers_match_scikit_learn():
    logits, target = synthetic(2000, 10, seed=0)
    result = evaluate_logits(logits, target)
    p = probabilities(logits)
    labels = list(range(10))
    assert result.loss == pytest.approx(metrics.log_loss(target, p, labels=labels), rel=1e-12)
    # Multiclass Brier as scikit-learn defines it: sum over classes, not halved (range [0, 2]).
    expected_brier = metrics.brier_score_loss(target, p, labels=labels, scale_by_half=False)
    assert result.brier == pytest.approx(expected_brier, rel=1e-12)
    assert result.accuracy == metrics.accuracy_score(target, p.argmax(axis=1))
    expected_confusion = metrics.confusion_matrix(target, p.argmax(axis=1), labels=labels)
    np.testing.assert_array_equal(result.confusion, expected_confusion)
    assert result.perplexity == pytest.approx(math.exp(result.loss), rel=1e-15)
    assert result.uniform_loss == pytest.approx(math.log(10), rel=1e-15)
    assert result.size == 2000
    assert result.num_classes == 10


def test_per_sample_losses_match_pytorch():
    logits, target = synthetic(500, 7, seed=1)
    result = evaluate_logits(logits, target)
    np.testing.assert_allclose(result.losses, torch_losses(logits, target), rtol=1e-12)


def test_uniform_logits_give_ln_c():
    result = evaluate_logits(np.zeros((5, 10)), np.arange(5))
    assert result.loss == pytest.approx(math.log(10), rel=1e-15)
    assert result.perplexity == pytest.approx(10.0, rel=1e-14)
    # Brier of the uniform guess: (1 - 1/C)^2 + (C - 1) / C^2 = 1 - 1/C.
    assert result.brier == pytest.approx(0.9, rel=1e-14)


def test_per_class_accuracy_and_loss_match_masks():
    logits, target = synthetic(800, 5, seed=2, signal=1.5)
    result = evaluate_logits(logits, target)
    losses = torch_losses(logits, target)
    predicted = logits.argmax(axis=1)
    for c in range(5):
        mask = target == c
        assert result.class_count[c] == mask.sum()
        assert result.class_accuracy[c] == pytest.approx((predicted[mask] == c).mean(), rel=1e-15)
        assert result.class_loss[c] == pytest.approx(losses[mask].mean(), rel=1e-12)
    # Per-class recall is what scikit-learn calls recall with average=None.
    recall = metrics.recall_score(target, predicted, labels=list(range(5)), average=None)
    np.testing.assert_allclose(result.class_accuracy, recall, rtol=1e-15)


def test_absent_class_has_nan_accuracy_spelled_nan_in_json():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    result = evaluate_logits(logits, np.array([0, 0]))
    assert result.class_count.tolist() == [2, 0, 0]
    assert math.isnan(result.class_accuracy[1])
    summary = json.loads(dumps(result.to_dict()))  # logloss's one JSON policy
    assert summary["per_class"][1]["accuracy"] == "NaN"
    assert summary["per_class"][0]["accuracy"] == 0.5


# --------------------------------------------------------------------------- calibration


def test_ece_and_mce_by_hand():
    # Confidence 0.95 0.95 0.95 0.95 | 0.62 0.62 | 0.25 with 4 bins of width 0.25:
    # bin (0.75, 1]: conf 0.95, acc 3/4 -> gap 0.2;  bin (0.5, 0.75]: conf 0.62, acc 0 -> 0.62;
    # bin [0, 0.25]: conf 0.25 (on the edge: belongs to the lower bin), acc 1 -> 0.75.
    # ECE = 4/7 * 0.2 + 2/7 * 0.62 + 1/7 * 0.75 = (0.8 + 1.24 + 0.75) / 7 = 2.79 / 7.
    confidence = np.array([0.95, 0.95, 0.95, 0.95, 0.62, 0.62, 0.25])
    correct = np.array([True, True, True, False, False, False, True])
    bins = reliability(confidence, correct, n_bins=4)
    assert bins.count.tolist() == [1, 0, 2, 4]
    assert bins.ece == pytest.approx(2.79 / 7, rel=1e-12)
    assert bins.mce == pytest.approx(0.75, rel=1e-12)
    assert math.isnan(bins.accuracy[1])
    np.testing.assert_allclose(bins.confidence[[0, 2, 3]], [0.25, 0.62, 0.95], rtol=1e-12)
    np.testing.assert_allclose(bins.accuracy[[0, 2, 3]], [1.0, 0.0, 0.75], rtol=1e-12)


def test_ece_of_two_class_logits_by_hand():
    # Two samples at p = sigmoid(2) = 0.8808 (one right, one wrong), one at sigmoid(0.5) = 0.6225
    # (right); 10 bins: |0.5 - 0.8808| * 2/3 + |1 - 0.6225| * 1/3.
    logits = np.array([[2.0, 0.0], [2.0, 0.0], [0.5, 0.0]])
    result = evaluate_logits(logits, np.array([0, 1, 0]), n_bins=10)
    s2, s05 = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(-0.5))
    expected = 2 / 3 * abs(0.5 - s2) + 1 / 3 * abs(1 - s05)
    assert result.reliability.ece == pytest.approx(expected, rel=1e-12)
    assert result.reliability.mce == pytest.approx(max(abs(0.5 - s2), 1 - s05), rel=1e-12)


def reference_bins(confidence, correct, n_bins):
    """A plain loop over the bins, written from the definition ((m-1)/M, m/M] independently."""
    ece, gaps = 0.0, []
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        inside = (confidence > lo) & (confidence <= hi)
        if m == 0:
            inside |= confidence == 0.0
        if inside.any():
            gap = abs(correct[inside].mean() - confidence[inside].mean())
            ece += inside.sum() / len(confidence) * gap
            gaps.append(gap)
    return ece, max(gaps)


@settings(max_examples=60, deadline=None)
@given(
    confidence=arrays(np.float64, st.integers(1, 60), elements=st.floats(0.0, 1.0)),
    seed=st.integers(0, 2**32 - 1),
    n_bins=st.integers(1, 20),
)
def test_reliability_matches_a_plain_loop(confidence, seed, n_bins):
    # Values within rounding of a bin edge may fall either side: move them to a bin's middle.
    edges = np.arange(n_bins + 1) / n_bins
    near_edge = np.abs(confidence[:, None] - edges).min(axis=1) < 1e-9
    confidence = np.where(near_edge, 0.5 / n_bins, confidence)
    correct = np.random.default_rng(seed).random(len(confidence)) < confidence
    bins = reliability(confidence, correct, n_bins)
    ece, mce = reference_bins(confidence, correct, n_bins)
    assert bins.ece == pytest.approx(ece, rel=1e-12, abs=1e-15)
    assert bins.mce == pytest.approx(mce, rel=1e-12, abs=1e-15)
    assert bins.count.sum() == len(confidence)
    assert 0.0 <= bins.ece <= bins.mce + 1e-15 <= 1.0 + 1e-15


def test_perfectly_calibrated_bins_have_zero_ece():
    # Accuracy equals confidence in each bin: 4 samples at 0.75 (3 right), 2 at 0.5 (1 right).
    confidence = np.array([0.75] * 4 + [0.5] * 2)
    correct = np.array([True, True, True, False, True, False])
    bins = reliability(confidence, correct, n_bins=4)
    assert bins.ece == pytest.approx(0.0, abs=1e-15)
    assert bins.mce == pytest.approx(0.0, abs=1e-15)


def test_reliability_rejects_zero_bins():
    with pytest.raises(ValueError, match="n_bins must be at least 1, got 0"):
        reliability(np.array([0.5]), np.array([True]), 0)


# --------------------------------------------------------------------------- temperature


def nll_at(logits, target, temperature):
    return torch_losses(np.asarray(logits, dtype=np.float64) / temperature, target).mean()


def nll_grid(logits, target, temperatures):
    """Mean cross-entropy at each temperature (G,), PyTorch float64, all temperatures at once."""
    z = torch.from_numpy(np.asarray(logits, dtype=np.float64))  # (N, C)
    t = torch.from_numpy(np.asarray(temperatures, dtype=np.float64))[:, None, None]  # (G, 1, 1)
    log_p = torch.log_softmax(z / t, dim=-1)  # (G, N, C)
    rows = torch.arange(len(target))
    return -log_p[:, rows, torch.from_numpy(np.asarray(target))].mean(dim=1).numpy()


@pytest.mark.parametrize(("signal", "scale"), [(3.0, 2.0), (5.0, 1.5), (1.0, 3.0)])
def test_temperature_matches_brute_force_grid(signal, scale):
    logits, target = synthetic(1500, 10, seed=3, signal=signal, scale=scale)
    t = fit_temperature(logits, target)
    # Coarse log-spaced grid over [0.05, 20], then a fine one (ratio 1.0001) around its best.
    coarse = np.geomspace(0.05, 20.0, 301)  # ratio 1.02
    best = coarse[nll_grid(logits, target, coarse).argmin()]
    fine = np.geomspace(best / 1.02, best * 1.02, 401)
    fine_losses = nll_grid(logits, target, fine)
    assert t == pytest.approx(fine[fine_losses.argmin()], rel=2e-4)
    assert nll_at(logits, target, t) <= fine_losses.min() + 1e-12
    # SciPy's bounded scalar minimiser on T agrees to its own tolerance.
    scipy_t = minimize_scalar(
        lambda x: nll_at(logits, target, x),
        bounds=(0.05, 20.0),
        method="bounded",
        options={"xatol": 1e-8},
    ).x
    assert t == pytest.approx(scipy_t, rel=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    logits=arrays(
        np.float64, st.tuples(st.integers(4, 40), st.integers(2, 8)), elements=st.floats(-20, 20)
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_fitted_temperature_is_a_minimum(logits, seed):
    target = np.random.default_rng(seed).integers(0, logits.shape[1], size=logits.shape[0])
    t = fit_temperature(logits, target)
    low, high = diagnostics.TEMPERATURE_RANGE
    assert low <= t <= high
    best = nll_at(logits, target, t)
    # No nearby temperature inside the range does better (up to rounding).
    for neighbour in (t * 1.001, t / 1.001, 1.0):
        if low <= neighbour <= high:
            assert best <= nll_at(logits, target, neighbour) + 1e-12


def test_temperature_scaling_lowers_validation_loss_and_keeps_predictions():
    # An over-confident model: true-class signal and noise both scaled up by 4.
    logits, target = synthetic(3000, 10, seed=4, signal=12.0, scale=8.0)
    val_logits, val_target = synthetic(2000, 10, seed=5, signal=12.0, scale=8.0)
    result = evaluate_logits(
        logits, target, validation_logits=val_logits, validation_target=val_target
    )
    fit = result.temperature
    assert fit is not None
    assert fit.temperature > 1.5  # over-confident: softened
    assert fit.fit_loss_after < fit.fit_loss_before
    assert fit.fit_loss_before == pytest.approx(nll_at(val_logits, val_target, 1.0), rel=1e-12)
    assert fit.fit_loss_after == pytest.approx(
        nll_at(val_logits, val_target, fit.temperature), rel=1e-12
    )
    assert fit.loss_before == result.loss
    assert fit.loss_after == pytest.approx(nll_at(logits, target, fit.temperature), rel=1e-12)
    assert fit.loss_after < fit.loss_before  # same distribution: helps on the test split too
    assert fit.ece_after < fit.ece_before
    scaled = evaluate_logits(logits / np.float32(fit.temperature), target)
    assert fit.ece_after == pytest.approx(scaled.reliability.ece, rel=1e-5)
    assert scaled.accuracy == result.accuracy
    assert fit.fit_size == 2000
    assert not fit.at_bound


def test_temperature_clamps_at_the_range_when_every_sample_is_right():
    # Separable: the loss keeps falling as T -> 0, so the fit stops at the range's end.
    logits = np.array([[3.0, 0.0], [0.0, 3.0]])
    t = fit_temperature(logits, np.array([0, 1]))
    assert t == diagnostics.TEMPERATURE_RANGE[0]
    result = evaluate_logits(
        logits, np.array([0, 1]), validation_logits=logits, validation_target=np.array([0, 1])
    )
    assert result.temperature.at_bound


def test_temperature_rejects_a_minus_inf_true_logit():
    with pytest.raises(ValueError, match="true class has logit -inf"):
        fit_temperature(np.array([[0.0, -np.inf]]), np.array([1]))


# --------------------------------------------------------------------------- where the loss lives


def test_hardest_examples_and_confident_mistakes():
    logits, target = synthetic(1000, 10, seed=6, signal=2.0)
    result = evaluate_logits(logits, target, top_k=5)
    losses = torch_losses(logits, target)
    order = np.argsort(-losses, kind="stable")[:5]
    np.testing.assert_array_equal(result.hardest.index, order)
    np.testing.assert_allclose(result.hardest.loss, losses[order], rtol=1e-12)
    np.testing.assert_allclose(result.hardest.p_true, np.exp(-losses[order]), rtol=1e-12)
    p = probabilities(logits)
    predicted = p.argmax(axis=1)
    wrong = np.flatnonzero(predicted != target)
    expected = wrong[np.argsort(-p[wrong].max(axis=1), kind="stable")][:5]
    np.testing.assert_array_equal(result.confident_mistakes.index, expected)
    assert (result.confident_mistakes.predicted != result.confident_mistakes.target).all()
    np.testing.assert_allclose(
        result.confident_mistakes.p_predicted, p[expected].max(axis=1), rtol=1e-12
    )


def test_worst_share_by_hand():
    # 200 samples: two with loss ln 1000 (p(true) = 0.001), 198 with loss ln 2 (p = 1/2).
    # Worst 1% = 2 samples: share = 2 ln 1000 / (2 ln 1000 + 198 ln 2).
    logits = np.zeros((200, 2))
    logits[:2, 1] = math.log(999.0)  # p(class 0) = 1 / (1 + 999) = 0.001
    result = evaluate_logits(logits, np.zeros(200, dtype=np.int64))
    assert result.worst_count == 2
    expected = 2 * math.log(1000) / (2 * math.log(1000) + 198 * math.log(2))
    assert result.worst_share == pytest.approx(expected, rel=1e-12)
    x, share = diagnostics.loss_concentration(result.losses)
    assert share[2] == pytest.approx(expected, rel=1e-12)
    assert x[2] == pytest.approx(0.01)


def test_no_mistakes_gives_empty_list():
    result = evaluate_logits(np.array([[5.0, 0.0], [0.0, 5.0]]), np.array([0, 1]))
    assert len(result.confident_mistakes.index) == 0
    assert result.to_dict()["confident_mistakes"] == []
    assert result.to_dict()["errors"] == 0


# --------------------------------------------------------------------------- extremes and dtypes


def test_extreme_logits_stay_finite_and_exact():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [0.0, 1e4, -1e4]])
    target = np.array([0, 0, 2])
    result = evaluate_logits(logits, target)
    np.testing.assert_allclose(result.losses, torch_losses(logits, target), rtol=1e-12)
    assert result.losses[0] == 0.0
    assert result.losses[1] == pytest.approx(2e4, rel=1e-12)
    assert result.brier == pytest.approx((0.0 + 2.0 + 2.0) / 3, rel=1e-12)


def test_minus_inf_marks_a_masked_class():
    logits = np.array([[0.0, 0.0, -np.inf], [1.0, -np.inf, 0.0]])
    result = evaluate_logits(logits, np.array([0, 2]))
    np.testing.assert_allclose(result.losses, torch_losses(logits, [0, 2]), rtol=1e-12)
    assert math.isinf(evaluate_logits(logits, np.array([2, 0])).loss)


def test_float16_and_float32_inputs_are_computed_in_float64():
    logits, target = synthetic(300, 10, seed=7)
    for dtype in (np.float16, np.float32):
        cast = logits.astype(dtype)
        result = evaluate_logits(cast, target)
        np.testing.assert_allclose(result.losses, torch_losses(cast, target), rtol=1e-12)


def test_huge_class_count():
    rng = np.random.default_rng(8)
    logits = rng.normal(size=(4, 100_000)).astype(np.float32)
    target = np.array([0, 5, 99_999, 12345])
    result = evaluate_logits(logits, target)
    assert result.num_classes == 100_000
    assert result.confusion is None  # 10^10 cells: not built, reported as null
    assert result.to_dict()["confusion"] is None
    np.testing.assert_allclose(result.losses, torch_losses(logits, target), rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    logits=arrays(
        np.float64,
        st.tuples(st.integers(1, 30), st.integers(2, 12)),
        elements=st.floats(-50, 50),
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_properties_on_random_logits(logits, seed):
    target = np.random.default_rng(seed).integers(0, logits.shape[1], size=logits.shape[0])
    result = evaluate_logits(logits, target)
    np.testing.assert_allclose(result.losses, torch_losses(logits, target), rtol=1e-12, atol=1e-13)
    assert result.confusion.sum() == len(target)
    assert 0.0 <= result.brier <= 2.0 + 1e-12
    assert result.loss >= 0.0
    assert 0.0 < result.worst_share <= 1.0 or math.isnan(result.worst_share)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("logits", "target", "message"),
    [
        (
            np.zeros(3),
            np.zeros(3, dtype=int),
            r"shape \(N, C\) with C >= 2 classes, got shape \(3,\)",
        ),
        (np.zeros((3, 1)), np.zeros(3, dtype=int), r"C >= 2 classes, got shape \(3, 1\)"),
        (np.zeros((2, 3), dtype=int), np.zeros(2, dtype=int), "must be floating point"),
        (np.array([[0.0, np.nan]]), np.zeros(1, dtype=int), "row 0 contains NaN or \\+inf"),
        (np.array([[0.0, np.inf]]), np.zeros(1, dtype=int), "row 0 contains NaN or \\+inf"),
        (np.zeros((2, 3)), np.array([0, 3]), r"holds class 3, outside \[0, 3\)"),
        (np.zeros((2, 3)), np.array([0, -1]), r"holds class -1, outside \[0, 3\)"),
        (np.zeros((2, 3)), np.zeros(3, dtype=int), r"must have shape \(2,\)"),
        (np.zeros((2, 3)), np.array([0.0, 1.0]), "integer class indices"),
        (np.zeros((0, 3)), np.zeros(0, dtype=int), "hold no samples"),
    ],
)
def test_bad_input_is_a_clear_error(logits, target, message):
    with pytest.raises(ValueError, match=message):
        evaluate_logits(logits, target)


def test_validation_must_match_the_model():
    logits, target = synthetic(10, 3, seed=9)
    with pytest.raises(ValueError, match="validation logits have 4 classes, the evaluated ones 3"):
        evaluate_logits(
            logits, target, validation_logits=np.zeros((2, 4)), validation_target=np.zeros(2, int)
        )
    with pytest.raises(ValueError, match="both validation_logits and validation_target"):
        evaluate_logits(logits, target, validation_logits=logits)


def test_summary_is_strict_json():
    logits, target = synthetic(200, 10, seed=10)
    result = evaluate_logits(logits, target, validation_logits=logits, validation_target=target)
    text = dumps(result.to_dict())  # allow_nan=False inside: strict JSON
    summary = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name}"))
    empty_bins = [i for i, n in enumerate(summary["calibration"]["bins"]["count"]) if n == 0]
    assert all(summary["calibration"]["bins"]["accuracy"][i] == "NaN" for i in empty_bins)
    assert summary["accuracy"] == result.accuracy
    assert summary["loss"] == result.loss
    assert summary["calibration"]["ece"] == result.reliability.ece
    assert sum(summary["calibration"]["bins"]["count"]) == 200
    assert len(summary["hardest"]) == diagnostics.DEFAULT_TOP_K


# --------------------------------------------------------------------------- a real checkpoint


@pytest.fixture(scope="module")
def run(small_run):
    return small_run


@pytest.fixture(scope="module")
def test_result(run, data_dir):
    return run_evaluation.evaluate_checkpoint(run, data_dir=data_dir, download=False)


def test_checkpoint_numbers_match_training_and_scikit_learn(run, data_dir, test_result):
    from logloss.data import load_dataset
    from logloss.training.checkpoint import load_checkpoint
    from logloss.training.run_folder import read_metadata

    images, labels = load_dataset("mnist", "test", data_dir=data_dir, download=False)
    e = test_result.evaluation
    assert e.size == 10_000
    np.testing.assert_array_equal(test_result.images, images)
    # The trainer measured the best weights on the test split itself (float32 sums in PyTorch).
    recorded = read_metadata(run)["test"]
    assert e.accuracy == recorded["best_accuracy"]
    assert e.loss == pytest.approx(recorded["best_loss"], rel=1e-5)
    assert e.accuracy > 0.8  # far above chance (0.1) after one epoch
    # An independent forward pass in PyTorch, scored by scikit-learn.
    checkpoint = load_checkpoint(run)
    with torch.no_grad():
        logits = checkpoint.model(checkpoint.inputs(images)).double()
    p = torch.softmax(logits, dim=1).numpy()
    assert e.loss == pytest.approx(metrics.log_loss(labels, p, labels=list(range(10))), rel=1e-6)
    brier = metrics.brier_score_loss(labels, p, labels=list(range(10)), scale_by_half=False)
    assert e.brier == pytest.approx(brier, rel=1e-6)
    np.testing.assert_array_equal(
        e.confusion, metrics.confusion_matrix(labels, p.argmax(axis=1), labels=list(range(10)))
    )


def test_temperature_uses_the_runs_own_validation_split(run, data_dir, test_result, monkeypatch):
    from logloss.training import splits as run_splits
    from logloss.training.run_folder import read_metadata

    fit = test_result.evaluation.temperature
    assert fit.fit_size == SMALL_RUN_VALIDATION
    validation = run_evaluation.evaluate_checkpoint(
        run, split="validation", data_dir=data_dir, download=False, calibrate=False
    )
    best = read_metadata(run)["best"]
    # Same samples as training used: the recorded validation accuracy is reproduced exactly.
    assert validation.evaluation.accuracy == best["val_accuracy"]
    assert validation.evaluation.loss == pytest.approx(best["val_loss"], rel=1e-5)
    assert fit.fit_loss_before == pytest.approx(validation.evaluation.loss, rel=1e-12)
    assert fit.fit_loss_after <= fit.fit_loss_before
    # The train part, calibrated on validation: the training file is read once and split once.
    reads, splits = [], []
    load_dataset, split = run_splits.load_dataset, run_splits.split_train_validation

    def counting_load(name, which, **kwargs):
        reads.append((name, which))
        return load_dataset(name, which, **kwargs)

    def counting_split(*args, **kwargs):
        splits.append(kwargs)
        return split(*args, **kwargs)

    monkeypatch.setattr(run_splits, "load_dataset", counting_load)
    monkeypatch.setattr(run_splits, "split_train_validation", counting_split)
    train_part = run_evaluation.evaluate_checkpoint(
        run, split="train", data_dir=data_dir, download=False
    )
    assert reads == [("mnist", "train")]
    config = read_metadata(run)["config"]  # the run's own carving of the training set
    assert splits == [{"validation_size": config["validation_size"], "seed": config["seed"]}]
    assert train_part.evaluation.size == 60_000 - SMALL_RUN_VALIDATION
    # Fitted on the same validation samples as for the test split: the same temperature.
    assert train_part.evaluation.temperature.fit_size == SMALL_RUN_VALIDATION
    assert train_part.evaluation.temperature.temperature == fit.temperature


def test_one_forward_pass_per_split(run, data_dir, monkeypatch):
    from logloss.training.checkpoint import Checkpoint

    calls = []
    original = Checkpoint.logits

    def counting(self, images, **kwargs):
        calls.append(len(images))
        return original(self, images, **kwargs)

    monkeypatch.setattr(Checkpoint, "logits", counting)
    run_evaluation.evaluate_checkpoint(run, data_dir=data_dir, download=False, calibrate=False)
    assert calls == [10_000]
    calls.clear()
    run_evaluation.evaluate_checkpoint(run, data_dir=data_dir, download=False)
    assert calls == [10_000, SMALL_RUN_VALIDATION]  # the test split, then validation for T
    calls.clear()
    run_evaluation.evaluate_checkpoint(run, split="validation", data_dir=data_dir, download=False)
    assert calls == [SMALL_RUN_VALIDATION]  # fitted and evaluated on the same logits


def test_untrained_weights_score_about_ln_10(run, data_dir):
    result = run_evaluation.evaluate_checkpoint(
        run, which="initial", data_dir=data_dir, download=False, calibrate=False
    )
    assert result.which == "initial"
    assert abs(result.evaluation.loss - math.log(10)) < 0.25
    assert result.evaluation.accuracy < 0.3


def test_unknown_split_is_a_clear_error(run, data_dir):
    with pytest.raises(ValueError, match="split must be one of train, validation, test, got 'dev'"):
        run_evaluation.evaluate_checkpoint(run, split="dev", data_dir=data_dir)
