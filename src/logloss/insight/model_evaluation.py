"""``logloss.evaluate_model``: any ``torch.nn.Module`` over any iterable of ``(inputs, labels)``
batches, streamed through the same accumulators as a predictions file.

Each batch's logits are scored and dropped (``keep_logits=True`` keeps them, as float32 on the
CPU, for the caller); memory is one batch plus the accumulators.  The model runs under
``torch.inference_mode()`` in eval mode, and is put back in train mode if it was.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from logloss.insight.accumulators import DEFAULT_TOP_K, WORST_FRACTION
from logloss.insight.binning import DEFAULT_BINS
from logloss.insight.blocks import RawBlock
from logloss.insight.labels import Classes, to_indices
from logloss.insight.prediction_evaluation import evaluate_reading, read_source
from logloss.insight.result import EvaluationResult
from logloss.training.devices import pick_device


@dataclass
class ModelBatches:
    """A model over a loader as a predictions source: logits (n, C) float32 block by block.

    The row count is ``len(loader.dataset)`` when the loader has one (the worst share is then
    kept in O(k) memory), else None: unknown until the end, and every loss is kept.
    """

    model: torch.nn.Module
    loader: Iterable[Any]
    device: torch.device
    columns: int
    rows: int | None
    keep: list[np.ndarray] | None = None
    name: str = "model"
    names: tuple[str, ...] | None = None
    kind: str | None = "logits"
    kind_reason: str = "a model's outputs are logits"
    has_ids: bool = False

    def blocks(self, classes: Classes, size: int) -> Iterator[RawBlock]:
        start = 0
        with torch.inference_mode():
            for inputs, labels in self.loader:
                logits = self.model(inputs.to(self.device)).float().cpu().numpy()  # (n, C)
                if self.keep is not None:
                    self.keep.append(logits)
                y = to_indices(np.asarray(labels), classes, start, "labels")
                yield RawBlock(start, logits, y, None)
                start += len(y)


def _first_batch_columns(model: torch.nn.Module, loader: Iterable[Any], device: Any) -> int:
    """C, from the model's output on the first batch (the loader is iterated once more later)."""
    with torch.inference_mode():
        inputs, _ = next(iter(loader))
        return int(model(inputs.to(device)).shape[-1])


def evaluate_model(
    model: torch.nn.Module,
    loader: Iterable[Any],
    *,
    device: str = "auto",
    class_names: Sequence[str] | None = None,
    calibration: Iterable[Any] | None = None,
    bins: int = DEFAULT_BINS,
    binning: str = "uniform",
    top_k: int = DEFAULT_TOP_K,
    worst_fraction: float = WORST_FRACTION,
    keep_logits: bool = False,
) -> EvaluationResult:
    """Every diagnostic of ``logloss evaluate`` for ``model`` on the batches of ``loader``.

    Args:
        model: any module mapping a batch of inputs to logits (n, C).
        loader: an iterable of ``(inputs, labels)`` batches, e.g. a ``DataLoader``; iterated
            twice (once to learn C from the first batch).
        device: ``"auto"`` (CUDA, then MPS, then CPU), or a torch device name.
        class_names: C names.
        calibration: a second loader of held-out batches to fit temperature scaling on.
        bins, binning, top_k, worst_fraction: as in :func:`logloss.evaluate`.
        keep_logits: also return every logit, (N, C) float32, as ``result.logits``.
    """
    started = time.perf_counter()
    where = pick_device(device)
    was_training = model.training
    model.eval().to(where)
    try:
        kept: list[np.ndarray] | None = [] if keep_logits else None
        reading = _read(model, loader, where, class_names, kept)
        fit = None if calibration is None else _read(model, calibration, where, class_names, None)
        result = evaluate_reading(
            reading,
            calibration=fit,
            n_bins=bins,
            binning=binning,
            top_k=top_k,
            worst_fraction=worst_fraction,
        )
    finally:
        model.train(was_training)
    source = {**result.source, "type": "model", "model": type(model).__name__, "device": str(where)}
    timings = {**result.timings, "total": time.perf_counter() - started}
    logits = None if kept is None else np.concatenate(kept)
    return ModelEvaluation(
        result.evaluation, result.classes, source, result.notes, timings, logits=logits
    )


def _read(model: Any, loader: Any, device: Any, names: Any, kept: Any) -> Any:
    columns = _first_batch_columns(model, loader, device)
    dataset = getattr(loader, "dataset", None)
    rows = len(dataset) if hasattr(dataset, "__len__") else None
    source = ModelBatches(model, loader, device, columns, rows, kept)
    return read_source(source, class_names=None if names is None else list(names))


@dataclass(frozen=True, repr=False)
class ModelEvaluation(EvaluationResult):
    """:class:`EvaluationResult` of a model, with its logits when ``keep_logits`` was asked."""

    logits: np.ndarray | None = None
