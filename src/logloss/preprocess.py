"""Compatibility alias: earlier releases (and their docs) imported ``logloss.preprocess``; the code
lives in logloss.data.preprocess (see docs/architecture.md)."""

from logloss.data.preprocess import (
    BOX_SIZE,
    CENTRE,
    INK_THRESHOLD,
    LUMA,
    MNIST_SIZE,
    border_median,
    centre_of_mass,
    load_image,
    to_grayscale,
    to_mnist,
)

__all__ = [
    "BOX_SIZE",
    "CENTRE",
    "INK_THRESHOLD",
    "LUMA",
    "MNIST_SIZE",
    "border_median",
    "centre_of_mass",
    "load_image",
    "to_grayscale",
    "to_mnist",
]
