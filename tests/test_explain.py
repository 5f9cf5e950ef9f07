"""Tests of logloss.insight.explain: the article's numbers, PyTorch/SciPy agreement, errors,
rendering."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from _article import REPORTED_UNTRAINED_LOSS, TRAINED, UNTRAINED, math_softmax
from logloss._json import json_ready
from logloss.insight.explain import explain, render_bars

# --------------------------------------------------------------------------------------------
# the article


def test_article_untrained_prediction():
    e = explain(UNTRAINED, target=7)
    p = math_softmax(UNTRAINED)
    assert e.probabilities == pytest.approx(p, rel=1e-12)
    # The article's softmax row, to its 4 printed decimals (class 6: the article has 0.0996,
    # computed from unrounded logits; the printed ones give 0.09965 -> 0.0997).
    article = [0.1031, 0.0958, 0.0958, 0.1021, 0.1031, 0.1005, 0.0996, 0.1009, 0.1043, 0.0948]
    assert np.abs(np.array(e.probabilities) - article).max() < 1e-4
    assert e.predicted == 8  # "in our case, 8"
    assert round(e.p_target, 4) == 0.1009
    assert e.loss == pytest.approx(-math.log(p[7]), rel=1e-12)
    assert round(e.loss, 3) == 2.294
    # A documented check of the article's arithmetic (it exercises no logloss code): the article's
    # 2.2936 is -ln of the probability rounded to 0.1009, not of the logits (2.294 above).
    assert round(-math.log(0.1009), 4) == 2.2936
    assert e.torch_loss == pytest.approx(e.loss, rel=1e-12)
    assert e.uniform_loss == pytest.approx(math.log(10), rel=1e-15)
    assert e.correct is False


def test_article_reported_untrained_loss_belongs_to_class_8():
    e = explain(UNTRAINED, value=REPORTED_UNTRAINED_LOSS)
    p = math_softmax(UNTRAINED)
    assert e.explained_by == 8
    assert e.value_gap == pytest.approx(-math.log(p[8]) - REPORTED_UNTRAINED_LOSS, rel=1e-10)
    assert abs(e.value_gap) < 5e-4
    # Class 7's loss is 30x farther away than class 8's.
    assert abs(-math.log(p[7]) - REPORTED_UNTRAINED_LOSS) > 30 * abs(e.value_gap)
    assert abs(e.next_gap) > abs(e.value_gap)
    assert e.loss is None
    assert e.target is None


def test_article_trained_prediction():
    e = explain(TRAINED, target=7)
    p = math_softmax(TRAINED)
    assert round(e.p_target, 4) == 0.9948
    assert e.p_target == pytest.approx(p[7], rel=1e-12)
    assert round(e.loss, 4) == 0.0052  # the article's 0.0053 came from unrounded logits
    assert e.loss == pytest.approx(-math.log(p[7]), rel=1e-10)
    assert e.predicted == 7
    assert e.correct is True
    assert e.runner_up == 3
    assert e.margin == pytest.approx(p[7] - p[3], rel=1e-12)
    assert e.logit_margin == pytest.approx(TRAINED[7] - TRAINED[3], rel=1e-12)


def test_render_tells_the_walkthrough():
    text = explain(UNTRAINED, target=7, value=REPORTED_UNTRAINED_LOSS).render()
    p = math_softmax(UNTRAINED)
    assert f"predicted class: 8, p = {p[8]:.4f}" in text
    assert f"p(7) = {p[7]:.4f}" in text
    assert f"loss = -ln p(7) = logsumexp(z) - z[7] = {-math.log(p[7]):.4f}" in text
    assert f"ln 10 = {math.log(10):.4f}" in text
    assert "class 8 explains it" in text
    assert "<- target" in text
    assert "<- predicted" in text
    # 2 header lines, 10 bars, 5 about the prediction and loss, uniform, entropy, 3 about value.
    assert len(text.splitlines()) == 2 + 10 + 5 + 2 + 3


def test_render_infinite_loss_differs_from_torch_by_zero():
    # Both losses are inf for a -inf target logit: inf - inf must not print "difference nan".
    text = explain([0.0, -math.inf, 1.0], target=1).render()
    assert "loss = -ln p(1) = logsumexp(z) - z[1] = inf" in text
    assert "PyTorch CrossEntropyLoss: inf (difference 0.0e+00)" in text
    assert "nan" not in text


def test_render_with_labels_and_ascii():
    e = explain([0.0, 2.0], target=1, labels=["cat", "dog"])
    text = e.render(width=10, ascii=True)
    assert "predicted class: 1 (dog)" in text
    p_dog = 1 / (1 + math.exp(-2.0))
    assert f"dog  {p_dog:.4f}  {'#' * round(p_dog * 10)}" in text


# --------------------------------------------------------------------------------------------
# agreement with PyTorch and SciPy


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-50, 50), min_size=2, max_size=30),
    st.data(),
)
def test_matches_torch_and_scipy(logits, data):
    target = data.draw(st.integers(0, len(logits) - 1))
    e = explain(logits, target=target)
    z = torch.tensor(logits, dtype=torch.float64)
    expected = torch.nn.functional.cross_entropy(z[None], torch.tensor([target])).item()
    assert e.loss == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert e.torch_loss == pytest.approx(expected, rel=1e-12, abs=1e-12)
    p = torch.softmax(z, 0).numpy()
    assert np.allclose(e.probabilities, p, rtol=1e-12, atol=1e-300)
    assert e.entropy == pytest.approx(stats.entropy(p), rel=1e-10, abs=1e-12)
    assert 0.0 <= e.entropy <= e.uniform_loss + 1e-12
    assert e.predicted == int(torch.argmax(z))
    ranked = sorted(p, reverse=True)
    assert e.margin == pytest.approx(ranked[0] - ranked[1], rel=1e-12, abs=1e-15)
    assert e.losses == pytest.approx(-torch.log_softmax(z, 0).numpy(), rel=1e-12, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=2, max_size=12, unique=True), st.data())
def test_value_of_a_class_loss_is_explained_by_that_class(logits, data):
    e = explain(logits)
    k = data.draw(st.integers(0, len(logits) - 1))
    losses = np.array(e.losses)
    if np.sum(np.isclose(losses, losses[k], rtol=0, atol=1e-9)) > 1:
        return  # two classes share this loss: either answer is right
    found = explain(logits, value=float(losses[k]))
    assert found.explained_by == k
    assert found.value_gap == 0.0


def test_extreme_and_infinite_logits():
    e = explain([1e4, -1e4], target=1)
    assert e.loss == 2e4  # logsumexp - z[1] = 1e4 - (-1e4), exact in float64
    assert e.p_target == 0.0
    assert e.p_predicted == 1.0
    assert e.torch_loss == 2e4
    blocked = explain([0.0, -math.inf, 1.0], target=1)
    assert blocked.loss == math.inf
    assert blocked.torch_loss == math.inf
    assert blocked.p_target == 0.0
    assert blocked.probabilities[2] == pytest.approx(1 / (1 + math.exp(-1.0)), rel=1e-15)
    # 0 ln 0 = 0: a -inf logit adds nothing to the entropy.
    assert blocked.entropy == pytest.approx(explain([0.0, 1.0]).entropy, rel=1e-15)


def test_ties_predict_the_first_class():
    e = explain([1.0, 1.0, 0.0])
    assert (e.predicted, e.runner_up, e.margin, e.logit_margin) == (0, 1, 0.0, 0.0)


def test_many_classes():
    rng = np.random.default_rng(0)
    z = rng.normal(size=100_000) * 5
    e = explain(z, target=123)
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(z)[None], torch.tensor([123]))
    assert e.loss == pytest.approx(expected.item(), rel=1e-12)
    assert e.uniform_loss == pytest.approx(math.log(100_000), rel=1e-15)


@pytest.mark.parametrize(
    "logits",
    [
        np.array(UNTRAINED, dtype=np.float16),
        np.array(UNTRAINED, dtype=np.float32),
        torch.tensor([UNTRAINED], dtype=torch.float32, requires_grad=True),  # (1, C) as printed
        [int(v * 1e4) for v in UNTRAINED],
    ],
    ids=["float16", "float32", "torch-1xC", "int"],
)
def test_input_kinds(logits, request):
    e = explain(logits, target=7)
    # Computed in float64 from the values given: compare with the same values via math.
    values = (
        logits.detach().double().flatten().tolist()
        if isinstance(logits, torch.Tensor)
        else np.asarray(logits, dtype=np.float64).tolist()
    )
    assert e.loss == pytest.approx(-math.log(math_softmax(values)[7]), rel=1e-12)
    assert e.predicted == 8


def test_to_dict_is_strict_json():
    e = explain([0.0, -math.inf, 1.0], target=1, value=0.3, labels=["a", "b", "c"])
    payload = json.loads(json.dumps(e.to_dict(), allow_nan=False))
    assert payload["logits"] == [0.0, "-Infinity", 1.0]
    assert payload["loss"] == "Infinity"
    assert payload["explained_by"] == 2
    assert payload["num_classes"] == 3
    assert payload["correct"] is False
    assert payload["labels"] == ["a", "b", "c"]
    assert float(payload["losses"][1]) == math.inf


def test_json_ready():
    assert json_ready({"a": [math.nan, (1.0, -math.inf)]}) == {"a": ["NaN", [1.0, "-Infinity"]]}


# --------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("logits", "kwargs", "message"),
    [
        ([0.0, math.nan], {}, r"logits\[1\] is nan"),
        ([math.inf, 0.0], {}, r"logits\[0\] is inf; logits must be finite or -inf"),
        ([-math.inf, -math.inf], {}, r"all logits are -inf"),
        ([1.0], {}, r"at least 2 classes, got 1"),
        (3.0, {}, r"shape \(C,\) or \(1, C\), got shape \(\)"),
        ([[0.0, 1.0], [1.0, 0.0]], {}, r"got shape \(2, 2\); for a batch"),
        (["a", "b"], {}, r"must be real numbers"),
        ([[0.0, 1.0], [2.0]], {}, r"rows of different lengths; pass a flat list of C numbers"),
        (np.array([1 + 2j, 0j]), {}, r"logits must be real numbers, got dtype complex128"),
        (
            torch.tensor([1 + 2j, 0j]),
            {},
            r"logits must be real numbers, got a complex tensor \(torch.complex64\); pass .real",
        ),
        ([0.0, 1.0], {"target": 2}, r"target 2 is outside \[0, 2\)"),
        ([0.0, 1.0], {"target": -1}, r"target -1 is outside"),
        ([0.0, 1.0], {"target": 1.5}, r"integer class index, got 1.5"),
        ([0.0, 1.0], {"target": True}, r"class index, got True"),
        ([0.0, 1.0], {"value": -0.1}, r"finite loss >= 0"),
        ([0.0, 1.0], {"value": math.nan}, r"finite loss >= 0"),
        ([0.0, 1.0], {"value": "2.3"}, r"value must be a loss"),
        ([0.0, 1.0], {"labels": ["one"]}, r"1 labels for 2 classes"),
    ],
)
def test_errors(logits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        explain(logits, **kwargs)


def test_target_may_be_numpy_or_torch_integer():
    assert explain([0.0, 1.0], target=np.int64(1)).target == 1
    assert explain([0.0, 1.0], target=torch.tensor(1)).target == 1


# --------------------------------------------------------------------------------------------
# bars


def test_bars_lengths():
    text = render_bars([0.0, 0.5, 1.0, 0.3], width=10)
    lines = text.splitlines()
    assert lines[0] == "0  0.0000"
    assert lines[1] == "1  0.5000  " + "█" * 5
    assert lines[2] == "2  1.0000  " + "█" * 10
    assert lines[3] == "3  0.3000  ███"  # 0.3 * 10 * 8 = 24 eighths = 3 full cells
    # 0.31 * 10 * 8 = 24.8 eighths -> 25 = 3 full cells + one eighth.
    assert render_bars([0.31], width=10) == "0  0.3100  ███▏"
    assert render_bars([0.0001], width=10) == "0  0.0001"  # under half an eighth: no bar


def test_bars_marks_labels_and_ascii():
    text = render_bars([0.2, 0.8], ["cat", "sea lion"], width=5, marks={1: "target"}, ascii=True)
    assert text.splitlines() == [
        "     cat  0.2000  #",
        "sea lion  0.8000  ####    <- target",
    ]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (([0.5, 1.5],), {}, r"probabilities\[1\] is 1.5, outside \[0, 1\]"),
        (([-0.1],), {}, r"probabilities\[0\] is -0.1"),
        (([0.5, 0.5], ["a"]), {}, r"1 labels for 2 probabilities"),
        (([0.5, 0.5],), {"width": 0}, r"width must be a positive integer, got 0"),
    ],
)
def test_bars_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_bars(*args, **kwargs)


def test_a_confident_loss_is_not_printed_as_zero():
    # z = (0, 12): p(1) = 1 / (1 + e^-12), loss = ln(1 + e^-12) ~ 6.1e-06, by hand.
    expected = math.log1p(math.exp(-12.0))
    text = explain([0.0, 12.0], target=1).render()
    assert f"= {expected:.2e}" in text
    assert "= 0.0000\n" not in text
