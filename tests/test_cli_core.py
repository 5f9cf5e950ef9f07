"""Tests of the core commands: logloss mle / sigmoid / softmax / loss."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import _article
from _article import REPORTED_UNTRAINED_LOSS, math_softmax, neg_log_softmax
from conftest import require
from logloss.cli import main

# The article's logits as command-line arguments.
UNTRAINED = [str(v) for v in _article.UNTRAINED]
TRAINED = [str(v) for v in _article.TRAINED]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_json(capsys, *argv: str) -> dict:
    status, out, err = run(capsys, *argv, "--json")
    assert (status, err) == (0, "")
    return json.loads(out)


# --------------------------------------------------------------------------------------------
# mle


def test_mle_text(capsys):
    status, out, _ = run(capsys, "mle", "wbwbb")
    assert status == 0
    assert "counts: b: 3, w: 2" in out
    assert "L(p) = p^3 (1-p)^2, with p = P(b)" in out
    assert "3(1-p) = 2p  ->  p = 3/5" in out
    assert "P(b) = 3/5 = 0.6" in out
    assert f"= {0.6**3 * 0.4**2:.6g}" in out  # 0.03456
    assert f"{3 * math.log(0.6) + 2 * math.log(0.4):.6f}" in out
    assert "numerical check" in out


def test_mle_json(capsys):
    payload = run_json(capsys, "mle", "wbwbb")
    assert payload["estimate"] == {"w": 0.4, "b": 0.6}
    assert payload["likelihood"] == pytest.approx(0.6**3 * 0.4**2, rel=1e-12)
    assert payload["formula"] == "p^3 (1-p)^2"
    assert payload["max_difference"] < 1e-6
    assert payload["numerical"]["b"] == pytest.approx(0.6, abs=1e-6)


def test_mle_words_and_binary(capsys):
    payload = run_json(capsys, "mle", "cat", "dog", "cat", "--no-numerical")
    assert payload["counts"] == {"cat": 2, "dog": 1}
    assert payload["numerical"] is None
    # A word of 0/1 characters is 0/1 outcomes: p is P(1) even when 1 is the rarer outcome.
    payload = run_json(capsys, "mle", "10010", "--no-numerical")
    assert payload["parameter"] == "1"
    assert payload["formula"] == "p^2 (1-p)^3"


# --------------------------------------------------------------------------------------------
# sigmoid and softmax


def test_sigmoid_with_negative_numbers(capsys):
    payload = run_json(capsys, "sigmoid", "0", "2", "-2", "-1e4", "-inf", "-.5")
    t = [0.0, 2.0, -2.0, -1e4, -math.inf, -0.5]
    assert payload["t"][:4] == t[:4]
    assert payload["t"][4] == "-Infinity"
    expected = [1 / (1 + math.exp(-v)) if v > -700 else 0.0 for v in t]
    assert payload["sigmoid"] == pytest.approx(expected, rel=1e-15, abs=1e-300)
    assert payload["checks"]["monotone"] is True
    assert payload["checks"]["in_unit_interval"] is True
    assert payload["checks"]["symmetry_max_difference"] < 1e-15


def test_sigmoid_text(capsys):
    status, out, _ = run(capsys, "sigmoid", "0", "2", "-2")
    assert status == 0
    assert f"{1 / (1 + math.exp(-2)):.6f}" in out  # 0.880797
    assert "symmetric about (0, 0.5)" in out
    assert "monotone" in out


def test_softmax_of_the_article_logits(capsys):
    payload = run_json(capsys, "softmax", *UNTRAINED)
    p = math_softmax(_article.UNTRAINED)
    assert payload["probabilities"] == pytest.approx(p, rel=1e-12)
    assert payload["argmax"] == 8
    assert payload["sum"] == pytest.approx(1.0, abs=1e-15)
    assert payload["shift_invariance_max_difference"] < 1e-15
    assert payload["sigmoid_of_difference"] is None
    _status, out, _ = run(capsys, "softmax", *UNTRAINED)
    assert "class 8" in out
    assert f"{p[8]:.6f}" in out


def test_softmax_of_two_is_sigmoid_of_difference(capsys):
    payload = run_json(capsys, "softmax", "0.5", "-1.5")
    expected = 1 / (1 + math.exp(-(-1.5 - 0.5)))
    assert payload["sigmoid_of_difference"] == pytest.approx(expected, rel=1e-15)
    assert payload["probabilities"][1] == pytest.approx(expected, rel=1e-15)


# --------------------------------------------------------------------------------------------
# loss: the article's numbers


def test_loss_untrained_target_7(capsys):
    payload = run_json(capsys, "loss", "--logits", *UNTRAINED, "--target", "7")
    z = [float(v) for v in UNTRAINED]
    assert payload["loss"] == pytest.approx(neg_log_softmax(z, 7), rel=1e-12)
    assert round(payload["loss"], 3) == 2.294
    assert round(payload["p_target"], 4) == 0.1009
    assert payload["torch_loss"] == pytest.approx(payload["loss"], rel=1e-12)
    assert payload["uniform_loss"] == pytest.approx(math.log(10), rel=1e-15)
    assert payload["predicted"] == 8
    status, out, _ = run(capsys, "loss", "--logits", *UNTRAINED, "--target", "7")
    assert status == 0
    assert f"= {neg_log_softmax(z, 7):.4f}" in out
    assert "PyTorch CrossEntropyLoss" in out
    assert "█" in out  # the bars


def test_loss_value_2_2604_belongs_to_class_8(capsys):
    payload = run_json(
        capsys, "loss", "--logits", *UNTRAINED, "--value", str(REPORTED_UNTRAINED_LOSS)
    )
    assert payload["explained_by"] == 8
    z = [float(v) for v in UNTRAINED]
    assert payload["value_gap"] == pytest.approx(
        neg_log_softmax(z, 8) - REPORTED_UNTRAINED_LOSS, rel=1e-10
    )
    _status, out, _ = run(
        capsys, "loss", "--logits", *UNTRAINED, "--value", str(REPORTED_UNTRAINED_LOSS), "--ascii"
    )
    assert "class 8 explains it" in out
    assert "#" in out
    assert "█" not in out


def test_loss_trained(capsys):
    payload = run_json(capsys, "loss", "--logits", *TRAINED, "--target", "7")
    z = [float(v) for v in TRAINED]
    assert round(payload["p_target"], 4) == 0.9948
    assert round(payload["loss"], 4) == 0.0052
    assert payload["loss"] == pytest.approx(neg_log_softmax(z, 7), rel=1e-10)
    assert payload["correct"] is True


def test_loss_with_extreme_values(capsys):
    payload = run_json(capsys, "loss", "--logits", "-1e4", "1e4", "-inf", "--target", "0")
    assert payload["loss"] == 2e4
    assert payload["probabilities"][2] == 0.0
    payload = run_json(capsys, "loss", "--logits", "0", "-inf", "--target", "1")
    assert payload["loss"] == "Infinity"


# --------------------------------------------------------------------------------------------
# errors: one line, exit status 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["loss", "--logits", "0", "1", "--target", "5"], "target 5 is outside [0, 2)"),
        (["loss", "--logits", "0", "1", "--target", "-1"], "target -1 is outside [0, 2)"),
        (["loss", "--logits", "0", "1"], "give --target K"),
        (["loss", "--logits", "0", "nan", "--target", "0"], "logits[1] is nan"),
        (["loss", "--logits", "inf", "0", "--target", "0"], "logits[0] is inf"),
        (["loss", "--logits", "1", "--target", "0"], "at least 2 classes"),
        (["loss", "--logits", "0", "1", "--value", "-3"], "finite loss >= 0"),
        (["loss", "--logits", "0", "1", "--target", "0", "--width", "0"], "--width must be"),
        (["softmax", "1", "inf"], "T[1] is inf"),
        (["softmax", "-inf", "-inf"], "every T is -inf"),
        (["sigmoid", "nan"], "T[0] is nan"),
    ],
)
def test_invalid_input_is_one_line_and_status_2(capsys, argv, message):
    status, out, err = run(capsys, *argv)
    assert status == 2
    assert out == ""
    assert err.startswith("logloss: error: ")
    assert message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("command", "allowed", "refused"),
    [
        (["loss", "--target", "0", "--logits", "1"], ["-inf"], ["nan", "inf"]),
        (["softmax", "1"], ["-inf"], ["nan", "inf"]),
        (["sigmoid", "1"], ["inf", "-inf"], ["nan"]),
    ],
)
def test_the_message_states_the_rule_the_check_applies(capsys, command, allowed, refused):
    # Issue 14: "nan" was refused with "(inf and -inf are allowed)", then "inf" was refused too.
    rules = set()
    for value in refused:
        status, _, err = run(capsys, *command, value, "3")
        assert status == 2
        assert err.count("\n") == 1
        assert f"[1] is {value};" in err  # the position, named as an index: logits[1], T[1]
        rules.add(err.split("; ", 1)[1])
    assert len(rules) == 1  # one rule, whichever value broke it
    for value in allowed:
        assert run(capsys, *command, value, "3")[0] == 0, value
    (rule,) = rules
    if "inf" in allowed:
        assert "inf and -inf are allowed" in rule
    else:
        assert "must be finite or -inf" in rule


def test_unparseable_number_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sigmoid", "0", "x"])
    assert exit_info.value.code == 2
    assert "invalid float value: 'x'" in capsys.readouterr().err


def test_installed_command_exit_status(tmp_path):
    executable = Path(sys.executable).with_name("logloss")
    require(executable.is_file(), f"the logloss console script is not installed at {executable}")
    bad = subprocess.run(
        [str(executable), "loss", "--logits", "0.0297", "-0.0440", "--target", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr == "logloss: error: target 2 is outside [0, 2); the logits have 2 classes\n"
    assert bad.stdout == ""
    good = subprocess.run(
        [str(executable), "sigmoid", "0", "-2", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert good.returncode == 0
    assert json.loads(good.stdout)["sigmoid"][1] == pytest.approx(1 / (1 + math.exp(2)), rel=1e-15)
