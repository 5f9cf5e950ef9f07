"""Training the article's dense network: settings -> data -> model -> loop -> the run folder.

The names below are imported on first use (PEP 562), so that ``logloss.training.config`` (no
torch) can be read by the command line's argument parser without loading torch.

>>> from logloss.training import TrainConfig
>>> TrainConfig().hidden
(256, 256)
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module of this package that defines it
_EXPORTS = {
    "train": "loop",
    "Run": "loop",
    "TrainConfig": "config",
    "PRESETS": "config",
    "LOSSES": "config",
    "OPTIMIZERS": "config",
    "SCHEDULES": "config",
    "parse_hidden": "config",
    "EpochRecord": "history",
    "History": "history",
    "Reporter": "history",
    "SampleView": "history",
    "Score": "evaluation",
    "evaluate_model": "evaluation",
    "augment": "augment",
    "make_loss": "optimization",
    "make_optimizer": "optimization",
    "make_scheduler": "optimization",
    "Normalization": "splits",
    "pixel_normalization": "splits",
    "device_splits": "splits",
    "run_arrays": "splits",
    "Architecture": "model",
    "DenseNet": "model",
    "Checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'logloss.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"logloss.training.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
