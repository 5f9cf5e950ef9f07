"""A run's data: its train/validation/test split, in one place, and the pixel normalisation.

Training carves the validation set out of the dataset's training file with the run's own
``validation_size`` and ``seed``; everything that looks at a run later (``evaluate``, ``explain``,
``report``, ``serve``) asks :func:`run_arrays` for the same split, so "validation" always means
the samples that training validated on.

Normalisation: ``x = (pixel / 255 - mean) / std`` with the mean and standard deviation of the
training part's pixels (:func:`pixel_normalization`), saved with the checkpoint.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from logloss.data import get_dataset, load_dataset, split_train_validation
from logloss.training.config import TrainConfig

RUN_SPLITS = ("train", "validation", "test")  # "train" is the training file less validation


class Normalization(NamedTuple):
    """x = (pixel / divide_by - mean) / std, with mean and std of the training images."""

    mean: float
    std: float
    divide_by: float = 255.0

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (or real) pixels (N, ...) -> float32 normalised inputs, same shape.

        >>> Normalization(0.5, 0.25).apply(torch.tensor([0, 255], dtype=torch.uint8))
        tensor([-2.,  2.])
        """
        return (pixels.to(torch.float32) / self.divide_by - self.mean) / self.std

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std, "divide_by": self.divide_by}


def pixel_normalization(images: np.ndarray) -> Normalization:
    """Mean and (population) standard deviation of uint8 pixels scaled to [0, 1], in float64.

    From the 256-bin histogram ``n_v`` (no float copy of the images):
    ``mean = sum_v n_v (v / 255) / N``, ``std = sqrt(sum_v n_v (v / 255 - mean)^2 / N)``, the
    same as ``np.mean``/``np.std`` of ``images / 255`` up to float64 rounding.

    Args:
        images: uint8 pixels, any shape, at least one.

    >>> pixel_normalization(np.array([[0, 255], [255, 255]], dtype=np.uint8))
    Normalization(mean=0.75, std=0.4330127018922193, divide_by=255.0)
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.size == 0:
        raise ValueError(
            f"need uint8 pixels (at least one) for the normalisation, got {images.dtype} "
            f"of shape {images.shape}"
        )
    # (256,) exact counts; torch's bincount reads uint8 directly (NumPy's first widens to int64)
    pixels = torch.from_numpy(np.ascontiguousarray(images)).view(-1)
    counts = torch.bincount(pixels, minlength=256).double().numpy()
    values = np.arange(256, dtype=np.float64) / 255.0
    n = float(images.size)
    mean = float(counts @ values) / n
    std = math.sqrt(float(counts @ np.square(values - mean)) / n)
    return Normalization(mean=mean, std=std)


def run_arrays(
    config: TrainConfig,
    splits: Sequence[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The images (N, H, W) uint8 and labels (N,) of each of ``splits`` as the run saw them.

    ``"validation"`` and ``"train"`` are the two parts of the dataset's training file, carved
    with ``config.validation_size`` and ``config.seed``; asking for both reads that file once and
    splits it once.

    Returns:
        ``{split: (images, labels)}`` for each distinct name in ``splits``.
    """
    for split in splits:
        if split not in RUN_SPLITS:
            raise ValueError(f"split must be one of {', '.join(RUN_SPLITS)}, got {split!r}")
    loaded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if "test" in splits:
        loaded["test"] = load_dataset(config.dataset, "test", data_dir=data_dir, download=download)
    if "train" in splits or "validation" in splits:
        images, labels = load_dataset(config.dataset, "train", data_dir=data_dir, download=download)
        train_x, train_y, val_x, val_y = split_train_validation(
            images, labels, validation_size=config.validation_size, seed=config.seed
        )
        parts = {"train": (train_x, train_y), "validation": (val_x, val_y)}
        loaded.update({name: parts[name] for name in parts if name in splits})
    return loaded


@dataclass
class DeviceSplits:
    """Train/validation/test inputs, normalised once, flattened (N, H*W), on the device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    input_shape: tuple[int, ...]
    classes: tuple[str, ...]
    normalization: Normalization

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "validation": len(self.val_y), "test": len(self.test_y)}

    def validation_image(self, index: int = 0) -> np.ndarray:
        """A validation sample's uint8 pixels (H, W), undoing the normalisation (for display)."""
        n = self.normalization
        x = self.val_x[index].cpu().double() * n.std + n.mean
        pixels = np.clip(np.round(x.numpy() * n.divide_by), 0, 255)
        return pixels.astype(np.uint8).reshape(self.input_shape)


def device_splits(
    config: TrainConfig,
    device: torch.device,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> DeviceSplits:
    """The run's three splits (:func:`run_arrays`), normalised once, moved to ``device``."""
    arrays = run_arrays(config, RUN_SPLITS, data_dir=data_dir, download=download)
    train_images = arrays["train"][0]
    normalization = pixel_normalization(train_images)

    def inputs(x: np.ndarray) -> torch.Tensor:  # uint8 (N, H, W) -> float32 (N, H*W)
        flat = torch.from_numpy(np.ascontiguousarray(x).reshape(len(x), -1))
        return normalization.apply(flat.to(device))

    def targets(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64)).to(device)

    return DeviceSplits(
        train_x=inputs(train_images),
        train_y=targets(arrays["train"][1]),
        val_x=inputs(arrays["validation"][0]),
        val_y=targets(arrays["validation"][1]),
        test_x=inputs(arrays["test"][0]),
        test_y=targets(arrays["test"][1]),
        input_shape=tuple(train_images.shape[1:]),
        classes=tuple(str(c) for c in get_dataset(config.dataset).classes),
        normalization=normalization,
    )
