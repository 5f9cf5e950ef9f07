"""Converting a user's picture the way MNIST was made, checked on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from logloss.data.preprocess import centre_of_mass, load_image, to_grayscale, to_mnist


def ink_box(image: np.ndarray) -> tuple[int, int]:
    """(height, width) of the bounding box of non-zero pixels."""
    rows = np.flatnonzero(image.any(axis=1))
    cols = np.flatnonzero(image.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def test_a_centred_square_stays_centred_and_becomes_20x20():
    image = np.zeros((40, 40), dtype=np.uint8)
    image[15:25, 15:25] = 255
    digit = to_mnist(image)
    assert digit.shape == (28, 28)
    assert digit.dtype == np.uint8
    assert ink_box(digit) == (20, 20)
    # A constant 10x10 block upscaled x2 is a constant 20x20 block of full ink.
    assert (digit[digit > 0] == 255).all()
    rows, cols = ndimage.center_of_mass(digit.astype(float))
    assert abs(rows - 14) <= 0.5
    assert abs(cols - 14) <= 0.5


def test_centre_of_mass_of_an_off_centre_shape_lands_on_14_14():
    # An "L": a heavy vertical bar and a thin foot, far from the centre of a 60x80 image.
    image = np.zeros((60, 80), dtype=np.uint8)
    image[5:45, 3:9] = 255
    image[40:45, 3:30] = 255
    digit = to_mnist(image)
    rows, cols = ndimage.center_of_mass(digit.astype(float))  # independent reference
    assert abs(rows - 14) <= 1.0
    assert abs(cols - 14) <= 1.0
    assert max(ink_box(digit)) == 20


def test_aspect_ratio_is_kept():
    image = np.zeros((50, 50), dtype=np.uint8)
    image[5:45, 20:30] = 200  # 40 tall, 10 wide
    height, width = ink_box(to_mnist(image))
    assert height == 20
    assert width == 5  # 10 * 20 / 40


def test_dark_ink_on_light_paper_is_inverted():
    white_on_black = np.zeros((30, 30), dtype=np.uint8)
    white_on_black[8:22, 12:16] = 255
    black_on_white = 255 - white_on_black
    np.testing.assert_array_equal(to_mnist(black_on_white), to_mnist(white_on_black))
    assert to_mnist(black_on_white)[0, 0] == 0  # background is black, as in MNIST


def test_gray_paper_is_subtracted_and_ink_stretched():
    image = np.full((30, 30), 200, dtype=np.uint8)  # light gray paper
    image[10:20, 10:20] = 50  # dark gray ink
    digit = to_mnist(image)
    assert digit.max() == 255
    assert digit[0, 0] == 0


def test_colour_and_transparent_images():
    rgb = np.full((20, 20, 3), 255, dtype=np.uint8)
    rgb[5:15, 8:12] = (0, 0, 255)  # blue ink on white
    gray = to_grayscale(rgb)
    assert gray[0, 0] == pytest.approx(1.0)
    assert gray[10, 10] == pytest.approx(0.114, abs=1e-3)  # ITU-R 601 luma of pure blue
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)  # transparent everywhere ...
    rgba[5:15, 8:12] = (0, 0, 0, 255)  # ... but an opaque black stroke
    np.testing.assert_array_equal(to_mnist(rgba), to_mnist(rgb))


def test_an_mnist_digit_is_almost_unchanged(data_dir):
    from logloss.data import load_dataset

    images, _ = load_dataset("mnist", "test", data_dir=data_dir)
    for image in images[:20]:
        again = to_mnist(image)
        assert max(ink_box(again)) == 20
        com = np.array(ndimage.center_of_mass(again.astype(float)))
        assert np.abs(com - ndimage.center_of_mass(image.astype(float))).max() <= 1.0
        a, b = image.astype(float).ravel(), again.astype(float).ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.85


def test_blank_image_is_a_clear_error():
    with pytest.raises(ValueError, match="no digit found"):
        to_mnist(np.full((10, 10), 128, dtype=np.uint8))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4, 2)), r"expected a 2-D grayscale image"),
        (np.full((4, 4), 2.0), r"float image must hold finite values in \[0, 1\]"),
        (np.array([["a"]]), "unsupported image dtype"),
    ],
)
def test_bad_arrays_are_rejected(image, message):
    with pytest.raises(ValueError, match=message):
        to_mnist(image)


def test_centre_of_mass_by_hand():
    image = np.zeros((5, 5))
    image[1, 1] = 1.0
    image[3, 3] = 3.0
    assert centre_of_mass(image) == (2.5, 2.5)  # (1*1 + 3*3) / 4


@pytest.mark.parametrize(("suffix", "mode"), [(".png", "L"), (".jpg", "RGB"), (".png", "RGBA")])
def test_load_image_reads_png_and_jpeg(tmp_path, suffix, mode):
    pixels = np.full((32, 24), 255, dtype=np.uint8)
    pixels[6:26, 10:14] = 0  # a black "1" on white
    image = Image.fromarray(pixels).convert(mode)
    path = tmp_path / f"one{suffix}"
    image.save(path)
    loaded = load_image(path)
    assert loaded.shape == (32, 24)
    assert loaded.dtype == np.uint8
    tolerance = 0 if suffix == ".png" else 40  # JPEG is lossy at sharp edges
    assert np.abs(loaded.astype(int) - pixels).max() <= tolerance
    assert ink_box(to_mnist(loaded) > 64) == (20, 4)


def test_load_image_rejects_non_images(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    with pytest.raises(ValueError, match="is not an image that Pillow can read"):
        load_image(text)
    with pytest.raises(ValueError, match="no such image file"):
        load_image(tmp_path / "missing.png")


def test_a_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (64, 64), 255).save(path)
    assert load_image(path).shape == (64, 64)  # readable under Pillow's usual limit
    # Pillow refuses images of more than twice MAX_IMAGE_PIXELS: 4096 > 2 * 1000.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match=r"big\.png is too large to read safely"):
        load_image(path)
