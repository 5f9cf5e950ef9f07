"""Images sent to the API: JSON gray levels or PNG bytes, validated before any work is done."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from logloss.data.preprocess import to_mnist
from logloss.serve.schemas import InputError, PredictRequest

MAX_PNG_SIDE = 4096  # pixels; checked from the PNG header before decoding (decompression bombs)


def _reject_constant(name: str) -> float:
    raise InputError(
        f"the JSON body contains {name}; gray levels must be finite integers 0-255",
    )


def parse_json_body(body: bytes) -> dict[str, Any]:
    """Decode a JSON object; NaN/Infinity and non-objects are input errors."""
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except InputError:
        raise
    except (ValueError, RecursionError) as error:  # bad syntax or UTF-8, 5000-digit ints, nesting
        raise InputError(f'the body is not valid JSON ({error}); send {{"image": ...}}') from None
    if not isinstance(value, dict):
        raise InputError(f"the JSON body must be an object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(PredictRequest.model_fields))
    if unknown:
        raise InputError(
            f"unknown field(s) {unknown}; allowed: {sorted(PredictRequest.model_fields)}"
        )
    if "image" not in value:
        raise InputError('the JSON body needs "image": 28 rows of 28 gray levels 0-255')
    return value


def short_repr(value: object, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters (a 400-digit integer stays readable).

    >>> short_repr(10**50, limit=12)
    '100000000...'
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def gray_image_from_json(value: Any, shape: tuple[int, int]) -> np.ndarray:
    """Validate nested lists of gray levels and return them as uint8 of ``shape``.

    Args:
        value: ``shape[0]`` lists of ``shape[1]`` integers in 0..255 (floats allowed only when
            integral, e.g. ``3.0``; booleans are not numbers here).
        shape: (rows, columns) expected.

    Returns:
        np.ndarray uint8 of ``shape``.

    >>> gray_image_from_json([[0, 255], [7.0, 1]], (2, 2)).tolist()
    [[0, 255], [7, 1]]
    """
    rows, columns = shape
    expected = f"{rows} rows of {columns} gray levels 0-255"
    if not isinstance(value, list) or len(value) != rows:
        got = f"{len(value)} rows" if isinstance(value, list) else type(value).__name__
        raise InputError(f"image must be {expected}; got {got}")
    out = np.empty(shape, dtype=np.uint8)
    for i, row in enumerate(value):
        if not isinstance(row, list) or len(row) != columns:
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise InputError(f"image row {i} must have {columns} gray levels; got {got}")
        for j, level in enumerate(row):
            if isinstance(level, bool) or not isinstance(level, (int, float)):
                raise InputError(
                    f"image[{i}][{j}] = {level!r} is not a number; gray levels are integers 0-255"
                )
            # Range first: math.isfinite(10**400) raises OverflowError (JSON ints are unbounded).
            in_range = 0 <= level <= 255
            if not in_range or (isinstance(level, float) and not level.is_integer()):
                raise InputError(
                    f"image[{i}][{j}] = {short_repr(level)} is not a gray level; use integers "
                    "0-255 (0 = background, 255 = ink, as in MNIST)"
                )
            out[i, j] = int(level)
    return out


def image_from_png(body: bytes) -> np.ndarray:
    """Decode PNG bytes to an RGBA array (H, W, 4) uint8, for
    :func:`logloss.data.preprocess.to_mnist`.

    The size is checked from the header before decoding, so a small file that would inflate to
    gigabytes (a "decompression bomb") is refused without being decoded.
    """
    from PIL import Image, UnidentifiedImageError  # Pillow loads in ~0.1 s: only for PNG bodies

    unreadable = (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    )
    message = "the body is not a readable PNG image; send a PNG file with Content-Type image/png"
    try:
        image = Image.open(io.BytesIO(body))  # reads the header only
    except unreadable:
        raise InputError(message, 415) from None
    with image:
        if image.format != "PNG":
            raise InputError(f"the body is a {image.format} image; send a PNG", 415)
        width, height = image.size
        if max(width, height) > MAX_PNG_SIDE:
            raise InputError(
                f"the PNG is {width}x{height} pixels; send one at most "
                f"{MAX_PNG_SIDE}x{MAX_PNG_SIDE}",
                413,
            )
        try:
            return np.asarray(image.convert("RGBA"), dtype=np.uint8)
        except unreadable:
            raise InputError(message, 415) from None


def mnist_like(image: np.ndarray) -> np.ndarray:
    """MNIST preprocessing (:func:`logloss.data.preprocess.to_mnist`); its ValueError (e.g. a
    blank image) becomes an input error."""
    try:
        return to_mnist(image)
    except ValueError as error:
        raise InputError(f"cannot preprocess the image: {error}") from None


def check_target(target: Any, num_classes: int) -> int | None:
    """``None`` or a class index in 0..num_classes-1 (booleans and floats are rejected)."""
    if target is None:
        return None
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < num_classes:
        raise InputError(
            f"target = {short_repr(target)} is not a class; "
            f"use an integer 0-{num_classes - 1} or omit it"
        )
    return target
