"""``logloss predict``: each file reported, what the model saw (--png, --json), lit photos."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from _photos import LIGHTINGS, lit_photo
from logloss.cli import main
from logloss.data import load_dataset
from logloss.data.preprocess import load_image, to_mnist
from logloss.training.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def test_digits(data_dir):
    images, labels = load_dataset("mnist", "test", data_dir=data_dir)
    return images[:40], labels[:40]


def write_photo(path, pixels: np.ndarray) -> str:
    Image.fromarray(pixels).save(path)
    return str(path)


def test_each_file_is_reported_and_a_bad_one_sets_status_2(
    small_run, test_digits, tmp_path, capsys
):
    # Issue 13: `logloss predict a.png notes.txt b.png` reports each file.
    images, _ = test_digits
    a = write_photo(tmp_path / "a.png", 255 - images[0])
    b = write_photo(tmp_path / "b.png", 255 - images[1])
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    status = main(["predict", "--checkpoint", str(small_run), a, str(notes), b])
    out, err = capsys.readouterr()
    assert status == 2
    assert out.startswith(f"{a}: ")
    assert f"\n{b}: " in out
    assert err.count("\n") == 1
    assert err.startswith(f"logloss: error: {notes} is not an image that Pillow can read")

    status = main(["predict", "--checkpoint", str(small_run), "--json", a, str(notes), b])
    out, err = capsys.readouterr()
    records = json.loads(out)
    assert status == 2
    assert [r["file"] for r in records] == [a, str(notes), b]
    assert set(records[1]) == {"file", "error"}
    assert "is not an image" in records[1]["error"]
    assert err.count("\n") == 1
    assert main(["predict", "--checkpoint", str(small_run), a, b]) == 0  # all good: status 0


def test_a_blank_picture_is_its_own_error(small_run, tmp_path, capsys):
    blank = write_photo(tmp_path / "blank.png", np.full((30, 30), 200, dtype=np.uint8))
    assert main(["predict", "--checkpoint", str(small_run), blank]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"logloss: error: {blank}: no digit found: every pixel has the background's " + (
        "level; give an image with a digit drawn in a contrasting colour\n"
    )


def test_png_and_json_show_what_the_model_saw(small_run, test_digits, tmp_path, capsys):
    images, _ = test_digits
    path = write_photo(tmp_path / "seven.jpg", lit_photo(images[0], **LIGHTINGS["gradient"]))
    seen = tmp_path / "seen"
    argv = ["predict", "--checkpoint", str(small_run), "--json", "--png", str(seen), path]
    assert main(argv) == 0
    (record,) = json.loads(capsys.readouterr().out)
    image = np.array(record["image"], dtype=np.uint8)
    assert image.shape == (28, 28)
    np.testing.assert_array_equal(image, to_mnist(load_image(path)))  # the library's conversion
    assert record["png"] == str(seen / "1-seven.png")
    png = np.asarray(Image.open(record["png"]))
    assert png.shape == (224, 224)
    np.testing.assert_array_equal(png[::8, ::8], image)  # 8x blocks of the same pixels
    # The logits are the model's on exactly that image.
    logits = load_checkpoint(small_run).logits(image[None])[0]
    np.testing.assert_allclose(record["logits"], logits, rtol=1e-5, atol=1e-5)


def test_a_4000x3000_photo_of_a_7_under_a_gradient_is_a_7(small_run, test_digits, tmp_path, capsys):
    # Issue 14: such a photo answered 0 with p = 0.59, the shadow read as ink.
    images, labels = test_digits
    assert labels[0] == 7
    small = lit_photo(images[0], height=800, width=600, **LIGHTINGS["strong gradient"])
    photo = Image.fromarray(small).resize((3000, 4000), Image.Resampling.BILINEAR)
    path = tmp_path / "seven.jpg"
    photo.save(path, quality=90)
    assert main(["predict", "--checkpoint", str(small_run), "--json", str(path)]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["predicted"] == 7


@pytest.mark.parametrize("name", ["gradient", "strong gradient", "vignette", "soft shadow"])
def test_lit_photos_get_the_clean_digits_answer(small_run, test_digits, name):
    # The reference is the same model on the original MNIST digit: the photo must not change it.
    images, _ = test_digits
    checkpoint = load_checkpoint(small_run)
    clean = checkpoint.logits(np.stack([to_mnist(image) for image in images])).argmax(1)
    photos = [lit_photo(image, seed=k, **LIGHTINGS[name]) for k, image in enumerate(images)]
    lit = checkpoint.logits(np.stack([to_mnist(photo) for photo in photos])).argmax(1)
    assert (lit == clean).mean() >= 0.9
