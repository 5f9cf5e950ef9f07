"""``logloss report``: one self-contained HTML page.  The key numbers on the page (its
``<data>`` elements, read with html.parser: no browser needed) equal the ones
``logloss evaluate --json`` and ``logloss explain --json`` print; headless Chromium checks the
rendering: every image decodes and the sample grids' captions stay readable."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
from contextlib import redirect_stdout
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import chromium_driver
from logloss.cli import main
from logloss.insight import plots, report
from logloss.training import run_folder


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


class PageNumbers(HTMLParser):
    """The page's ``<data>`` elements (id, exact value, JSON path, shown text) and headings."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: list[dict] = []
        self.headings: list[str] = []
        self._open: dict | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "data":
            self._open = {
                "id": attributes["id"],
                "value": attributes["value"],
                "json": attributes.get("data-json"),
                "text": "",
            }
        elif tag == "h2":
            self._heading = []

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data
        if self._heading is not None:
            self._heading.append(data)

    def handle_endtag(self, tag):
        if tag == "data" and self._open is not None:
            self.numbers.append(self._open)
            self._open = None
        elif tag == "h2" and self._heading is not None:
            self.headings.append("".join(self._heading))
            self._heading = None


@pytest.fixture(scope="module")
def parsed(page):
    """The key numbers and headings of the page, read with the standard library's parser."""
    reader = PageNumbers()
    reader.feed(page.read_text(encoding="utf-8"))
    return {"numbers": reader.numbers, "headings": reader.headings}


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
    return {
        "title": browser.title,
        "images": images,
        "screenshot": browser.get_screenshot_as_png(),
    }


def lookup(payload: dict, path: str):
    for key in path.split("."):
        payload = payload[key]
    return payload


def test_page_tells_the_story_in_order(parsed):
    headings = [h.split(". ", 1)[1] for h in parsed["headings"]]
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


def test_page_loads_in_chromium(rendered):
    assert rendered["title"] == "logloss report"
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
        "figure-per-class",
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
    assert len(sources) == 13
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


def test_key_numbers_equal_evaluate_json(parsed, run, data_dir):
    evaluated = cli_json("evaluate", "--checkpoint", run, "--json", "--data-dir", data_dir)
    checked = set()
    for number in parsed["numbers"]:
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
        "calibration.classwise_ece",
    }
    shown = {n["id"]: n["text"] for n in parsed["numbers"]}
    assert shown["accuracy"] == f"{100 * evaluated['accuracy']:.2f}%"
    assert shown["loss"] == f"{evaluated['loss']:.4f}"


def test_before_and_after_numbers_equal_explain_json(parsed, run, data_dir):
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
    values = {n["id"]: float(n["value"]) for n in parsed["numbers"]}
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


def test_article_numbers(parsed):
    values = {n["id"]: float(n["value"]) for n in parsed["numbers"]}
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
    assert run_folder.read_metrics(tmp_path) == []
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "val_loss": 0.5}\n\n{"epoch": 2}\n')
    assert run_folder.read_metrics(tmp_path) == [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2}]
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": \n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl line 2 is not JSON"):
        run_folder.read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="line 1 is not a JSON object"):
        run_folder.read_metrics(tmp_path)


def test_read_metrics_starts_with_the_untrained_model(tmp_path):
    from logloss.training.run_folder import FORMAT, FORMAT_VERSION, write_metadata

    epoch_one = {"epoch": 1, "train_loss": 0.42, "val_loss": 0.14}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(epoch_one) + "\n")
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "initial_loss": 2.3135}
    write_metadata(tmp_path, metadata)
    assert run_folder.read_metrics(tmp_path) == [{"epoch": 0, "val_loss": 2.3135}, epoch_one]
    assert run_folder.trained_epochs({}, run_folder.read_metrics(tmp_path)) == (None, 1)
    write_metadata(tmp_path, {**metadata, "initial_loss": math.nan})  # unknown: no epoch 0
    assert run_folder.read_metrics(tmp_path) == [epoch_one]
    (tmp_path / "metrics.jsonl").unlink()  # no epoch recorded: nothing to draw
    write_metadata(tmp_path, metadata)
    assert run_folder.read_metrics(tmp_path) == []


