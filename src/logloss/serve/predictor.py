"""The model behind the app: a checkpoint, the dataset splits it browses, their cached results."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from logloss.data import get_dataset, load_dataset
from logloss.insight.diagnostics import Evaluation, evaluate_logits
from logloss.insight.explain import explain
from logloss.serve.images import short_repr
from logloss.serve.schemas import InputError
from logloss.training.checkpoint import Checkpoint

BROWSE_SPLITS = ("train", "test")  # the dataset files the sample browser reads
MNIST_SHAPE = (28, 28)  # what logloss.data.preprocess.to_mnist makes and the page draws
# Fields of logloss.insight.explain.Explanation passed on by the API (see ``Prediction``).
RESPONSE_FIELDS = (
    "probabilities",
    "losses",
    "predicted",
    "p_predicted",
    "target",
    "p_target",
    "loss",
    "uniform_loss",
    "entropy",
)
MAX_SAMPLES = 200  # most samples one /api/samples answer lists (and rankings kept per split)


class Predictor:
    """A checkpoint plus lazily loaded dataset splits and their cached per-sample results."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        dataset: str,
        data_dir: str | Path | None = None,
    ) -> None:
        shape = tuple(checkpoint.model.architecture.input_shape)
        if shape != MNIST_SHAPE:
            raise ValueError(
                f"the checkpoint's model reads {'x'.join(map(str, shape))} images; the page and "
                "the API draw and preprocess 28x28 digits: serve a model trained on a 28x28 "
                "dataset (mnist, fashion-mnist, kmnist)"
            )
        info = get_dataset(dataset)  # ValueError naming the known datasets
        if tuple(info.image_shape) != MNIST_SHAPE:
            raise ValueError(
                f"dataset {dataset!r} has {'x'.join(map(str, info.image_shape))} images; the "
                "sample browser shows the model's 28x28 inputs: choose a 28x28 dataset "
                "(mnist, fashion-mnist, kmnist) or leave --dataset out (the checkpoint's own)"
            )
        self.checkpoint = checkpoint
        self.dataset = dataset
        self.data_dir = data_dir
        self.image_shape = MNIST_SHAPE
        self._lock = threading.Lock()
        self._splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._evaluations: dict[str, Evaluation] = {}
        # One forward pass now: fails early on a broken checkpoint and tells us C.
        self.num_classes = int(self.logits(np.zeros((1, *MNIST_SHAPE), np.uint8)).shape[1])

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits (N, C) float32 for uint8 images (N, H, W)."""
        return np.asarray(self.checkpoint.logits(images), dtype=np.float32)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(images (N, H, W) uint8, labels (N,)) of a split, loaded once."""
        if name not in BROWSE_SPLITS:
            raise InputError(
                f"unknown split {short_repr(name)}; use one of {list(BROWSE_SPLITS)}", 404
            )
        with self._lock:
            if name not in self._splits:
                try:
                    images, labels = load_dataset(
                        self.dataset, name, data_dir=self.data_dir, download=False
                    )
                except (OSError, ValueError) as error:
                    raise InputError(
                        f"the {self.dataset} {name} split is not available on this server "
                        f"({error}); start `logloss serve` with --data-dir pointing to it",
                        503,
                    ) from None
                self._splits[name] = (np.asarray(images), np.asarray(labels))
            return self._splits[name]

    def evaluation(self, name: str) -> Evaluation:
        """The model's results on every sample of a split (:mod:`logloss.insight.diagnostics`),
        computed once.

        Per sample i (arrays (N,)): ``losses[i] = -ln p_i(y_i)``, ``predicted[i]``,
        ``confidence[i] = p_i(predicted)``; ``hardest`` and ``confident_mistakes`` keep the top
        ``MAX_SAMPLES`` of each ranking.
        """
        images, labels = self.split(name)
        with self._lock:
            if name not in self._evaluations:
                try:
                    self._evaluations[name] = evaluate_logits(
                        self.logits(images), labels, top_k=MAX_SAMPLES
                    )
                except ValueError as error:  # e.g. labels beyond the model's classes
                    raise InputError(
                        f"the model cannot be evaluated on the {self.dataset} {name} split "
                        f"({error}); serve it with the dataset it was trained on",
                        503,
                    ) from None
            return self._evaluations[name]

    def breakdown(self, image: np.ndarray, target: int | None) -> dict[str, Any]:
        """The article's walkthrough for one uint8 image (H, W) as a JSON-ready dict."""
        logits = self.logits(image[None])[0]  # (C,) float32, as the model computed them
        result = explain(logits, target).to_dict()  # float64 from here on
        out = {key: result[key] for key in RESPONSE_FIELDS}
        out["logits"] = logits.tolist()
        out["input"] = image.tolist()
        return out
