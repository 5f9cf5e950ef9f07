"""Show a dataset image: as text art for a terminal, or as a PNG file (written atomically)."""

from __future__ import annotations

import io
import os

import numpy as np

from logloss._atomic import atomic_write

__all__ = ["image_to_text", "png_bytes", "save_png"]

# Dark to bright; ten levels of 0..255 each (value * 10 // 256).
_RAMP = " .:-=+*#%@"


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(
            f"expected one uint8 image of shape (H, W), got {image.dtype} {image.shape}"
        )
    return image


def image_to_text(image: np.ndarray, *, width: int = 2) -> str:
    """Render a uint8 image as text, one line per row, ``width`` characters per pixel.

    A pixel of value v becomes ``" .:-=+*#%@"[v * 10 // 256]``; two characters per pixel keep a
    square pixel roughly square in a terminal font.

    Args:
        image: uint8 (H, W), 0 black .. 255 white (MNIST's ink is bright).
        width: characters per pixel.

    Returns:
        H lines of W * width characters, joined by newlines.

    >>> print(image_to_text(np.array([[0, 255], [128, 30]], dtype=np.uint8), width=1))
     @
    +.
    """
    image = _check_image(image)
    ramp = np.array(list(_RAMP))
    cells = np.repeat(ramp[image.astype(np.intp) * len(_RAMP) // 256], width, axis=1)
    return "\n".join("".join(row) for row in cells)


def png_bytes(image: np.ndarray, *, scale: int = 1, invert: bool = False) -> bytes:
    """Encode a uint8 image as an 8-bit grayscale PNG, each pixel a ``scale`` x ``scale`` block.

    The enlarged image is ``kron(v, ones((scale, scale)))`` (nearest neighbour), with
    ``v = 255 - image`` when ``invert`` (dark ink on white, for MNIST's bright ink) else ``image``.

    Args:
        image: uint8 (H, W).
        scale: integer magnification, 1 to 64.
        invert: store ``255 - image``.

    Returns:
        the PNG file's bytes, an (H * scale, W * scale) image of mode "L".

    >>> from PIL import Image
    >>> import io
    >>> png = png_bytes(np.array([[0, 255]], dtype=np.uint8), scale=2, invert=True)
    >>> with Image.open(io.BytesIO(png)) as decoded:
    ...     np.asarray(decoded).tolist()
    [[255, 255, 0, 0], [255, 255, 0, 0]]
    """
    image = _check_image(image)
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= 64:
        raise ValueError(f"scale must be an integer from 1 to 64, got {scale!r}")
    from PIL import Image  # Pillow: only when a PNG is written

    if invert:
        image = 255 - image  # uint8 stays uint8: 255 - v never wraps
    pixels = np.kron(image, np.ones((scale, scale), dtype=np.uint8))  # 2-D uint8 is mode "L"
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(path: str | os.PathLike[str], image: np.ndarray, *, scale: int = 1) -> None:
    """Write a uint8 image as an 8-bit grayscale PNG, each pixel a ``scale`` x ``scale`` block.

    The file appears complete or not at all (temporary file beside it, then renamed).

    Args:
        path: the PNG file to write.
        image: uint8 (H, W).
        scale: integer magnification, 1 to 64 (see :func:`png_bytes`).
    """
    data = png_bytes(image, scale=scale)  # encode first: a bad image leaves nothing behind
    with atomic_write(path) as handle:
        handle.write(data)
