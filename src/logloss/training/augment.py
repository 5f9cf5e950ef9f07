"""On-device data augmentation: a random affine map plus an elastic warp per sample."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from logloss.training.config import TrainConfig


def augment(
    x: torch.Tensor,
    input_shape: tuple[int, int],
    background: float,
    config: TrainConfig,
    generator: torch.Generator,
    *,
    rows: slice = slice(None),
    batch: int | None = None,
) -> torch.Tensor:
    """Distort a batch of images on the device: random affine map plus an elastic warp.

    Each sample gets a rotation in ±rotation degrees, a scale in 1 ± scale, a shift in ±shift
    pixels, and a smooth displacement field (a 4x4 grid of N(0, elastic²) pixel offsets,
    bicubically upsampled) in the spirit of Simard et al. (2003); pixels are resampled
    bilinearly, with the background filling what moves in from outside.  The random numbers
    come from ``generator`` on the CPU, so every device sees the same distortions.

    Under several processes ``x`` is a rank's ``rows`` of a global batch of ``batch`` samples:
    every rank draws the numbers of the whole global batch from the same generator and distorts
    its own rows with them, so the distortions do not depend on the number of processes.

    Args:
        x: normalised inputs (B, H*W).
        input_shape: (H, W).
        background: the normalised value of a blank pixel, ``-mean / std``.
        rows, batch: which rows of how large a global batch ``x`` is (default: all of ``x``).

    Returns:
        distorted inputs (B, H*W).
    """
    b = len(x)
    drawn = b if batch is None else batch
    height, width = input_shape
    # (B, 4) uniform and (B, 2, 4, 4) normal numbers, in that order, for the global batch.
    u = torch.rand(drawn, 4, generator=generator)[rows] * 2 - 1
    angle = u[:, 0] * math.radians(config.augment_rotation)
    scale = 1 + u[:, 1] * config.augment_scale
    shift = u[:, 2:4] * config.augment_shift
    elastic = torch.randn(drawn, 2, 4, 4, generator=generator)[rows] * config.augment_elastic
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # Grid coordinates span [-1, 1] over the image: one pixel is 2 / size.
    theta = torch.stack(
        [
            torch.stack([cos, -sin, shift[:, 0] * (2 / width)], 1),
            torch.stack([sin, cos, shift[:, 1] * (2 / height)], 1),
        ],
        1,
    ).to(x.device)  # (B, 2, 3)
    grid = F.affine_grid(theta, [b, 1, height, width], align_corners=False)  # (B, H, W, 2)
    field = elastic.to(x.device) * torch.tensor([2 / width, 2 / height], device=x.device).view(
        1, 2, 1, 1
    )
    field = F.interpolate(field, size=(height, width), mode="bicubic", align_corners=False)
    grid = grid + field.permute(0, 2, 3, 1)
    # Resample around the background so that zero padding means "blank paper".
    images = x.view(b, 1, height, width) - background
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped.view(b, -1) + background
