"""The run folder: every file ``logloss train`` writes, written and read here and nowhere else.

A run folder holds::

    checkpoint.json       architecture, options (TrainConfig), normalisation, seed, versions,
                          the untrained model's loss and accuracy, metrics of the best and last
                          epoch, test metrics, status
    initial.safetensors   the untrained weights, saved before the first step
    last.safetensors      the weights at the latest save (end of an epoch, or Ctrl-C)
    best.safetensors      the weights of the epoch with the best validation accuracy
    resume.safetensors    everything ``--resume`` needs to continue bit for bit (see
                          :mod:`logloss.training.state_file`)
    metrics.jsonl         one JSON line per epoch

Every file is written to a temporary file in the same folder and then renamed over the old one
(``os.replace``), so a crash or Ctrl-C never leaves half a file.  Non-finite numbers follow the
JSON policy of :mod:`logloss._json`.  Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import torch
from safetensors.torch import save as save_safetensors_bytes

from logloss._atomic import write_bytes_atomic, write_text_atomic
from logloss._json import dumps, restore_non_finite
from logloss._version import __version__
from logloss.training.state_file import HEADER_KEY, load_state, read_safetensors, save_state

FORMAT = "logloss.checkpoint"
FORMAT_VERSION = 1
METADATA_FILE = "checkpoint.json"
METRICS_FILE = "metrics.jsonl"
RESUME_FILE = "resume.safetensors"
WEIGHT_FILES = {
    "initial": "initial.safetensors",
    "last": "last.safetensors",
    "best": "best.safetensors",
}
INITIAL_EPOCH = 0  # the untrained model, before the first step

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INITIAL_EPOCH",
    "METADATA_FILE",
    "METRICS_FILE",
    "RESUME_FILE",
    "WEIGHT_FILES",
    "holds_run",
    "load_state",
    "load_weights",
    "read_metadata",
    "read_metrics",
    "save_state",
    "save_weights",
    "trained_epochs",
    "versions",
    "with_initial_epoch",
    "write_metadata",
    "write_metrics",
]


def holds_run(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` already holds a run (a ``checkpoint.json`` or a resume state)."""
    return any((Path(directory) / name).exists() for name in (METADATA_FILE, RESUME_FILE))


def versions() -> dict[str, str]:
    """Versions of what produced a checkpoint."""
    return {
        "logloss": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


# --- weights ----------------------------------------------------------------------------------


def save_weights(path: str | os.PathLike[str], model: torch.nn.Module, info: Mapping) -> None:
    """Save ``model``'s parameters under their state-dict names, ``info`` as JSON metadata.

    The file is plain safetensors (keys such as ``layers.1.weight``), readable by any tool.
    """
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    header = {HEADER_KEY: dumps(dict(info), indent=None)}
    write_bytes_atomic(path, save_safetensors_bytes(tensors, metadata=header))


def load_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """Read ``(state_dict, info)`` written by :func:`save_weights` (tensors on the CPU)."""
    tensors, header = read_safetensors(path, "weights")
    try:
        info = restore_non_finite(json.loads(header.get(HEADER_KEY, "{}")))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is damaged: its {HEADER_KEY!r} metadata is not JSON ({error}); use another "
            "of the run's weights (--which) or train again"
        ) from None
    return tensors, dict(info) if isinstance(info, dict) else {}


def write_metadata(directory: str | os.PathLike[str], metadata: Mapping[str, Any]) -> None:
    """Write ``checkpoint.json`` atomically."""
    write_text_atomic(Path(directory) / METADATA_FILE, dumps(metadata, sort_keys=True) + "\n")


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``checkpoint.json`` of a run directory."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise ValueError(
            f"{directory} is not a logloss checkpoint directory (no {METADATA_FILE}); pass the "
            "--out folder of a `logloss train` run"
        )
    try:
        metadata = restore_non_finite(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is damaged: not valid JSON ({error}); restore it from a copy or train again"
        ) from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a logloss checkpoint (format is not {FORMAT!r})")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {metadata.get('format_version')}; this "
            f"logloss reads version {FORMAT_VERSION}"
        )
    return metadata


