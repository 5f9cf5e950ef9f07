"""Phone-photo-like pictures of MNIST digits: dark ink on paper under uneven lighting.

``lit_photo`` draws a digit (MNIST's white-on-black, 28x28) as dark ink on paper whose lighting
falls from ``high`` to ``low`` across the picture (a gradient at ``angle`` radians), optionally
darkened towards the corners (a vignette) or by a soft shadow, with camera noise: the case of
issue 14, where the shadow became ink.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

LIGHTINGS = {
    "even": {"low": 0.9, "high": 0.9},
    "gradient": {"low": 0.35, "high": 0.95},
    "strong gradient": {"low": 0.15, "high": 0.95, "angle": 0.7},
    "dim": {"low": 0.3, "high": 0.45, "noise": 0.01},
    "vignette": {"low": 0.9, "high": 0.9, "vignette": 0.6},
    "soft shadow": {"low": 0.9, "high": 0.9, "shadow": 0.5},
}


def lighting(
    height: int,
    width: int,
    *,
    low: float,
    high: float,
    angle: float = 0.0,
    vignette: float = 0.0,
    shadow: float = 0.0,
) -> np.ndarray:
    """The paper's brightness (H, W) in [0, 1]."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    along = y * np.sin(angle) + x * np.cos(angle)
    along = (along - along.min()) / (along.max() - along.min())
    light = high + (low - high) * along  # a linear gradient from high to low
    radius = (y - y.mean()) ** 2 + (x - x.mean()) ** 2
    light *= 1.0 - vignette * radius / radius.max()
    edge = (x + 0.3 * y - 0.45) / 0.04  # a shadow's soft edge, a few % of the picture wide
    return light * (1.0 - shadow / (1.0 + np.exp(-edge)))


def lit_photo(
    digit: np.ndarray,
    *,
    height: int = 600,
    width: int = 450,
    size: float = 0.5,
    ink: float = 0.85,
    noise: float = 0.02,
    seed: int = 0,
    **light: float,
) -> np.ndarray:
    """``digit`` (28, 28) uint8 as dark ink (absorbing ``ink`` of the light) on lit paper -> uint8
    (height, width); the digit's side is ``size`` of the height, in the middle."""
    side = int(size * height)
    strokes = np.zeros((height, width))
    big = Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR)
    top, left = (height - side) // 2, (width - side) // 2
    strokes[top : top + side, left : left + side] = np.asarray(big, dtype=np.float64) / 255
    noisy = lighting(height, width, **light) * (1.0 - ink * strokes)
    noisy += np.random.default_rng(seed).normal(0.0, noise, (height, width))
    return np.clip(np.round(noisy * 255), 0, 255).astype(np.uint8)
