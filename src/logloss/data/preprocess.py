"""Turn a user's picture of a digit into a 28x28 image the way MNIST was made.

LeCun, Cortes and Burges describe MNIST's digits as size-normalised to fit a 20x20 box keeping
their aspect ratio (anti-aliased, hence the gray levels), then centred in a 28x28 field by their
centre of mass.  ``to_mnist`` does the same to any grayscale or colour image:

1. grayscale in [0, 1] (ITU-R 601 luma for colour);
2. white ink on black: invert when the background (median of the border pixels) is light;
3. subtract the background and stretch so that the strongest ink is 1;
4. crop to the bounding box of the ink (pixels above ``INK_THRESHOLD``);
5. resize so that the longer side is 20 pixels, keeping the aspect ratio;
6. paste into 28x28 so that the centre of mass sum(i * v) / sum(v) lands on pixel (14, 14),
   the same place as in MNIST itself (its mean centre of mass, in array indices, is (14.0, 14.0)).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MNIST_SIZE = 28  # side of the output field
BOX_SIZE = 20  # the digit's longer side after size normalisation
CENTRE = 14.0  # where the centre of mass goes, in array indices
INK_THRESHOLD = 0.1  # stretched ink above this belongs to the digit's bounding box
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights for R, G, B


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as grayscale uint8 (H, W), composited over white if transparent.

    Phone photos are turned upright by their EXIF orientation.

    Raises:
        ValueError: the file is missing, is not an image Pillow can read, or has more pixels
            than Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) allows.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such image file: {path}")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except Image.DecompressionBombError as error:  # not an OSError: Pillow's guard
        raise ValueError(
            f"{path} is too large to read safely ({error}); give a picture of one digit, "
            "a few hundred pixels wide is plenty"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(
            f"{path} is not an image that Pillow can read ({error}); give a PNG, JPEG, BMP, GIF "
            "or similar picture of one digit"
        ) from None
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent pixels become white paper, so dark ink drawn on them is kept.
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("L"), dtype=np.uint8).copy()


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3|4) array -> float64 (H, W) in [0, 1].

    Integer images are divided by their type's maximum (255 for uint8); float images must already
    lie in [0, 1].  Colour uses luma = 0.299 R + 0.587 G + 0.114 B; an alpha channel is
    composited over white.

    >>> to_grayscale(np.array([[0, 255]], dtype=np.uint8))
    array([[0., 1.]])
    """
    array = np.asarray(image)
    if array.dtype == np.bool_:
        array = array.astype(np.float64)
    elif np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float64) / np.iinfo(array.dtype).max
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
        if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
            raise ValueError(
                "a float image must hold finite values in [0, 1]; "
                f"got the range [{np.nanmin(array)}, {np.nanmax(array)}]"
            )
    else:
        raise ValueError(f"unsupported image dtype {array.dtype}; give uint8 or float in [0, 1]")
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        gray = array[..., :3] @ np.asarray(LUMA)
        if array.shape[-1] == 4:
            alpha = array[..., 3]
            gray = alpha * gray + (1.0 - alpha)
        array = gray
    if array.ndim != 2 or min(array.shape) < 1:
        raise ValueError(
            f"expected a 2-D grayscale image (H, W) or colour (H, W, 3|4), got shape {array.shape}"
        )
    return array


def border_median(gray: np.ndarray) -> float:
    """Median of the pixels on the image's outer frame: the paper's (background) level.

    >>> border_median(np.pad(np.ones((2, 2)), 1))
    0.0
    """
    frame = np.concatenate([gray[0, :], gray[-1, :], gray[1:-1, 0], gray[1:-1, -1]])
    return float(np.median(frame))


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) = sum(index * value) / sum(value), in array indices.

    >>> centre_of_mass(np.array([[0.0, 1.0], [0.0, 1.0]]))
    (0.5, 1.0)
    """
    total = float(image.sum())
    if total <= 0:
        raise ValueError("the image has no ink: its centre of mass is undefined")
    rows = np.arange(image.shape[0]) @ image.sum(axis=1) / total
    cols = np.arange(image.shape[1]) @ image.sum(axis=0) / total
    return float(rows), float(cols)


def _resize(patch: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float image (anti-aliased when shrinking, as Pillow does)."""
    resized = Image.fromarray(patch.astype(np.float32), mode="F").resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)


def to_mnist(image: np.ndarray) -> np.ndarray:
    """Size-normalise and centre one digit the way MNIST was made -> uint8 (28, 28).

    White ink on black; the ink's bounding box scaled so its longer side is 20 pixels (aspect
    kept); centre of mass moved to (14, 14) by a whole-pixel shift (kept inside the field).

    Args:
        image: (H, W) grayscale or (H, W, 3|4) colour; uint8, or float in [0, 1].

    Returns:
        uint8 array (28, 28).

    Raises:
        ValueError: not an image array, or nothing but background.

    >>> square = np.zeros((40, 40), dtype=np.uint8); square[15:25, 15:25] = 255
    >>> digit = to_mnist(square)
    >>> digit.shape, digit.dtype, int(digit.max()), int((digit > 0).sum())
    ((28, 28), dtype('uint8'), 255, 400)
    """
    gray = to_grayscale(image)
    # MNIST is white ink on black: invert dark-on-light paper.
    if border_median(gray) > 0.5:
        gray = 1.0 - gray
    ink = np.clip(gray - border_median(gray), 0.0, None)
    if ink.max() <= 1.0 / 255:
        raise ValueError(
            "no digit found: every pixel has the background's level; give an image with a "
            "digit drawn in a contrasting colour"
        )
    ink = ink / ink.max()

    rows = np.flatnonzero((ink > INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > INK_THRESHOLD).any(axis=0))
    patch = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    scale = BOX_SIZE / max(patch.shape)
    height = max(1, round(patch.shape[0] * scale))
    width = max(1, round(patch.shape[1] * scale))
    patch = _resize(patch, height, width)

    centre_row, centre_col = centre_of_mass(patch)
    # floor(x + 0.5) rounds halves up, the same way in both directions.
    top = min(max(math.floor(CENTRE - centre_row + 0.5), 0), MNIST_SIZE - height)
    left = min(max(math.floor(CENTRE - centre_col + 0.5), 0), MNIST_SIZE - width)
    field = np.zeros((MNIST_SIZE, MNIST_SIZE))
    field[top : top + height, left : left + width] = patch
    return np.round(field * 255).astype(np.uint8)
