"""``logloss report``: one self-contained HTML page, rendered in headless Chromium; every image
decodes (in the browser and with Pillow) and the key numbers on the page equal the ones
``logloss evaluate --json`` and ``logloss explain --json`` print."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from contextlib import redirect_stdout

import pytest
from PIL import Image

from conftest import chromium_driver
from logloss import report
from logloss.cli import main


def cli_json(*argv) -> dict:
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        assert main([str(a) for a in argv]) == 0
    return json.loads(stdout.getvalue())


@pytest.fixture(scope="module")
def run(small_run):
    return small_run


@pytest.fixture(scope="module")
def page(run, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    with redirect_stdout(io.StringIO()):
        status = main(
            ["report", "--checkpoint", str(run), "--out", str(out), "--data-dir", str(data_dir)]
        )
    assert status == 0
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium_driver(tmp_path_factory.mktemp("chromium"), window_size="1100,900") as driver:
        yield driver


@pytest.fixture(scope="module")
def rendered(browser, page):
    """What the browser made of the page: images and the key numbers."""
    browser.get(page.as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => "
        "({id: i.id, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))"
    )
    numbers = browser.execute_script(
        "return Array.from(document.querySelectorAll('data')).map(e => "
        "({id: e.id, value: e.value, json: e.dataset.json || null, text: e.textContent}))"
    )
    return {
        "title": browser.title,
        "images": images,
        "numbers": numbers,
        "headings": browser.execute_script(
            "return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)"
        ),
        "screenshot": browser.get_screenshot_as_png(),
    }


def lookup(payload: dict, path: str):
    for key in path.split("."):
        payload = payload[key]
    return payload


def test_page_loads_in_chromium_and_tells_the_story_in_order(rendered):
    assert rendered["title"] == "logloss report"
    headings = [h.split(". ", 1)[1] for h in rendered["headings"]]
    assert headings == [
        "Likelihood",
        "Log-likelihood",
        "From network outputs to probabilities",
        "Cross-entropy: softmax, then the negative log-likelihood",
        "Training",
        "The same sample, before and after",
        "Where the remaining loss lives",
        "Calibration",
    ]
    with Image.open(io.BytesIO(rendered["screenshot"])) as shot:
        assert shot.size[0] > 500
        assert shot.convert("L").getextrema()[0] < 100  # something dark was drawn


def test_every_image_decodes_in_the_browser(rendered):
    images = rendered["images"]
    expected = {
        "figure-likelihood",
        "figure-sigmoid",
        "figure-softmax",
        "figure-training",
        "figure-sample",
        "figure-before-after",
        "figure-concentration",
        "figure-hardest",
        "figure-mistakes",
        "figure-confusion",
        "figure-reliability",
        "figure-reliability-after",
    }
    assert {image["id"] for image in images} == expected
    for image in images:
        assert image["complete"], image["id"]
        assert image["width"] > 0, image["id"]
        assert image["height"] > 0, image["id"]


def test_every_embedded_png_decodes_with_pillow(page):
    text = page.read_text(encoding="utf-8")
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == 12
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as image:
            image.load()
            assert image.format == "PNG"


def test_page_is_self_contained(page):
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text
    assert "<link" not in text
    assert not re.search(r"(src|href)=\"(https?:)?//", text)
    assert "url(" not in text


def test_key_numbers_equal_evaluate_json(rendered, run, data_dir):
    evaluated = cli_json("evaluate", "--checkpoint", run, "--json", "--data-dir", data_dir)
    checked = set()
    for number in rendered["numbers"]:
        if number["json"]:
            expected = lookup(evaluated, number["json"])
            assert float(number["value"]) == pytest.approx(expected, rel=1e-12), number
            checked.add(number["json"])
    assert checked >= {
        "accuracy",
        "loss",
        "perplexity",
        "brier",
        "uniform_loss",
        "errors",
        "worst.share",
        "calibration.ece",
        "calibration.mce",
        "temperature.temperature",
        "temperature.loss_after",
        "temperature.ece_after",
    }
    shown = {n["id"]: n["text"] for n in rendered["numbers"]}
    assert shown["accuracy"] == f"{100 * evaluated['accuracy']:.2f}%"
    assert shown["loss"] == f"{evaluated['loss']:.4f}"


def test_before_and_after_numbers_equal_explain_json(rendered, run, data_dir):
    explained = cli_json(
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
    values = {n["id"]: float(n["value"]) for n in rendered["numbers"]}
    # float32 tolerance: the page's logits come from a batch of 4096 images, explain's from a
    # batch of one, and float32 matrix products round differently for different batch shapes.
    after, before = explained["explanation"], explained["untrained"]
    assert values["sample-loss-after"] == pytest.approx(after["loss"], rel=1e-5)
    assert values["sample-loss-before"] == pytest.approx(before["loss"], rel=1e-5)
    assert values["sample-p-true"] == pytest.approx(after["p_target"], rel=1e-5)
    assert abs(values["sample-loss-before"] - math.log(10)) < 0.5  # the article's ~ln 10
    assert values["untrained-loss"] == pytest.approx(
        cli_json(
            "evaluate",
            "--checkpoint",
            run,
            "--which",
            "initial",
            "--no-calibration",
            "--json",
            "--data-dir",
            data_dir,
        )["loss"],
        rel=1e-12,
    )


def test_article_numbers(rendered):
    values = {n["id"]: float(n["value"]) for n in rendered["numbers"]}
    assert values["mle-estimate"] == 0.6  # p = 3/5
    assert values["mle-likelihood"] == pytest.approx(0.6**3 * 0.4**2, rel=1e-12)
    assert values["log-likelihood-first"] == pytest.approx(3 * math.log(0.6) + 2 * math.log(0.4))
    assert values["log-likelihood-both"] == pytest.approx(
        values["log-likelihood-first"] + values["log-likelihood-second"], rel=1e-12
    )


# --------------------------------------------------------------------------- files


def test_write_report_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_text("old")

    def fail_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", fail_replace)
    with pytest.raises(OSError, match="disk full"):
        report.write_report(path, "<html>new</html>")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    monkeypatch.undo()
    report.write_report(path, "<html>new</html>")
    assert path.read_text() == "<html>new</html>"


def test_write_report_refuses_a_folder(tmp_path):
    with pytest.raises(ValueError, match=r"is a folder; give a file name such as report\.html"):
        report.write_report(tmp_path, "<html></html>")


def test_read_metrics(tmp_path):
    assert report.read_metrics(tmp_path) == []
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "val_loss": 0.5}\n\n{"epoch": 2}\n')
    assert report.read_metrics(tmp_path) == [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2}]
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": \n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl line 2 is not JSON"):
        report.read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="line 1 is not a JSON object"):
        report.read_metrics(tmp_path)


def test_report_index_out_of_range(capsys, run, data_dir, tmp_path):
    status = main(
        [
            "report",
            "--checkpoint",
            str(run),
            "--out",
            str(tmp_path / "r.html"),
            "--index",
            "10000",
            "--data-dir",
            str(data_dir),
        ]
    )
    assert status == 2
    assert "index 10000 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