def test_report_and_evaluate_draw_the_same_training_points(run, data_dir, tmp_path, monkeypatch):
    # The report and `logloss evaluate --figures` (a 1-epoch run) both start at epoch 0, the
    # untrained model's validation loss in checkpoint.json, from the same records.
    drawn = []

    def training_curves_figure(records, **options):
        figure = original(records, **options)
        line = next(line for line in figure.axes[0].lines if line.get_label() == "validation")
        drawn.append((list(line.get_xdata()), list(line.get_ydata())))
        return figure

    original = plots.training_curves_figure
    monkeypatch.setattr(plots, "training_curves_figure", training_curves_figure)
    report.build_report(run, split="validation", data_dir=data_dir, download=False)
    with redirect_stdout(io.StringIO()):
        options = ["--checkpoint", run, "--data-dir", data_dir, "--no-calibration"]
        assert main(["evaluate", *map(str, options), "--figures", str(tmp_path / "f")]) == 0
    metadata = json.loads((run / "checkpoint.json").read_text(encoding="utf-8"))
    (epoch_one,) = [r for r in run_folder.read_metrics(run) if r["epoch"] == 1]
    expected = ([0.0, 1.0], [metadata["initial_loss"], epoch_one["val_loss"]])
    assert drawn == [expected, expected]


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


# --------------------------------------------------------------------------- which weights


def plain_text(page_html: str) -> str:
    """The page's text without tags (``<data>`` elements keep their shown value)."""
    return re.sub(r"<[^>]+>", "", page_html)


def test_trained_epochs_reads_best_and_last_from_checkpoint_json():
    records = [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}, {"epoch": 4}, {"epoch": 5}]
    assert run_folder.trained_epochs({"best": {"epoch": 3}, "last": {"epoch": 5}}, records) == (
        3,
        5,
    )
    # No last record in checkpoint.json: the count of metrics.jsonl lines.
    assert run_folder.trained_epochs({"best": {"epoch": 2}}, records) == (2, 5)
    # No best record (a run stopped before its first epoch ended): nothing to name.
    assert run_folder.trained_epochs({"best": None}, []) == (None, 0)
    assert run_folder.trained_epochs({"best": {"epoch": True}, "last": {"epoch": "2"}}, []) == (
        None,
        0,
    )


def test_page_names_the_best_epoch_it_evaluates(page, parsed, run):
    metadata = json.loads((run / "checkpoint.json").read_text(encoding="utf-8"))
    best, last = metadata["best"]["epoch"], metadata["last"]["epoch"]
    assert last == len(run_folder.read_metrics(run)) - 1  # epoch 0, the untrained model, first
    values = {n["id"]: float(n["value"]) for n in parsed["numbers"]}
    assert (values["best-epoch"], values["epochs"]) == (best, last)
    text = plain_text(page.read_text(encoding="utf-8"))
    assert f"best epoch {best} of {last}" in text
    assert f"with the weights of the best epoch, {best} of {last}" in text


def test_page_says_best_epoch_when_it_precedes_the_last(run, data_dir, tmp_path):
    # The small run has one epoch; a copy whose checkpoint.json and metrics.jsonl say that
    # epoch 1 of 3 was the best stands for a run that overfitted after its first epoch.
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    metadata = json.loads((copy / "checkpoint.json").read_text(encoding="utf-8"))
    first = run_folder.read_metrics(copy)[1]  # [0] is epoch 0, the untrained model
    assert first["epoch"] == 1
    records = [{**first, "epoch": k} for k in (1, 2, 3)]
    metadata["best"], metadata["last"] = records[0], records[2]
    (copy / "checkpoint.json").write_text(json.dumps(metadata), encoding="utf-8")
    (copy / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8"
    )
    built = report.build_report(copy, split="validation", data_dir=data_dir, download=False)
    text = plain_text(built.html)
    assert (built.numbers["best-epoch"], built.numbers["epochs"]) == (1, 3)
    assert "best epoch 1 of 3" in text
    assert "with the weights of the best epoch, 1 of 3 (highest validation accuracy)" in text
    assert "after 3 epoch" not in text


# --------------------------------------------------------------------------- the sample image


@pytest.mark.parametrize("scale", [1, 4])
def test_png_bytes_matches_pillow_nearest_resize(scale):
    from logloss.data.render import png_bytes

    image = np.random.default_rng(scale).integers(0, 256, size=(5, 7), dtype=np.uint8)
    reference = Image.fromarray(image).resize((7 * scale, 5 * scale), Image.Resampling.NEAREST)
    with Image.open(io.BytesIO(png_bytes(image, scale=scale))) as plain:
        assert plain.format == "PNG"
        assert plain.mode == "L"
        np.testing.assert_array_equal(np.asarray(plain), np.asarray(reference))
    with Image.open(io.BytesIO(png_bytes(image, scale=scale, invert=True))) as inverted:
        np.testing.assert_array_equal(np.asarray(inverted), np.asarray(ImageOps.invert(reference)))


