"""``logloss evaluate|report|explain --predictions``: the commands, bad input (exit 2, one line
naming the file, row and column, the rule and the fix, nothing written), and no torch."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from contextlib import redirect_stdout
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics

from logloss.cli import main
from logloss.insight.explain import explain


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 4-class problem: logits .npy + labels, an .npz with ids and names, a calibration .npz,
    images, and a CSV of probabilities."""
    folder = tmp_path_factory.mktemp("predictions")
    rng = np.random.default_rng(0)
    n, c = 600, 4
    y = rng.integers(0, c, n)
    z = rng.normal(scale=1.5, size=(n, c)).astype(np.float32)
    z[np.arange(n), y] += 2.0
    np.save(folder / "z.npy", z)
    np.save(folder / "y.npy", y)
    names = np.array(["ant", "bee", "cow", "dog"])
    ids = np.array([f"s{k:04d}" for k in range(n)])
    np.savez(folder / "p.npz", logits=z, labels=y, ids=ids, class_names=names)
    yc = rng.integers(0, c, 400)
    zc = rng.normal(scale=1.5, size=(400, c)).astype(np.float32)
    zc[np.arange(400), yc] += 2.0
    np.savez(folder / "val.npz", logits=zc, labels=yc)
    np.save(folder / "images.npy", rng.integers(0, 256, (n, 8, 8), dtype=np.uint8))
    return {"folder": folder, "z": z, "y": y, "names": names, "ids": ids}


# --------------------------------------------------------------------------- evaluate


def test_evaluate_json_matches_scikit_learn(capsys, files):
    f = files["folder"]
    status, out, _ = run(
        capsys, "evaluate", "--predictions", f / "z.npy", "--labels", f / "y.npy", "--json"
    )
    assert status == 0
    payload = json.loads(out)
    p = np.exp(files["z"].astype(np.float64))
    p /= p.sum(axis=1, keepdims=True)
    y = files["y"]
    assert payload["schema"] == "logloss.evaluation/1"
    assert payload["source"] == {
        "type": "predictions",
        "predictions": str(f / "z.npy"),
        "labels": str(f / "y.npy"),
        "kind": "logits",
        "kind_reason": payload["source"]["kind_reason"],
        "calibration": None,
    }
    assert payload["loss"] == pytest.approx(metrics.log_loss(y, p), rel=1e-12)
    assert payload["confusion"] == metrics.confusion_matrix(y, p.argmax(1)).tolist()
    assert payload["temperature"] is None
    assert any("temperature scaling skipped" in note for note in payload["notes"])
    assert payload["calibration"]["bins"]["edge_rule"] == "(lo, hi]; the first bin also holds 0"


def test_evaluate_text_names_classes_ids_and_the_bin_rule(capsys, files):
    f = files["folder"]
    status, out, _ = run(
        capsys, "evaluate", "--predictions", f / "p.npz", "--calibration", f / "val.npz", "--top", 3
    )
    assert status == 0
    assert "class-wise ECE" in out
    assert "temperature T" in out
    assert "calibration bins: 15 uniform, (lo, hi]; the first bin also holds 0" in out
    assert "│ cow " in out or "cow" in out.split("per class")[1]
    assert "s0" in out.split("hardest samples")[1]  # the ids of the hardest rows


def test_figures_and_images(capsys, files, tmp_path):
    f = files["folder"]
    argv = ["evaluate", "--predictions", f / "p.npz", "--calibration", f / "val.npz"]
    status, _, _ = run(capsys, *argv, "--figures", tmp_path / "plain")
    assert status == 0
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [
        "confusion.png",
        "loss_concentration.png",
        "per_class_loss.png",
        "reliability.png",
        "reliability_after_temperature.png",
    ]
    status, _, _ = run(capsys, *argv, "--images", f / "images.npy", "--figures", tmp_path / "im")
    assert status == 0
    written = sorted(p.name for p in (tmp_path / "im").iterdir())
    assert {"hardest.png", "confident_mistakes.png"} <= set(written)
    for name in written:
        with Image.open(tmp_path / "im" / name) as image:
            assert image.format == "PNG"


def test_predictions_path_never_imports_torch_and_starts_fast(files):
    f = files["folder"]
    code = (
        "import sys, io, contextlib\n"
        "from logloss.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['evaluate', '--predictions', {str(f / 'z.npy')!r}, '--labels',"
        f" {str(f / 'y.npy')!r}, '--json']) == 0\n"
        "print('torch' in sys.modules, 'matplotlib' in sys.modules)\n"
    )
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    assert out.stdout.split() == ["False", "False"]
    assert seconds < 3.0  # ~0.5 s on a quiet 2-core machine; generous for a shared one


# --------------------------------------------------------------------------- explain


