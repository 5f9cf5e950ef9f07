"""One JSON policy (docs/json.md): non-finite numbers are the strings "NaN", "Infinity",
"-Infinity" in every --json output and every file logloss writes -- never bare NaN, never null."""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stdout

import numpy as np
import pytest

from logloss._json import dumps, json_ready, restore_non_finite
from logloss.cli import main


def strict(text: str) -> object:
    """Parse JSON, failing on the bare NaN/Infinity that Python's json would accept."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))


def cli_json(*argv: str) -> object:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main([*argv, "--json"]) == 0
    return strict(out.getvalue())


def test_non_finite_numbers_are_strings_and_read_back():
    value = {"a": math.inf, "b": [-math.inf, math.nan, 1.5], "c": np.float32("nan"), "n": 3}
    text = dumps(value)
    parsed = strict(text)
    assert parsed == {"a": "Infinity", "b": ["-Infinity", "NaN", 1.5], "c": "NaN", "n": 3}
    back = restore_non_finite(parsed)
    assert back["a"] == math.inf
    assert back["b"][0] == -math.inf
    assert math.isnan(back["b"][1])
    assert math.isnan(back["c"])
    assert back["b"][2] == 1.5
    # Other strings stay strings; the early files' spelling is read too.
    assert restore_non_finite(["finished", "inf", "-inf"]) == ["finished", math.inf, -math.inf]


def test_numpy_values_become_plain_json():
    ready = json_ready({"x": np.arange(3, dtype=np.int64), "y": np.float64(0.25), "z": np.bool_(1)})
    assert ready == {"x": [0, 1, 2], "y": 0.25, "z": True}
    assert type(ready["x"][0]) is int
    assert type(ready["z"]) is bool


def test_loss_json_spells_an_infinite_loss():
    # p(target) = 0 exactly: the loss -ln 0 is +inf, written as the string "Infinity".
    payload = cli_json("loss", "--logits", "0", "-inf", "--target", "1")
    assert payload["loss"] == "Infinity"
    assert payload["logits"] == [0.0, "-Infinity"]
    assert payload["probabilities"] == [1.0, 0.0]


def test_checkpoint_json_and_metrics_follow_the_policy(tmp_path):
    from logloss.training import run_folder

    run_folder.write_metadata(tmp_path, {"initial_loss": math.nan, "best": {"loss": math.inf}})
    raw = strict((tmp_path / run_folder.METADATA_FILE).read_text())
    assert raw == {"initial_loss": "NaN", "best": {"loss": "Infinity"}}
    run_folder.write_metrics(tmp_path, [{"epoch": 1, "val_loss": -math.inf}])
    line = (tmp_path / run_folder.METRICS_FILE).read_text().splitlines()[0]
    assert strict(line) == {"epoch": 1, "val_loss": "-Infinity"}
    assert run_folder.read_metrics(tmp_path, {})[0]["val_loss"] == -math.inf
