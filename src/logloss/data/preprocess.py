"""Turn a user's picture of a digit into a 28x28 image the way MNIST was made.

LeCun, Cortes and Burges describe MNIST's digits as size-normalised to fit a 20x20 box keeping
their aspect ratio (anti-aliased, hence the gray levels), then centred in a 28x28 field by their
centre of mass.  ``to_mnist`` does the same to any grayscale or colour image, after separating
the ink from paper that a phone photo shows unevenly lit (a gradient, a vignette, a soft shadow):

1. grayscale in [0, 1] (ITU-R 601 luma for colour), reduced to at most 256 pixels a side;
2. white ink on black: invert when the ink is darker than the paper, whose level is a smooth
   surface fitted to the picture's frame (:func:`ink_is_dark`);
3. subtract the local background, a grey *opening* (minimum, then maximum, over a square a third
   of the picture wide): it removes strokes narrower than the square and keeps the lighting, which
   varies slowly; then subtract the paper's noise level and stretch so that the ink's median
   is full strength, as in MNIST's saturated strokes (:func:`ink_map`);
4. crop to the bounding box of the ink (the rows and columns holding a visible share of it,
   next to each other: a speck of noise at the edge does not count);
5. resize so that the longer side is 20 pixels, keeping the aspect ratio;
6. paste into 28x28 so that the centre of mass sum(i * v) / sum(v) lands on pixel (14, 14),
   the same place as in MNIST itself (its mean centre of mass, in array indices, is (14.0, 14.0)).

A shadow with a hard edge across the digit is not lighting that varies slowly: its edge can
survive as ink.
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
LINE_FRACTION = 0.02  # ... in rows and columns holding at least this share of the fullest one
GAP_DIVISOR = 8  # ... and not cut off from the digit by more than 1/8 of the picture
WORK_SIDE = 256  # larger pictures are reduced to this longer side first (bounded work)
BACKGROUND_DIVISOR = 3  # the opening's square: a third of the longer side, wider than a stroke
NOISE_MADS = 3.0  # paper noise: median + 3 scaled median absolute deviations of the residual
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


def _reduce(gray: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """``gray`` (H, W) shrunk so that its longer side is at most ``side`` (aspect kept)."""
    scale = side / max(gray.shape)
    if scale >= 1.0:
        return gray
    return _resize(gray, max(1, round(gray.shape[0] * scale)), max(1, round(gray.shape[1] * scale)))


def _running(line: np.ndarray, size: int, axis: int, extreme: np.ufunc) -> np.ndarray:
    """``extreme`` (np.minimum or np.maximum) over every ``size`` consecutive entries along
    ``axis``: length m -> m - size + 1, in O(m) whatever ``size`` (van Herk / Gil-Werman).

    Cut the line into blocks of ``size``; within each block take the running extreme from the
    left (prefix) and from the right (suffix).  A window starting at i spans at most two
    blocks, so its extreme is extreme(suffix[i], prefix[i + size - 1]).
    """
    x = np.moveaxis(line, axis, 0)  # (m, ...): accumulating over a leading axis is vectorised
    m = x.shape[0]
    n_out, n_blocks = m - size + 1, -(-m // size)
    identity = np.inf if extreme is np.minimum else -np.inf
    padded = np.full((n_blocks * size, *x.shape[1:]), identity, dtype=np.float64)
    padded[:m] = x
    blocks = padded.reshape(n_blocks, size, *x.shape[1:])
    prefix = extreme.accumulate(blocks, axis=1).reshape(padded.shape)
    suffix = extreme.accumulate(blocks[:, ::-1], axis=1)[:, ::-1].reshape(padded.shape)
    out = extreme(suffix[:n_out], prefix[size - 1 : size - 1 + n_out])
    return np.moveaxis(out, 0, axis)


def _sliding(
    image: np.ndarray, size: int, extreme: np.ufunc, bounds: tuple[float, float]
) -> np.ndarray:
    """``extreme`` (np.minimum or np.maximum) over a ``size x size`` square around each pixel.

    Separable: rows, then columns, each a running extreme (:func:`_running`).  The borders are
    padded by odd reflection (``2 f(edge) - f(mirror)``), which continues a linear gradient
    instead of folding it, clipped to ``bounds`` (the original picture's range) so that a stroke
    near the border cannot reflect into a value no pixel has.
    """
    low, high = bounds
    for axis in (0, 1):
        before = size // 2
        padding = [(0, 0), (0, 0)]
        padding[axis] = (before, size - 1 - before)
        padded = np.clip(np.pad(image, padding, mode="reflect", reflect_type="odd"), low, high)
        image = _running(padded, size, axis, extreme)
    return image


def background(gray: np.ndarray) -> np.ndarray:
    """The grey opening of ``gray`` (light ink on dark paper): ``max(min(gray))`` over squares
    of side ``max(H, W) / 3`` (made odd, so that the square is centred) -> (H, W).

    The opening removes bright structures narrower than the square (the strokes) and keeps any
    monotone variation, such as a lighting gradient, exactly.

    >>> ramp = np.linspace(0.0, 0.5, 32)[None, :].repeat(32, axis=0)
    >>> bool(np.allclose(background(ramp), ramp))
    True
    """
    size = max(3, max(gray.shape) // BACKGROUND_DIVISOR) | 1
    bounds = (float(gray.min()), float(gray.max()))
    return _sliding(_sliding(gray, size, np.minimum, bounds), size, np.maximum, bounds)


def _paper_level(gray: np.ndarray) -> np.ndarray:
    """The quadratic surface in (row, col) fitted by least squares to the pixels of the
    picture's outer frame (the paper around the digit) -> (H, W): the paper's level under a
    lighting gradient or a vignette."""
    height, width = gray.shape
    scale = max(height, width)  # coordinates in [0, 1]: a well-posed fit
    frame = np.zeros(gray.shape, dtype=bool)
    frame[[0, -1], :] = frame[:, [0, -1]] = True
    r, c = (index / scale for index in np.nonzero(frame))  # (F,) each, row-major as gray[frame]
    design = np.stack([np.ones_like(r), r, c, r * r, r * c, c * c], axis=1)  # (F, 6)
    k = np.linalg.lstsq(design, gray[frame], rcond=None)[0]
    rows = np.arange(height)[:, None] / scale  # (H, 1)
    cols = np.arange(width)[None, :] / scale  # (1, W)
    return (
        k[0]
        + k[1] * rows
        + k[2] * cols
        + k[3] * rows * rows
        + k[4] * rows * cols
        + (k[5] * cols * cols)
    )


def ink_is_dark(gray: np.ndarray) -> bool:
    """Whether the ink is darker than its paper: the far tail (0.2%) of ``gray`` minus the
    paper's level (:func:`_paper_level`) reaches further below 0 than above.  Unlike the
    brightness of the border alone, this holds under a lighting gradient and in a dim photo.

    >>> paper = np.linspace(0.9, 0.4, 40)[None, :].repeat(40, axis=0)  # a lighting gradient
    >>> paper[10:30, 18:22] -= 0.3  # a dark stroke
    >>> ink_is_dark(paper), ink_is_dark(1.0 - paper)
    (True, False)
    """
    low, high = np.percentile(gray - _paper_level(gray), [0.2, 99.8])
    return bool(-low > high)


def ink_map(gray: np.ndarray) -> np.ndarray:
    """Light ink on dark paper (H, W) -> the ink alone, in [0, 1].

    ``residual = gray - background(gray)`` is 0 on paper up to noise; the paper's noise level
    (median + 3 scaled MADs of the residual, since paper is most of the picture) is subtracted.
    The rest is stretched so that the median of the visible ink (above ``INK_THRESHOLD`` of the
    strongest) is 1, and clipped there: MNIST's strokes are saturated at their core, and a
    shadow across the digit must not leave half of it faint.
    """
    residual = gray - background(gray)
    median = np.median(residual)
    spread = 1.4826 * np.median(np.abs(residual - median))  # the MAD as a standard deviation
    ink = np.clip(residual - (median + NOISE_MADS * spread), 0.0, None)
    if ink.max() <= 1.0 / 255:
        raise ValueError(
            "no digit found: every pixel has the background's level; give an image with a "
            "digit drawn in a contrasting colour"
        )
    visible = ink[ink > INK_THRESHOLD * ink.max()]
    return np.clip(ink / np.median(visible), 0.0, 1.0)


def _main_run(profile: np.ndarray) -> slice:
    """The span of the heaviest group of lines (rows or columns) of a (N,) ink profile.

    Lines holding at least ``LINE_FRACTION`` of the fullest one count; groups are separated by
    more than ``N / GAP_DIVISOR`` empty lines, so a stroke drawn apart stays with its digit
    while a speck of noise or lighting at the picture's edge does not stretch the box.
    """
    lines = np.flatnonzero(profile >= LINE_FRACTION * profile.max())
    groups = np.split(lines, np.flatnonzero(np.diff(lines) > len(profile) // GAP_DIVISOR) + 1)
    heaviest = max(groups, key=lambda group: profile[group].sum())
    return slice(int(heaviest[0]), int(heaviest[-1]) + 1)


def ink_box(ink: np.ndarray) -> tuple[slice, slice]:
    """The (rows, columns) slices of the ink's bounding box: pixels above ``INK_THRESHOLD``,
    in the heaviest group of rows and of columns (:func:`_main_run`).

    >>> ink = np.zeros((40, 40)); ink[10:30, 15:20] = 1.0; ink[39, 0] = 0.5  # a speck
    >>> ink_box(ink)
    (slice(10, 30, None), slice(15, 20, None))
    """
    strong = np.where(ink > INK_THRESHOLD, ink, 0.0)
    return _main_run(strong.sum(axis=1)), _main_run(strong.sum(axis=0))


def to_mnist(image: np.ndarray) -> np.ndarray:
    """Size-normalise and centre one digit the way MNIST was made -> uint8 (28, 28).

    White ink on black, the lighting removed (see the module's steps); the ink's bounding box
    scaled so its longer side is 20 pixels (aspect kept); centre of mass moved to (14, 14) by a
    whole-pixel shift (kept inside the field).

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
    gray = _reduce(to_grayscale(image))
    if ink_is_dark(gray):  # MNIST is white ink on black: invert dark-on-light paper
        gray = 1.0 - gray
    ink = ink_map(gray)
    patch = ink[ink_box(ink)]

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