def test_explain_row_equals_explain_of_that_row(capsys, files):
    f = files["folder"]
    status, out, _ = run(capsys, "explain", "--predictions", f / "p.npz", "--row", 17, "--json")
    assert status == 0
    payload = json.loads(out)
    expected = explain(
        files["z"][17], int(files["y"][17]), labels=files["names"], torch_reference=False
    )
    assert payload["explanation"] == json.loads(json.dumps(expected.to_dict()))
    assert payload["id"] == "s0017"
    status, out, _ = run(capsys, "explain", "--predictions", f / "p.npz", "--id", "s0042")
    assert status == 0
    assert "row 42 (id s0042)" in out
    assert f"true class {files['names'][files['y'][42]]}" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--row", "600"], "--row 600 is out of range: "),
        (["--id", "nope"], "has no row with id 'nope'"),
        (["--row", "1", "--id", "s0001"], "give a row number (--row I) or a row id (--id ID)"),
    ],
)
def test_explain_bad_rows(capsys, files, argv, message):
    status, _, err = run(capsys, "explain", "--predictions", files["folder"] / "p.npz", *argv)
    assert status == 2
    assert message in err


# --------------------------------------------------------------------------- report


class DataValues(HTMLParser):
    """Every ``<data id value data-json>`` of a page, and its headings."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, dict[str, str | None]] = {}
        self.headings: list[str] = []
        self.images: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "data":
            self.values[attributes["id"]] = attributes
        self._in_h2 = tag == "h2"
        if tag == "img":
            self.images.append(attributes["id"])

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


def lookup(payload, path):
    for key in path.split("."):
        payload = payload[key]
    return payload


def test_report_numbers_equal_evaluate_json(capsys, files, tmp_path):
    f = files["folder"]
    common = ["--predictions", f / "p.npz", "--calibration", f / "val.npz"]
    status, _, _ = run(capsys, "report", *common, "--out", tmp_path / "r.html", "--index", 5)
    assert status == 0
    status, out, _ = run(capsys, "evaluate", *common, "--json")
    evaluated = json.loads(out)
    page = DataValues()
    page.feed((tmp_path / "r.html").read_text(encoding="utf-8"))
    checked = set()
    for attributes in page.values.values():
        if attributes.get("data-json"):
            expected = lookup(evaluated, attributes["data-json"])
            assert float(attributes["value"]) == pytest.approx(expected, rel=1e-12), attributes
            checked.add(attributes["data-json"])
    assert {
        "loss",
        "accuracy",
        "calibration.ece",
        "calibration.classwise_ece",
        "temperature.temperature",
        "worst.share",
        "errors",
    } <= checked
    assert [h.split(". ", 1)[1] for h in page.headings] == [
        "Likelihood",
        "Log-likelihood",
        "From network outputs to probabilities",
        "Cross-entropy: softmax, then the negative log-likelihood",
        "Where the remaining loss lives",
        "Calibration",
    ]
    assert [h.split(".")[0] for h in page.headings] == ["1", "2", "3", "4", "5", "6"]
    row = explain(files["z"][5], int(files["y"][5]), torch_reference=False)
    assert float(page.values["sample-loss-after"]["value"]) == pytest.approx(row.loss, rel=1e-12)
    assert "figure-hardest" not in page.images  # no --images: tables instead


# --------------------------------------------------------------------------- bad input


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def bad_cases(folder):
    """(argv, what the one line must contain) for each bad input of issue 12."""
    good = np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]])
    y = np.array([0, 1, 1])
    cases = {}

    def npz(name, **arrays):
        np.savez(folder / name, **arrays)
        return folder / name

    nan = good.copy()
    nan[1, 0] = np.nan
    cases["nan"] = (
        ["--predictions", npz("nan.npz", probs=nan, labels=y)],
        ["nan.npz row 1, column 0: NaN or inf in probabilities"],
    )
    negative = np.array([[1.2, -0.2], [0.2, 0.8], [0.5, 0.5]])
    cases["negative"] = (
        ["--predictions", npz("neg.npz", probs=negative, labels=y)],
        ["neg.npz row 0, column 1: a negative probability"],
    )
    cases["sum"] = (
        ["--predictions", npz("sum.npz", probs=good * [[1], [1], [0.9]], labels=y)],
        ["sum.npz row 2: the row sums to 0.9", "--renormalize"],
    )
    cases["label range"] = (
        ["--predictions", npz("range.npz", probs=good, labels=[0, 2, 1])],
        ["range.npz row 1: label 2 is outside [0, 2)"],
    )
    write(folder / "names.csv", "label,cat,dog\ncat,0.6,0.4\ndgo,0.1,0.9\ndog,0.5,0.5\n")
    cases["label name"] = (
        ["--predictions", folder / "names.csv"],
        ["names.csv row 1: label 'dgo' is not among the class names (cat, dog)"],
    )
    np.save(folder / "three.npy", good)
    np.save(folder / "two.npy", y[:2])
    cases["row counts"] = (
        ["--predictions", folder / "three.npy", "--labels", folder / "two.npy"],
        ["three.npy has 3 rows but --labels", "two.npy has 2 labels"],
    )
    write(folder / "ragged.csv", "label,a,b\n0,0.5,0.5\n1,0.5\n0,0.3,0.7\n")
    cases["ragged"] = (
        ["--predictions", folder / "ragged.csv"],
        ["ragged.csv row 1: 2 cells where the header has 3"],
    )
    write(folder / "empty.csv", "")
    cases["empty"] = (["--predictions", folder / "empty.csv"], ["empty.csv is empty"])
    write(folder / "text.csv", "label,a,b\n0,0.5,0.5\n1,x,0.5\n0,0.3,0.7\n")
    cases["non-numeric"] = (
        ["--predictions", folder / "text.csv"],
        ["text.csv row 1, column 'a': 'x' is not a number"],
    )
    write(folder / "nolabel.csv", "a,b\n0.5,0.5\n0.2,0.8\n")
    cases["no label column"] = (
        ["--predictions", folder / "nolabel.csv"],
        ["nolabel.csv header has no label column 'label'", "--label-column NAME"],
    )
    write(folder / "twice.csv", "label,a,a\n0,0.5,0.5\n1,0.2,0.8\n")
    cases["duplicate names"] = (
        ["--predictions", folder / "twice.csv"],
        ["twice.csv header: column 'a' appears twice"],
    )
    np.save(folder / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    cases["object npy"] = (
        ["--predictions", folder / "objects.npy", "--labels", folder / "two.npy"],
        ["objects.npy holds Python objects", "never unpickles"],
    )
    cases["npz arrays"] = (
        ["--predictions", npz("other.npz", scores=good, labels=y)],
        ["other.npz holds ['labels', 'scores']", "'logits', 'probs' or"],
    )
    cases["one row"] = (
        ["--predictions", npz("one.npz", probs=good[:1], labels=y[:1])],
        ["one.npz has 1 row", "at least 2"],
    )
    cases["calibration classes"] = (
        [
            "--predictions",
            npz("ok.npz", probs=good, labels=y),
            "--calibration",
            npz("three.npz", probs=np.full((3, 3), 1 / 3), labels=y),
        ],
        ["--calibration", "three.npz has 3 column(s), the predictions 2"],
    )
    return cases


CASES = [
    "nan",
    "negative",
    "sum",
    "label range",
    "label name",
    "row counts",
    "ragged",
    "empty",
    "non-numeric",
    "no label column",
    "duplicate names",
    "object npy",
    "npz arrays",
    "one row",
    "calibration classes",
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", ["evaluate", "report"])
def test_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path, case, command):
    argv, expected = bad_cases(tmp_path)[case]
    out = tmp_path / "written"
    writes = ["--figures", out] if command == "evaluate" else ["--out", out]
    status, stdout, err = run(capsys, command, *argv, *writes)
    assert status == 2
    assert stdout == ""
    assert err.startswith("logloss: error: ")
    assert err.count("\n") == 1  # one line
    for part in expected:
        assert part in err, err
    assert not out.exists()


def test_checkpoint_and_predictions_are_exclusive(capsys, files, tmp_path):
    status, _, err = run(
        capsys, "evaluate", "--predictions", files["folder"] / "z.npy", "--checkpoint", tmp_path
    )
    assert status == 2
    assert "either --checkpoint DIR" in err
    status, _, err = run(capsys, "evaluate")
    assert status == 2
    assert "either --checkpoint DIR" in err


def test_json_output_of_evaluate_is_strict(files):
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        main(["evaluate", "--predictions", str(files["folder"] / "p.npz"), "--json"])
    json.loads(stdout.getvalue(), parse_constant=lambda name: pytest.fail(f"bare {name}"))


def test_predictions_report_renders_in_chromium(capsys, files, tmp_path):
    from conftest import chromium_driver

    f = files["folder"]
    out = tmp_path / "report.html"
    status, _, _ = run(
        capsys,
        "report",
        "--predictions",
        f / "p.npz",
        "--calibration",
        f / "val.npz",
        "--images",
        f / "images.npy",
        "--out",
        out,
    )
    assert status == 0
    with chromium_driver(tmp_path / "chromium", window_size="1100,900") as browser:
        browser.get(out.as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => "
            "({id: i.id, complete: i.complete, width: i.naturalWidth}))"
        )
        assert browser.title == "logloss report"
    assert {i["id"] for i in images} == {
        "figure-likelihood",
        "figure-sigmoid",
        "figure-softmax",
        "figure-concentration",
        "figure-hardest",
        "figure-mistakes",
        "figure-per-class",
        "figure-confusion",
        "figure-reliability",
        "figure-reliability-after",
    }
    assert all(i["complete"] and i["width"] > 0 for i in images)
