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

import hashlib
import math
import os
import platform
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import torch
from safetensors.torch import save as save_safetensors_bytes

from logloss._atomic import write_bytes_atomic, write_text_atomic
from logloss._json import dumps, loads_limited, restore_non_finite
from logloss._version import __version__
from logloss.training.config import TrainConfig, is_integer
from logloss.training.model import MAX_PARAMETERS, Architecture, check_shapes, parameter_shapes
from logloss.training.state_file import (
    HEADER_KEY,
    Limits,
    TensorInfo,
    load_state,
    read_header,
    read_tensors,
    save_state,
)

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
STATUSES = ("running", "interrupted", "finished", "target_reached")
# Bounds on what is read (a legitimate checkpoint.json is about 3 KB, a metrics line 300 bytes)
MAX_METADATA_BYTES = 2**20
MAX_METRICS_BYTES = 16 * 2**20
MAX_JSON_DEPTH = 16
WEIGHTS_LIMITS = Limits(
    header_bytes=2**20, json_depth=MAX_JSON_DEPTH, tensor_bytes=4 * MAX_PARAMETERS
)
WEIGHTS_DTYPE = "F32"  # the model's parameters are float32, and so is every weights file

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INITIAL_EPOCH",
    "METADATA_FILE",
    "METRICS_FILE",
    "RESUME_FILE",
    "WEIGHT_FILES",
    "file_sha256",
    "holds_run",
    "load_state",
    "load_weights",
    "read_metadata",
    "read_metrics",
    "require_fields",
    "save_state",
    "save_weights",
    "trained_epochs",
    "validate_metadata",
    "versions",
    "with_initial_epoch",
    "write_metadata",
    "write_metrics",
]