@pytest.mark.parametrize(
    ("image", "scale", "message"),
    [
        (np.zeros((2, 2), np.float32), 1, r"expected one uint8 image of shape \(H, W\)"),
        (np.zeros((2, 2, 3), np.uint8), 1, r"expected one uint8 image of shape \(H, W\)"),
        (np.zeros((2, 2), np.uint8), 0, "scale must be an integer from 1 to 64, got 0"),
        (np.zeros((2, 2), np.uint8), True, "scale must be an integer from 1 to 64, got True"),
    ],
)
def test_png_bytes_rejects_bad_input(image, scale, message):
    from logloss.data.render import png_bytes

    with pytest.raises(ValueError, match=message):
        png_bytes(image, scale=scale)


def test_page_sample_is_the_test_digit_inverted_and_enlarged(page, data_dir):
    from logloss.data import load_dataset

    images, _ = load_dataset("mnist", "test", data_dir=data_dir, download=False)
    text = page.read_text(encoding="utf-8")
    source = re.search(r'id="figure-sample"[^>]*src="data:image/png;base64,([^"]*)"', text)
    with Image.open(io.BytesIO(base64.b64decode(source.group(1)))) as sample:
        pixels = np.asarray(sample.convert("L"))
    np.testing.assert_array_equal(pixels, np.kron(255 - images[0], np.ones((4, 4), np.uint8)))


def test_sample_grid_captions_are_readable(browser, rendered):
    # The grids' captions are drawn in the PNG at plots.CAPTION_POINTS; the page must not
    # scale the image down below 12 px text, and the figure captions under them are >= 12 px.
    assert rendered["title"] == "logloss report"  # the browser is on the page
    shown = browser.execute_script(
        "return ['figure-hardest', 'figure-mistakes'].map(id => { "
        "const image = document.getElementById(id); "
        "const caption = image.parentElement.querySelector('figcaption'); "
        "return {id: id, width: image.getBoundingClientRect().width, "
        "natural: image.naturalWidth, "
        "caption: parseFloat(getComputedStyle(caption).fontSize)}; })"
    )
    for image in shown:
        scale = image["width"] / image["natural"]
        assert plots.CAPTION_POINTS * plots.DPI / 72 * scale >= 12, image
        assert image["caption"] >= 12, image


# --------------------------------------------------------------------------- layout (issue 14)


def test_half_width_figures_sit_beside_text(page):
    text = page.read_text(encoding="utf-8")
    for key in ("sigmoid", "concentration", "confusion"):
        pair = re.search(
            rf'<div class="pair"><div>((?:(?!<div class="pair">).)*?)</div><div><figure>'
            rf'<img id="figure-{key}"',
            text,
            re.S,
        )
        assert pair is not None, key
        assert pair.group(1).strip(), key  # something beside it


def test_sample_grids_leave_no_single_image_on_a_row(page):
    # 16 samples in at most 5 columns: 4 rows of 4 (5 columns would leave one alone).
    assert plots.grid_columns(16, report.EXAMPLE_COLUMNS) == 4
    text = page.read_text(encoding="utf-8")
    for key in ("hardest", "mistakes"):
        source = re.search(rf'id="figure-{key}"[^>]*src="data:image/png;base64,([^"]*)"', text)
        with Image.open(io.BytesIO(base64.b64decode(source.group(1)))) as grid:
            expected = round((plots.TILE_INCHES * 4 + 0.1) * plots.DPI)
            assert abs(grid.size[0] - expected) <= 2, grid.size


def test_sample_loss_and_pytorch_loss_share_one_precision_rule(parsed, page, run, data_dir):
    from logloss.insight.explain import format_small

    explained = cli_json("explain", "--checkpoint", run, "--json", "--data-dir", data_dir)
    shown = {n["id"]: n["text"] for n in parsed["numbers"]}
    value = {n["id"]: float(n["value"]) for n in parsed["numbers"]}
    assert shown["sample-loss-after"] == format_small(value["sample-loss-after"])
    torch_shown = re.search(r"PyTorch's CrossEntropyLoss: ([^)]*)\)", plain_text(page.read_text()))
    torch_loss = explained["explanation"]["torch_loss"]
    assert torch_shown.group(1) == format_small(torch_loss)
