"""The model behind the app: a checkpoint, the dataset splits it browses, their cached results."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from logloss.data import ENV_VAR, find_dataset, get_dataset, load_dataset
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
# What a damaged dataset file raises (gzip: OSError, EOFError, zlib.error; IDX: ValueError).
DATASET_ERRORS = (OSError, ValueError, EOFError, zlib.error)


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
        # ("split" or "evaluation", split name) -> the result, or why it failed (not retried)
        self._results: dict[tuple[str, str], Any] = {}
        self._failed: dict[tuple[str, str], str] = {}
        # One forward pass now: fails early on a broken checkpoint and tells us C.
        self.num_classes = int(self.logits(np.zeros((1, *MNIST_SHAPE), np.uint8)).shape[1])

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits (N, C) float32 for uint8 images (N, H, W); all finite, or a 503."""
        logits = np.asarray(self.checkpoint.logits(images), dtype=np.float32)
        bad = np.argwhere(~np.isfinite(logits))  # (K, 2) indices of NaN and infinities
        if len(bad):
            i, k = bad[0]
            raise InputError(
                f"the model's logits are not finite ({len(bad)} of {logits.size} values, e.g. "
                f"logits[{i}][{k}] = {logits[i, k]}): the checkpoint {self.checkpoint.directory} "
                "holds damaged weights; serve another checkpoint or train again",
                503,
            )
        return logits

    def browse_problem(self) -> str | None:
        """Why the sample browser cannot work (its files are not on this machine), or None."""
        if all(find_dataset(self.dataset, name, self.data_dir) for name in BROWSE_SPLITS):
            return None
        return (
            f"browsing samples is off: the {self.dataset} files are not on this machine "
            "(drawing works). To turn it on, restart with --data-dir DIR (DIR holding "
            f"{self.dataset}/), set {ENV_VAR}=DIR, or run `logloss data fetch {self.dataset}`"
        )

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(images (N, H, W) uint8, labels (N,)) of a split, read once."""
        if name not in BROWSE_SPLITS:
            raise InputError(
                f"unknown split {short_repr(name)}; use one of {list(BROWSE_SPLITS)}", 404
            )
        return self._once("split", name, lambda: self._read_split(name))

    def evaluation(self, name: str) -> Evaluation:
        """The model's results on every sample of a split (:mod:`logloss.insight.diagnostics`),
        computed once.

        Per sample i (arrays (N,)): ``losses[i] = -ln p_i(y_i)``, ``predicted[i]``,
        ``confidence[i] = p_i(predicted)``; ``hardest`` and ``confident_mistakes`` keep the top
        ``MAX_SAMPLES`` of each ranking.
        """
        images, labels = self.split(name)
        return self._once("evaluation", name, lambda: self._evaluate(name, images, labels))

    def _once(self, kind: str, name: str, compute: Callable[[], Any]) -> Any:
        """``compute()``'s result, computed once per (kind, name).  A failure (an InputError) is
        remembered: later calls get the same 503 without reading or computing again."""
        key = (kind, name)
        with self._lock:
            if key in self._failed:
                raise InputError(self._failed[key], 503)
            if key not in self._results:
                try:
                    self._results[key] = compute()
                except InputError as error:
                    self._failed[key] = str(error)
                    raise
            return self._results[key]

    def _read_split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        problem = self.browse_problem()
        if problem is not None:
            raise InputError(problem, 503)
        try:
            images, labels = load_dataset(
                self.dataset, name, data_dir=self.data_dir, download=False
            )
        except DATASET_ERRORS as error:
            raise InputError(
                f"browsing samples is off: the {self.dataset} {name} split cannot be read "
                f"({short_repr(str(error), 300)}); replace its files "
                f"(`logloss data fetch {self.dataset}`) and restart",
                503,
            ) from None
        return np.asarray(images), np.asarray(labels)

    def _evaluate(self, name: str, images: np.ndarray, labels: np.ndarray) -> Evaluation:
        logits = self.logits(images)  # (N, C), finite
        try:
            return evaluate_logits(logits, labels, top_k=MAX_SAMPLES)
        except ValueError as error:  # e.g. labels beyond the model's classes
            raise InputError(
                f"the model cannot be evaluated on the {self.dataset} {name} split "
                f"({error}); serve it with the dataset it was trained on",
                503,
            ) from None

    def breakdown(self, image: np.ndarray, target: int | None) -> dict[str, Any]:
        """The article's walkthrough for one uint8 image (H, W) as a JSON-ready dict."""
        logits = self.logits(image[None])[0]  # (C,) float32, as the model computed them
        result = explain(logits, target).to_dict()  # float64 from here on
        out = {key: result[key] for key in RESPONSE_FIELDS}
        out["logits"] = logits.tolist()
        out["input"] = image.tolist()
        return out
