"""Converting a user's picture the way MNIST was made, checked on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from scipy import ndimage

from _photos import LIGHTINGS, lit_photo
from logloss.data.preprocess import (
    _running,
    background,
    centre_of_mass,
    ink_is_dark,
    load_image,
    to_grayscale,
    to_mnist,
)


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


# --------------------------------------------------------------------------------------------
# uneven lighting (issue 14: a phone photo of a 7 with a lighting gradient was read as a 0)


@pytest.mark.parametrize("name", sorted(LIGHTINGS))
def test_lit_photos_convert_like_the_clean_digit(data_dir, name):
    from logloss.data import load_dataset

    images, _ = load_dataset("mnist", "test", data_dir=data_dir)
    correlations = []
    for index in range(12):
        photo = lit_photo(images[index], seed=index, **LIGHTINGS[name])
        clean = to_mnist(images[index]).astype(float).ravel()
        correlations.append(np.corrcoef(to_mnist(photo).astype(float).ravel(), clean)[0, 1])
    assert np.median(correlations) > 0.9, correlations
    assert min(correlations) > 0.5, correlations  # the 12 digits, not only most of them


@pytest.mark.parametrize("name", ["gradient", "strong gradient", "vignette", "soft shadow"])
def test_the_lighting_is_uneven_enough_to_defeat_one_threshold(name):
    # The premise of the test above: some paper is darker than some ink, so no single gray
    # level separates them and the background has to be estimated locally.
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[4:24, 12:16] = 255  # a "1"
    photo = lit_photo(digit, noise=0.0, **LIGHTINGS[name]).astype(float)
    strokes = lit_photo(digit, noise=0.0, low=1.0, high=1.0) < 128  # where the ink is
    assert photo[~strokes].min() < photo[strokes].max()
    # ... and the conversion still finds the "1": 20 tall, narrow, centred.
    height, width = ink_box(to_mnist(photo.astype(np.uint8)) > 64)
    assert height == 20
    assert width <= 6


def test_ink_polarity_under_a_gradient(data_dir):
    from logloss.data import load_dataset

    images, _ = load_dataset("mnist", "test", data_dir=data_dir)
    for index in range(10):
        photo = to_grayscale(lit_photo(images[index], seed=index, **LIGHTINGS["strong gradient"]))
        assert ink_is_dark(photo)
        assert not ink_is_dark(1.0 - photo)
        assert not ink_is_dark(to_grayscale(images[index]))  # MNIST: white ink on black


def test_background_keeps_a_gradient_and_removes_strokes():
    y, x = np.mgrid[0:60, 0:80] / 80
    paper = 0.2 + 0.5 * x + 0.2 * y  # (60, 80) a linear gradient, in [0.2, 0.9]
    inked = paper.copy()
    inked[10:50, 30:36] += 0.3  # a light stroke, 6 pixels wide
    np.testing.assert_allclose(background(paper), paper, atol=1e-12)  # kept exactly
    # With a stroke on the slope, the opening moves by at most slope x stroke width (up where a
    # square meets the stroke; down at the border, where the padding reflects it).
    error = np.abs(background(inked) - paper)
    assert error.max() <= 6 * (0.5 + 0.2) / 80
    assert (inked - background(inked))[10:50, 30:36].min() >= 0.3 - 6 * (0.5 + 0.2) / 80


def test_a_large_photo_is_reduced_first(data_dir):
    from logloss.data import load_dataset

    images, _ = load_dataset("mnist", "test", data_dir=data_dir)
    small = lit_photo(images[0], height=800, width=600, **LIGHTINGS["gradient"])
    photo = np.asarray(Image.fromarray(small).resize((3000, 4000), Image.Resampling.BILINEAR))
    assert photo.shape == (4000, 3000)  # the size of the photo in issue 14
    digit = to_mnist(photo)
    clean = to_mnist(images[0])
    assert np.corrcoef(digit.astype(float).ravel(), clean.astype(float).ravel())[0, 1] > 0.9


@given(
    shape=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    axis=st.sampled_from([0, 1]),
    fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
    maximum=st.booleans(),
)
def test_running_extreme_equals_the_window_definition(shape, axis, fraction, seed, maximum):
    # van Herk / Gil-Werman against the definition: the extreme of each window, read directly
    image = np.random.default_rng(seed).normal(size=shape)
    size = 1 + int(fraction * (shape[axis] - 1))
    extreme = np.maximum if maximum else np.minimum
    windows = sliding_window_view(image, size, axis=axis)
    expected = windows.max(axis=-1) if maximum else windows.min(axis=-1)
    np.testing.assert_array_equal(_running(image, size, axis, extreme), expected)