def write_metrics(directory: str | os.PathLike[str], records: Sequence[Mapping[str, Any]]) -> None:
    """Write ``metrics.jsonl`` (one compact JSON object per epoch) atomically."""
    lines = [dumps(dict(r), indent=None, sort_keys=True) for r in records]
    write_text_atomic(Path(directory) / METRICS_FILE, "".join(line + "\n" for line in lines))


def read_metrics(
    directory: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """A run's per-epoch records: epoch 0, the untrained model, then ``metrics.jsonl``'s lines.

    Epoch 0 comes from ``checkpoint.json`` (:func:`with_initial_epoch`); ``[]`` when
    ``metrics.jsonl`` is absent or empty.  ``metadata``: the run's ``checkpoint.json`` when the
    caller has it already (else it is read, if present).

    Raises:
        ValueError: a line that is not a JSON object (its line number is given), or a damaged
            ``checkpoint.json``.
    """
    path = Path(directory) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = restore_non_finite(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} line {number} is not JSON: {error}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path} line {number} is not a JSON object: {line[:80]!r}")
        records.append(record)
    if not records:
        return records
    if metadata is None:
        has_metadata = (Path(directory) / METADATA_FILE).is_file()
        metadata = read_metadata(directory) if has_metadata else {}
    return with_initial_epoch(records, metadata)


def _finite_number(value: Any) -> bool:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return ok and math.isfinite(value)


def with_initial_epoch(
    records: Sequence[Mapping[str, Any]], metadata: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """``records`` preceded by epoch 0, the untrained model, from ``checkpoint.json``.

    The untrained model's validation loss (near ``ln C``) and accuracy (near ``1/C``) are
    ``checkpoint.json``'s ``initial_loss`` and ``initial_accuracy``; as a record,
    ``{"epoch": 0, "val_loss": ..., "val_accuracy": ...}``, they are drawn like any epoch.  A
    value that is not a finite number (absent, NaN, a bool or a string from a damaged file) is
    left out; nothing is added when neither is known or the records already have an epoch 0.
    Returns new (shallow-copied) records.

    >>> with_initial_epoch([{"epoch": 1, "val_loss": 0.2}], {"initial_loss": 2.3})
    [{'epoch': 0, 'val_loss': 2.3}, {'epoch': 1, 'val_loss': 0.2}]
    """
    copies = [dict(r) for r in records]
    initial = {
        key: float(metadata[name])
        for key, name in (("val_loss", "initial_loss"), ("val_accuracy", "initial_accuracy"))
        if _finite_number(metadata.get(name))
    }
    if not initial or any(r.get("epoch") == INITIAL_EPOCH for r in copies):
        return copies
    return [{"epoch": INITIAL_EPOCH, **initial}, *copies]


def trained_epochs(
    metadata: Mapping[str, Any], records: Sequence[Mapping[str, Any]]
) -> tuple[int | None, int]:
    """(the epoch whose weights ``which="best"`` loads, the number of epochs trained).

    The best epoch is ``checkpoint.json``'s ``best.epoch`` (1-based: the epoch with the highest
    validation accuracy), ``None`` when the run has none; the count is its ``last.epoch``, or the
    number of trained-epoch records (epoch 0, the untrained model, not counted) when that is
    absent.

    >>> trained_epochs({"best": {"epoch": 3}, "last": {"epoch": 5}}, [])
    (3, 5)
    >>> trained_epochs({}, [{"epoch": 0}, {"epoch": 1}, {"epoch": 2}])
    (None, 2)
    """

    def epoch(key: str) -> int | None:
        record = metadata.get(key)
        value = record.get("epoch") if isinstance(record, Mapping) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    trained = sum(1 for r in records if r.get("epoch") != INITIAL_EPOCH)
    return epoch("best"), epoch("last") or trained