def holds_run(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` already holds a run: whether it has a ``checkpoint.json``.

    A run writes its ``checkpoint.json`` last when it starts (after ``initial.safetensors`` and
    ``resume.safetensors``): a folder without one holds a run stopped before its first step, with
    nothing worth keeping, and a new run may start over in it.
    """
    return (Path(directory) / METADATA_FILE).exists()


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


def save_weights(path: str | os.PathLike[str], model: torch.nn.Module, info: Mapping) -> str:
    """Save ``model``'s parameters under their state-dict names, ``info`` as JSON metadata.

    The file is plain safetensors (keys such as ``layers.1.weight``), readable by any tool.

    Returns:
        the SHA-256 (hex) of the file's bytes, for ``checkpoint.json``'s ``"sha256"`` entry.
    """
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    header = {HEADER_KEY: dumps(dict(info), indent=None)}
    data = save_safetensors_bytes(tensors, metadata=header)
    write_bytes_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def load_weights(
    path: str | os.PathLike[str],
    *,
    architecture: Architecture | None = None,
    sha256: str | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Read ``(state_dict, info)`` written by :func:`save_weights` (tensors on the CPU).

    Without ``architecture`` the tensors are read as they are (at most ``4 * MAX_PARAMETERS``
    bytes).  With it, the file is checked as that network's weights, from its header before any
    tensor is read (the architecture it was saved for, the names, shapes and float32 dtype),
    then its values (no NaN or infinity).  With ``sha256``, the file must have that SHA-256.

    Raises:
        ValueError: naming the file and what is wrong with it.
    """
    infos, metadata = read_header(path, "weights", WEIGHTS_LIMITS)
    info = _weights_info(path, metadata)
    if architecture is not None:
        _check_weights_header(path, info, infos, architecture)
    if sha256 is not None:
        _check_sha256(Path(path), sha256)
    tensors = read_tensors(path, "weights", infos)
    if architecture is not None:
        _check_finite(path, tensors)
    return tensors, info


def _weights_info(path: str | os.PathLike[str], metadata: Mapping[str, str]) -> dict:
    """The JSON ``info`` that :func:`save_weights` put in the header (``{}`` if none)."""
    try:
        info = loads_limited(
            metadata.get(HEADER_KEY, "{}"),
            max_chars=WEIGHTS_LIMITS.header_bytes,
            max_depth=WEIGHTS_LIMITS.json_depth,
        )
    except ValueError as error:  # JSONDecodeError too
        raise ValueError(
            f"{path} is damaged: its {HEADER_KEY!r} metadata is not JSON ({error}); use another "
            "of the run's weights (--which) or train again"
        ) from None
    return dict(restore_non_finite(info)) if isinstance(info, dict) else {}


def _check_weights_header(
    path: str | os.PathLike[str],
    info: Mapping[str, Any],
    infos: Mapping[str, TensorInfo],
    architecture: Architecture,
) -> None:
    """The file was saved for ``architecture``: its info says so (when it says), and its
    tensors have the names, shapes and dtype that ``DenseNet(architecture)`` has."""
    saved_for = info.get("architecture", architecture.to_dict())
    if saved_for != architecture.to_dict():
        raise ValueError(
            f"{path} was saved for architecture {str(saved_for)[:200]}, but "
            f"{METADATA_FILE} describes {architecture.to_dict()}: the folder mixes two runs"
        )
    found = {name: tensor.shape for name, tensor in infos.items()}
    check_shapes(parameter_shapes(architecture), found, str(path), architecture)
    for name, tensor in infos.items():
        if tensor.dtype != WEIGHTS_DTYPE:
            raise ValueError(
                f"{path} is damaged: {name} holds {tensor.dtype} numbers; the network's weights "
                f"are float32 ({WEIGHTS_DTYPE}): use the weights logloss saved, or train again"
            )


def _check_finite(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor]) -> None:
    """No NaN and no infinity: the logits of such a network are not numbers."""
    for name, tensor in tensors.items():
        if torch.isnan(tensor).any():
            value = "NaN"
        elif torch.isinf(tensor).any():
            value = "an infinity"
        else:
            continue
        raise ValueError(
            f"{path} cannot make predictions: {name} contains {value}. The run diverged (train "
            "again with a lower --lr) or the file is damaged; use another of the run's weights "
            "(--which)"
        )


def file_sha256(path: str | os.PathLike[str], chunk_bytes: int = 2**20) -> str:
    """SHA-256 (hex) of a file, read in chunks (memory stays at ``chunk_bytes``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256(path: Path, expected: str) -> None:
    if file_sha256(path) != expected:
        raise ValueError(
            f"{path} is damaged: its SHA-256 differs from the one {METADATA_FILE} recorded when "
            "it was written (bytes changed since, or the run was stopped while saving it: "
            "`logloss train --out DIR --resume` rewrites it); use another of the run's weights "
            "(--which) or train again"
        )


def write_metadata(directory: str | os.PathLike[str], metadata: Mapping[str, Any]) -> None:
    """Write ``checkpoint.json`` atomically."""
    write_text_atomic(Path(directory) / METADATA_FILE, dumps(metadata, sort_keys=True) + "\n")


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``checkpoint.json`` of a run directory, bounded and validated
    (:func:`validate_metadata`).

    Raises:
        ValueError: no such file (a folder with only a ``resume.safetensors`` is a run stopped
            before it started: the message says to start it again), a file over
            :data:`MAX_METADATA_BYTES` or nested deeper than :data:`MAX_JSON_DEPTH`, not JSON, or
            a field of the wrong type or range.
    """
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise ValueError(_no_metadata_message(Path(directory)))
    if path.stat().st_size > MAX_METADATA_BYTES:
        raise ValueError(
            f"{path} is damaged: {path.stat().st_size:,} bytes, more than the "
            f"{MAX_METADATA_BYTES:,} a checkpoint.json takes; restore it from a copy or train again"
        )
    try:
        text = path.read_text(encoding="utf-8")
        metadata = loads_limited(text, max_chars=MAX_METADATA_BYTES, max_depth=MAX_JSON_DEPTH)
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise ValueError(
            f"{path} is damaged: not valid JSON ({error}); restore it from a copy or train again"
        ) from None
    metadata = restore_non_finite(metadata)
    validate_metadata(metadata, path)
    return metadata


def _no_metadata_message(directory: Path) -> str:
    message = f"{directory} is not a logloss checkpoint directory (no {METADATA_FILE})"
    if (directory / RESUME_FILE).exists():
        return (
            f"{message}: the run there was stopped before its first step, so there is nothing to "
            f"resume or load; start it again with `logloss train --out {directory}` (without "
            "--resume)"
        )
    return f"{message}; pass the --out folder of a `logloss train` run"


def validate_metadata(metadata: Any, path: Path) -> None:
    """Check every field of a ``checkpoint.json`` that is present, its type and range.

    ``format`` and ``format_version`` must be logloss's; ``architecture`` and ``config`` must
    describe a network within the caps (:class:`~logloss.training.model.Architecture`,
    :class:`~logloss.training.config.TrainConfig`); ``normalization`` finite numbers with
    ``std > 0`` and ``divide_by > 0``; ``classes`` one name per class; ``status`` one of
    :data:`STATUSES`; ``sha256`` a 64-digit hex digest per weights file; ``sizes`` counts;
    ``best``, ``last`` and ``test`` numbers by name.  Fields a command needs are required by it
    (:func:`require_fields`); unknown fields are kept.

    Raises:
        ValueError: ``<path> is damaged: <field> ...: <rule>, got <value>``, and what to do.
    """
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a logloss checkpoint (format is not {FORMAT!r})")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {str(metadata.get('format_version'))[:20]}; "
            f"this logloss reads version {FORMAT_VERSION}"
        )
    for name, check in _FIELD_CHECKS.items():
        if name in metadata:
            _check_field(path, name, check, metadata[name])
    if "classes" in metadata:
        known = "architecture" in metadata
        count = Architecture.from_dict(metadata["architecture"]).num_classes if known else None
        _check_field(
            path, "classes", lambda names: _check_classes(names, count), metadata["classes"]
        )


def _check_field(path: Path, name: str, check: Callable[[Any], Any], value: Any) -> None:
    """``check(value)``, its error worded as ``<path> is damaged: <name>: <why>``."""
    try:
        check(value)
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(
            f"{path} is damaged: {name}: {error}; restore it from a copy or train again"
        ) from None


def require_fields(metadata: Mapping[str, Any], path: Path, names: Sequence[str]) -> None:
    """Refuse a ``checkpoint.json`` (already validated) that lacks one of ``names``."""
    for name in names:
        if name not in metadata:
            raise ValueError(
                f"{path} is damaged: it has no {name!r} entry; restore it from a copy or train "
                "again"
            )


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object, got {str(value)[:80]!r}")
    return value


def _number(value: Any) -> float:
    """A JSON number or one of the non-finite spellings (a bool is not a number)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"must be a number, got {str(value)[:80]!r}")
    return value


def _numbers(value: Any) -> None:
    """A JSON object of numbers (``test``)."""
    for number in _mapping(value).values():
        _number(number)


def _check_normalization(value: Any) -> None:
    """``x = (pixel / divide_by - mean) / std``: finite, ``std > 0``, ``divide_by > 0``."""
    fields = _mapping(value)
    if not {"mean", "std"} <= set(fields) <= {"mean", "std", "divide_by"}:
        raise ValueError(f"must hold mean, std and divide_by, got {sorted(fields)[:10]}")
    for key, number in fields.items():
        if not math.isfinite(_number(number)) or (key != "mean" and not number > 0):
            rule = "a finite number" + (" > 0" if key != "mean" else "")
            raise ValueError(f"{key} must be {rule}, got {number!r}")


def _check_classes(value: Any, count: int | None) -> None:
    """One short name (a string or an integer) per class (``count`` of them, when known)."""
    names_ok = isinstance(value, list) and all(
        (isinstance(c, str) and len(c) <= 100) or is_integer(c) for c in value
    )
    if not names_ok or len(value) != (len(value) if count is None else count):
        wanted = "names" if count is None else f"{count} names, one per class"
        raise ValueError(f"must list {wanted}, got {str(value)[:80]}")


def _check_status(value: Any) -> None:
    if value not in STATUSES:
        raise ValueError(f"must be one of {', '.join(STATUSES)}, got {str(value)[:80]!r}")


def _check_hashes(value: Any) -> None:
    """File name -> SHA-256 hex digest, for the weights files."""
    for name, digest in _mapping(value).items():
        if name not in WEIGHT_FILES.values():
            raise ValueError(f"names an unknown file {name[:80]!r}")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"{name}'s must be 64 hexadecimal digits, got {str(digest)[:80]!r}")


def _check_sizes(value: Any) -> None:
    for split, count in _mapping(value).items():
        if split not in ("train", "validation", "test") or not is_integer(count) or count < 0:
            raise ValueError(f"must be counts of train, validation, test, got {str(value)[:80]}")


def _check_record(value: Any) -> None:
    """An epoch's record (``best``, ``last``): numbers, its ``epoch`` a count >= 1."""
    if value is None:
        return
    _numbers(value)
    epoch = value.get("epoch", 1)
    if not is_integer(epoch) or epoch < 1:
        raise ValueError(f"epoch must be a whole number >= 1, got {epoch!r}")


# field of checkpoint.json -> its check (raises TypeError, ValueError or KeyError)
_FIELD_CHECKS: dict[str, Callable[[Any], Any]] = {
    "architecture": lambda value: Architecture.from_dict(_mapping(value)),
    "config": lambda value: TrainConfig.from_dict(_mapping(value)),
    "normalization": _check_normalization,
    "status": _check_status,
    "sha256": _check_hashes,
    "sizes": _check_sizes,
    "best": _check_record,
    "last": _check_record,
    "test": _numbers,
    "initial_loss": _number,
    "initial_accuracy": _number,
    "elapsed_seconds": _number,
}


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
    if path.stat().st_size > MAX_METRICS_BYTES:
        raise ValueError(
            f"{path} is damaged: {path.stat().st_size:,} bytes, more than the "
            f"{MAX_METRICS_BYTES:,} a run's metrics take; restore it from a copy or train again"
        )
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed = loads_limited(line, max_chars=len(line), max_depth=MAX_JSON_DEPTH)
        except ValueError as error:  # JSONDecodeError too
            raise ValueError(f"{path} line {number} is not JSON: {error}") from None
        record = restore_non_finite(parsed)
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
