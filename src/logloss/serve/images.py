"""Images sent to the API: JSON gray levels or PNG bytes, validated before any work is done."""

from __future__ import annotations

import io
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import numpy as np

from logloss.data.preprocess import to_mnist
from logloss.serve.limits import ServeLimits
from logloss.serve.schemas import InputError, PredictRequest

SEND_PNG = "send a PNG file with Content-Type image/png"
# What Pillow raises on a file it cannot read (DecompressionBombError is none of these).
UNREADABLE = (OSError, SyntaxError, ValueError, EOFError)


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
    unknown = [key for key in value if key not in PredictRequest.model_fields]
    if unknown:
        named = ", ".join(short_repr(key) for key in unknown[:3])
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise InputError(
            f"unknown field(s) {named}{more}; allowed: {sorted(PredictRequest.model_fields)}"
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


def _open_png(body: bytes, limits: ServeLimits) -> Any:
    """A ``PIL.Image`` opened from PNG bytes, its header read and its size checked: nothing
    is decoded yet.  415 if it is not a PNG, 413 if it has too many pixels."""
    from PIL import Image  # Pillow loads in ~0.1 s: only for PNG bodies

    try:
        image = Image.open(io.BytesIO(body), formats=["PNG"])  # reads the header only
    except UNREADABLE:
        raise InputError(f"the body is not a readable PNG image; {SEND_PNG}", 415) from None
    width, height = image.size
    if max(width, height) > limits.max_png_side or width * height > limits.max_png_pixels:
        image.close()
        raise InputError(
            f"the PNG is {width}x{height} pixels; send one of at most {limits.max_png_pixels} "
            f"pixels and {limits.max_png_side} a side (a 280x280 drawing is plenty)",
            413,
        )
    return image


def image_from_png(body: bytes, limits: ServeLimits) -> np.ndarray:
    """Decode PNG bytes to an RGBA array (h, w, 4) uint8 with ``max(h, w) <= work_side``, for
    :func:`logloss.data.preprocess.to_mnist`.

    The size is checked from the header before decoding, so a small file that would inflate to
    gigabytes (a "pixel bomb") is refused without being decoded.  A picture larger than
    ``work_side`` is reduced by the whole factor ``k = ceil(max(H, W) / work_side)``: each
    output pixel is the mean of a k x k block, averaged with premultiplied alpha (Pillow's
    ``reduce``), so a transparent background stays paper.  Memory: the decoded picture (at
    most 4 bytes per pixel), its RGBA conversion if it was another mode, the premultiplied copy.
    """
    with _open_png(body, limits) as image:
        try:
            image.load()
            rgba = image if image.mode == "RGBA" else image.convert("RGBA")
            factor = math.ceil(max(rgba.size) / limits.work_side)
            if factor > 1:
                rgba = rgba.reduce(factor)
            return np.asarray(rgba, dtype=np.uint8)
        except UNREADABLE:
            raise InputError(f"the body is not a readable PNG image; {SEND_PNG}", 415) from None


class DecodeSlots:
    """At most ``limits.max_decodes`` PNG requests decoded at once; the others wait up to
    ``limits.decode_wait_s`` for a slot, then get 503 with Retry-After.

    Waiting happens on the event loop (no worker thread is held), and anyio's semaphore gives
    a slot back when a waiting request is cancelled.
    """

    def __init__(self, limits: ServeLimits) -> None:
        self._slots = anyio.Semaphore(limits.max_decodes)
        self._count = limits.max_decodes
        self._wait_s = limits.decode_wait_s

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold one slot for the body of the ``async with``."""
        acquired = False
        with anyio.move_on_after(self._wait_s):
            await self._slots.acquire()
            acquired = True
        if not acquired:
            raise InputError(
                f"the server is decoding {self._count} other pictures and none finished within "
                f"{self._wait_s:g} s; try again in a moment",
                503,
                retry_after_s=1,
            )
        try:
            yield
        finally:
            self._slots.release()


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
