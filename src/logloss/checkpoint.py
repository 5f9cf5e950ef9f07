"""Checkpoints: safetensors weights plus JSON, written atomically, read without unpickling.

A run directory holds::

    checkpoint.json       architecture, options (TrainConfig), normalisation, seed, versions,
                          metrics of the best and last epoch, test metrics, status
    initial.safetensors   the untrained weights, saved before the first step
    last.safetensors      the weights at the latest save (end of an epoch, or Ctrl-C)
    best.safetensors      the weights of the epoch with the best validation accuracy
    resume.safetensors    everything ``--resume`` needs to continue bit for bit: weights,
                          optimiser and schedule state, random generators, the epoch's shuffle
    metrics.jsonl         one JSON line per epoch

Every file is written to a temporary file in the same folder and then renamed over the old one
(``os.replace``), so a crash or Ctrl-C never leaves half a file.  Tensors go into safetensors; the
rest of a state (numbers, strings, nested dicts) goes into the safetensors header's metadata as
JSON.  Nothing is ever unpickled: ``torch.load`` is not used.  A damaged or foreign file is a
``ValueError`` naming the file, never a traceback from the JSON or safetensors reader.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from logloss._atomic import write_bytes_atomic, write_text_atomic
from logloss.explain import json_ready
from logloss.model import Architecture, DenseNet, check_state_dict
from logloss.train_config import TrainConfig

if TYPE_CHECKING:
    from logloss.training import Score

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
_HEADER_KEY = "logloss"  # safetensors metadata key holding this file's JSON


# Non-finite floats in checkpoint.json and metrics.jsonl: written by json_ready as "NaN",
# "Infinity", "-Infinity"; files written before it used Python's str(): "nan", "inf", "-inf".
_NON_FINITE = {text: float(text) for text in ("NaN", "Infinity", "-Infinity", "nan", "inf", "-inf")}


def to_json(value: Any) -> str:
    """Strict JSON (non-finite floats written as the strings "NaN", "Infinity", "-Infinity").

    >>> to_json({"loss": float("inf")})
    '{\\n  "loss": "Infinity"\\n}'
    """
    return json.dumps(json_ready(value), indent=2, sort_keys=True, allow_nan=False)


def from_json(value: Any) -> Any:
    """Inverse of the non-finite spelling of :func:`to_json`, old (``"nan"``) or new (``"NaN"``).

    >>> from_json({"a": ["Infinity", "-inf", 1.5], "status": "finished"})
    {'a': [inf, -inf, 1.5], 'status': 'finished'}
    """
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if isinstance(value, dict):
        return {k: from_json(v) for k, v in value.items()}
    return value


# --- states with tensors <-> (JSON, safetensors) ------------------------------------------------


def split_tensors(state: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Separate the tensors of a nested state from everything else.

    Tensors are replaced by ``{"__tensor__": key}`` and returned in a flat dict; tuples become
    ``{"__tuple__": [...]}`` and dicts with non-string keys ``{"__items__": [[k, v], ...]}`` so
    that :func:`join_tensors` rebuilds the state exactly (``optimizer.state_dict()`` has int
    keys).  Floats survive JSON exactly (Python writes the shortest repr that reads back equal).

    >>> skeleton, tensors = split_tensors({"step": 3, "m": torch.zeros(2), "betas": (0.9, 0.99)})
    >>> skeleton["m"], list(tensors), skeleton["betas"]
    ({'__tensor__': 'm'}, ['m'], {'__tuple__': [0.9, 0.99]})
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, key: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach().to("cpu").contiguous().clone()
            return {"__tensor__": key}
        if isinstance(value, Mapping):
            if all(isinstance(k, str) for k in value):
                return {k: walk(v, f"{key}.{k}" if key else k) for k, v in value.items()}
            return {
                "__items__": [
                    [k, walk(v, f"{key}.{k}" if key else str(k))] for k, v in value.items()
                ]
            }
        if isinstance(value, tuple):
            return {"__tuple__": [walk(v, f"{key}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(value)]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"cannot store {type(value).__name__} at {key!r} in a checkpoint")

    return walk(state, prefix), tensors


def join_tensors(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`split_tensors`."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__tensor__"}:
            key = skeleton["__tensor__"]
            if key not in tensors:
                raise ValueError(f"checkpoint is missing tensor {key!r}: the file is damaged")
            return tensors[key]
        if set(skeleton) == {"__tuple__"}:
            return tuple(join_tensors(v, tensors) for v in skeleton["__tuple__"])
        if set(skeleton) == {"__items__"}:
            return {k: join_tensors(v, tensors) for k, v in skeleton["__items__"]}
        return {k: join_tensors(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [join_tensors(v, tensors) for v in skeleton]
    return skeleton


def save_state(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Save a nested state (tensors and JSON-able values) as one safetensors file, atomically."""
    skeleton, tensors = split_tensors(dict(state))
    header = {_HEADER_KEY: json.dumps(skeleton, allow_nan=True)}
    write_bytes_atomic(path, save_safetensors_bytes(tensors, metadata=header))


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state written by :func:`save_state` (tensors on the CPU)."""
    tensors, header = _read_safetensors(path, "checkpoint")
    if _HEADER_KEY not in header:
        raise ValueError(f"{path} was not written by logloss (no {_HEADER_KEY!r} metadata)")
    try:
        return join_tensors(json.loads(header[_HEADER_KEY]), tensors)
    except (ValueError, TypeError, KeyError, AttributeError) as error:  # JSONDecodeError too
        raise ValueError(
            f"{path} is damaged: its {_HEADER_KEY!r} metadata does not describe a saved state "
            f"({error}); the run cannot be resumed from it: start a new run with another --out "
            "(its best/last weights may still load)"
        ) from None


def _read_safetensors(path: str | os.PathLike[str], what: str) -> tuple[dict, dict[str, str]]:
    """``(tensors on the CPU, the header's __metadata__)`` of a safetensors file.

    Raises:
        ValueError: no such file, or not a readable safetensors file (named as ``what``).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no {what} file {path}")
    data = path.read_bytes()
    try:
        tensors = load_safetensors_bytes(data)
        header = _safetensors_metadata(data)
    except (SafetensorError, ValueError, TypeError) as error:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path} is not a readable safetensors {what} file: {error}") from None
    return dict(tensors), header


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors buffer: 8-byte little-endian length, then JSON."""
    if len(data) < 8:
        raise ValueError("file too short")
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    return dict(header.get("__metadata__") or {})


# --- weights ----------------------------------------------------------------------------------


def save_weights(path: str | os.PathLike[str], model: torch.nn.Module, info: Mapping) -> None:
    """Save ``model``'s parameters under their state-dict names, ``info`` as JSON metadata.

    The file is plain safetensors (keys such as ``layers.1.weight``), readable by any tool.
    """
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    header = {_HEADER_KEY: json.dumps(dict(info), allow_nan=True)}
    write_bytes_atomic(path, save_safetensors_bytes(tensors, metadata=header))


def load_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """Read ``(state_dict, info)`` written by :func:`save_weights` (tensors on the CPU)."""
    tensors, header = _read_safetensors(path, "weights")
    try:
        info = json.loads(header.get(_HEADER_KEY, "{}"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is damaged: its {_HEADER_KEY!r} metadata is not JSON ({error}); use another "
            "of the run's weights (--which) or train again"
        ) from None
    return tensors, dict(info) if isinstance(info, dict) else {}


def write_metadata(directory: str | os.PathLike[str], metadata: Mapping[str, Any]) -> None:
    """Write ``checkpoint.json`` atomically."""
    write_text_atomic(Path(directory) / METADATA_FILE, to_json(metadata) + "\n")


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``checkpoint.json`` of a run directory."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise ValueError(
            f"{directory} is not a logloss checkpoint directory (no {METADATA_FILE}); pass the "
            "--out folder of a `logloss train` run"
        )
    try:
        metadata = from_json(json.loads(path.read_text(encoding="utf-8")))
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


def write_metrics(directory: str | os.PathLike[str], records: list[Mapping[str, Any]]) -> None:
    """Write ``metrics.jsonl`` (one compact JSON object per epoch) atomically."""
    lines = [json.dumps(json_ready(dict(r)), sort_keys=True, allow_nan=False) for r in records]
    write_text_atomic(Path(directory) / METRICS_FILE, "".join(line + "\n" for line in lines))


# --- normalisation ----------------------------------------------------------------------------


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


# --- loading a trained model ------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A trained (or initial) model loaded from a run directory, ready for inference.

    Attributes:
        model: the :class:`~logloss.model.DenseNet`, in eval mode, on ``device``; outputs logits.
        config: the run's :class:`~logloss.training.TrainConfig`.
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
        from logloss.training import evaluate_model

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

    Args:
        directory: the ``--out`` folder of a ``logloss train`` run.
        which: ``"best"`` (best validation accuracy), ``"last"`` or ``"initial"`` (untrained).
        device: where to put the model (``"auto"`` picks CUDA, MPS, then CPU).

    Raises:
        ValueError: not a checkpoint directory, a missing or damaged file, or weights that do not
            fit the saved architecture.
    """
    from logloss.devices import pick_device

    if which not in WEIGHT_FILES:
        raise ValueError(f"which must be one of {sorted(WEIGHT_FILES)}, got {which!r}")
    directory = Path(directory)
    metadata = read_metadata(directory)
    architecture, config = _read_run_description(directory / METADATA_FILE, metadata)
    path = directory / WEIGHT_FILES[which]
    if not path.is_file():
        raise ValueError(
            f"{path} does not exist: the run has no {which!r} weights yet (an epoch saves "
            "'last' and 'best'); choose another with which=/--which"
        )
    state, info = load_weights(path)
    if info.get("architecture", architecture.to_dict()) != architecture.to_dict():
        raise ValueError(
            f"{path} was saved for architecture {info.get('architecture')}, but "
            f"{METADATA_FILE} describes {architecture.to_dict()}: the folder mixes two runs"
        )
    model = DenseNet(architecture)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state)
    target = pick_device(str(device)) if not isinstance(device, torch.device) else device
    model.to(target).eval()
    return Checkpoint(
        model=model,
        config=config,
        metadata=metadata,
        directory=directory,
        which=which,
        device=target,
    )


def _read_run_description(
    path: Path, metadata: Mapping[str, Any]
) -> tuple[Architecture, TrainConfig]:
    """``(Architecture, TrainConfig)`` of a ``checkpoint.json``; normalisation, classes checked.

    Raises:
        ValueError: ``path is damaged: ...`` when an entry is missing or malformed.
    """
    try:
        architecture = Architecture.from_dict(metadata["architecture"])
        config = TrainConfig.from_dict(metadata["config"])
        normalization = Normalization(**metadata["normalization"])
        classes = metadata["classes"]
        numbers_ok = all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in normalization
        )
        if not numbers_ok or not normalization.std > 0:
            raise ValueError(f"normalization must be numbers with std > 0, got {normalization}")
        if not isinstance(classes, list) or len(classes) != architecture.num_classes:
            raise ValueError(f"classes must list {architecture.num_classes} names, got {classes!r}")
    except KeyError as error:
        raise ValueError(
            f"{path} is damaged: it has no {error} entry; restore it from a copy or train again"
        ) from None
    except (TypeError, ValueError, AttributeError) as error:
        raise ValueError(
            f"{path} is damaged: {error}; restore it from a copy or train again"
        ) from None
    return architecture, config
