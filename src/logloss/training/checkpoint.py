"""A trained (or initial) model loaded from a run folder, ready for inference."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from logloss.training.config import TrainConfig
from logloss.training.devices import pick_device
from logloss.training.evaluation import Score, evaluate_model
from logloss.training.model import Architecture, DenseNet
from logloss.training.run_folder import (
    METADATA_FILE,
    WEIGHT_FILES,
    load_weights,
    read_metadata,
    require_fields,
)
from logloss.training.splits import Normalization

# what checkpoint.json must hold for a model to be loaded (each is validated by read_metadata)
REQUIRED_FIELDS = ("architecture", "config", "normalization", "classes")


@dataclass
class Checkpoint:
    """A trained (or initial) model loaded from a run directory, ready for inference.

    Attributes:
        model: the :class:`~logloss.training.model.DenseNet`, in eval mode, on ``device``;
            it outputs logits.
        config: the run's :class:`~logloss.training.config.TrainConfig`.
        metadata: the whole ``checkpoint.json``.
        which: ``"best"``, ``"last"`` or ``"initial"``.
    """

    model: DenseNet
    config: TrainConfig
    metadata: dict[str, Any]
    directory: Path
    which: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def normalization(self) -> Normalization:
        return Normalization(**self.metadata["normalization"])

    @property
    def classes(self) -> list[str]:
        """Class names (``"0"``..``"9"`` for MNIST)."""
        return [str(c) for c in self.metadata["classes"]]

    def inputs(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images (N, H, W) -> normalised float32 tensor on the model's device."""
        array = np.asarray(images)
        shape = tuple(self.model.architecture.input_shape)
        if array.shape[1:] != shape and not (
            array.ndim == 2 and array.shape[1] == self.model.architecture.input_size
        ):
            raise ValueError(
                f"images must have shape (N, {', '.join(map(str, shape))}) for this checkpoint, "
                f"got {array.shape}"
            )
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise ValueError(f"images must be uint8 pixels 0..255, got dtype {array.dtype}")
        return self.normalization.apply(torch.from_numpy(np.ascontiguousarray(array))).to(
            self.device
        )

    @torch.no_grad()
    def logits(self, images: np.ndarray, *, batch_size: int = 4096) -> np.ndarray:
        """Logits for uint8 images (N, H, W) -> float32 (N, C); saved normalisation applied."""
        pixels = np.asarray(images)
        chunks = [
            self.model(self.inputs(pixels[start : start + batch_size])).float().cpu().numpy()
            for start in range(0, len(pixels), batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.model.architecture.num_classes), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> Score:
        """Accuracy and mean cross-entropy (natural log) on uint8 images and their labels."""
        labels = np.asarray(labels)
        if labels.shape != (len(images),):
            raise ValueError(
                f"labels must have shape ({len(images)},) to match the images, got {labels.shape}"
            )
        target = torch.from_numpy(labels.astype(np.int64)).to(self.device)
        return evaluate_model(self.model, self.inputs(images), target)


def load_checkpoint(
    directory: str | os.PathLike[str],
    *,
    which: str = "best",
    device: str | torch.device = "cpu",
) -> Checkpoint:
    """Load the ``which`` weights of a run directory into a fresh model (eval mode).

    Everything is checked before it is used (see docs/training.md, "What is validated"):
    ``checkpoint.json`` (size, depth, every field), then the weights file's header against the
    architecture (names, shapes, float32) before its tensors are read, its SHA-256 when
    ``checkpoint.json`` records one, and its values (no NaN, no infinity).

    Args:
        directory: the ``--out`` folder of a ``logloss train`` run.
        which: ``"best"`` (best validation accuracy), ``"last"`` or ``"initial"`` (untrained).
        device: where to put the model (``"auto"`` picks CUDA, MPS, then CPU).

    Raises:
        ValueError: not a checkpoint directory, a missing or damaged file, or weights that do not
            fit the saved architecture.
    """
    if which not in WEIGHT_FILES:
        raise ValueError(f"which must be one of {sorted(WEIGHT_FILES)}, got {which!r}")
    directory = Path(directory)
    metadata = read_metadata(directory)
    require_fields(metadata, directory / METADATA_FILE, REQUIRED_FIELDS)
    architecture = Architecture.from_dict(metadata["architecture"])
    path = directory / WEIGHT_FILES[which]
    if not path.is_file():
        raise ValueError(
            f"{path} does not exist: the run has no {which!r} weights yet (an epoch saves "
            "'last' and 'best'); choose another with which=/--which"
        )
    digest = metadata.get("sha256", {}).get(path.name)  # None in checkpoints before hashes
    state, _ = load_weights(path, architecture=architecture, sha256=digest)
    model = DenseNet(architecture)
    model.load_state_dict(state)
    target = pick_device(str(device)) if not isinstance(device, torch.device) else device
    model.to(target).eval()
    return Checkpoint(
        model=model,
        config=TrainConfig.from_dict(metadata["config"]),
        metadata=metadata,
        directory=directory,
        which=which,
        device=target,
    )
