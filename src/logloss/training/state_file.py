"""Nested states (tensors plus JSON-able values) in one safetensors file, never unpickled.

Tensors go into safetensors; the rest of a state (numbers, strings, nested dicts, tuples) goes into
the safetensors header's metadata as JSON under the key ``"logloss"``.  A damaged or foreign file is
a ``ValueError`` naming the file, never a traceback from the JSON or safetensors reader.

Reading is bounded before anything is allocated: the header's length (its first 8 bytes) and the
tensors' sizes (from the header) are checked against :class:`Limits`, the JSON's depth is checked
before it is parsed, and tensors are read through ``safe_open`` (memory-mapped), one at a time,
so a huge or sparse file costs no more memory than the tensors that pass the checks.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors_bytes

from logloss._atomic import write_bytes_atomic
from logloss._json import loads_limited

HEADER_KEY = "logloss"  # safetensors metadata key holding this file's JSON
# bytes per element of each safetensors dtype; a file with any other dtype is refused
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "I32": 4, "I64": 8, "F16": 2, "BF16": 2}
DTYPE_BYTES |= {"F32": 4, "F64": 8}


@dataclass(frozen=True)
class Limits:
    """What a safetensors file may hold before it is read: header bytes (the JSON that describes
    the tensors, with the ``"logloss"`` metadata), JSON depth, and bytes of tensors."""

    header_bytes: int = 16 * 2**20
    json_depth: int = 32
    tensor_bytes: int = 2 * 2**30


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as a safetensors header describes it: dtype (``"F32"``, ``"I64"``...), shape."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return DTYPE_BYTES[self.dtype] * math.prod(self.shape)


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
    header = {HEADER_KEY: json.dumps(skeleton, allow_nan=True)}
    write_bytes_atomic(path, save_safetensors_bytes(tensors, metadata=header))


def load_state(path: str | os.PathLike[str], limits: Limits | None = None) -> Any:
    """Read a state written by :func:`save_state` (tensors on the CPU), within ``limits``.

    Returns what was saved (a dict for every state logloss writes; its contents are the
    caller's to check).

    Raises:
        ValueError: no such file, not safetensors, over the limits, or a ``"logloss"`` metadata
            that does not describe a state.
    """
    limits = limits or Limits()
    infos, metadata = read_header(path, "checkpoint", limits)
    if HEADER_KEY not in metadata:
        raise ValueError(f"{path} was not written by logloss (no {HEADER_KEY!r} metadata)")
    try:
        skeleton = loads_limited(
            metadata[HEADER_KEY], max_chars=limits.header_bytes, max_depth=limits.json_depth
        )
    except ValueError as error:  # JSONDecodeError too
        raise _damaged_state(path, error) from None
    tensors = read_tensors(path, "checkpoint", infos)
    try:
        return join_tensors(skeleton, tensors)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise _damaged_state(path, error) from None


def _damaged_state(path: str | os.PathLike[str], error: Exception) -> ValueError:
    return ValueError(
        f"{path} is damaged: its {HEADER_KEY!r} metadata does not describe a saved state "
        f"({error}); the run cannot be resumed from it: start a new run with another --out "
        "(its best/last weights may still load)"
    )


def read_header(
    path: str | os.PathLike[str], what: str, limits: Limits
) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """``(name -> TensorInfo, the __metadata__)`` of a safetensors file; no tensor is read.

    The header's length (the file's first 8 bytes, little-endian) is checked against
    ``limits.header_bytes`` before the header is read, and the tensors' total size against
    ``limits.tensor_bytes``; safetensors itself checks that the tensors tile the rest of the file.

    Raises:
        ValueError: no such file, not a readable safetensors file (named as ``what``), or over
            the limits.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no {what} file {path}")
    with path.open("rb") as file:
        length = int.from_bytes(file.read(8), "little")
    if length > limits.header_bytes:
        raise ValueError(
            f"{path} is not a readable safetensors {what} file: its header claims {length:,} "
            f"bytes, more than the {limits.header_bytes:,} allowed"
        )
    try:
        with safe_open(path, framework="pt") as reader:
            slices = {name: reader.get_slice(name) for name in list(reader.keys())}
            infos = {k: TensorInfo(s.get_dtype(), tuple(s.get_shape())) for k, s in slices.items()}
            metadata = dict(reader.metadata() or {})
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable safetensors {what} file: {error}") from None
    _check_tensor_sizes(path, what, infos, limits)
    return infos, metadata


def _check_tensor_sizes(
    path: Path, what: str, infos: Mapping[str, TensorInfo], limits: Limits
) -> None:
    """Known dtypes only, and no more than ``limits.tensor_bytes`` in all."""
    unknown = sorted({info.dtype for info in infos.values()} - set(DTYPE_BYTES))
    if unknown:
        raise ValueError(f"{path} holds tensors of unsupported dtypes {unknown}: not a {what} file")
    total = sum(info.nbytes for info in infos.values())
    if total > limits.tensor_bytes:
        raise ValueError(
            f"{path} is damaged: its tensors take {total:,} bytes, more than the "
            f"{limits.tensor_bytes:,} a {what} file of this run can hold"
        )


def read_tensors(
    path: str | os.PathLike[str], what: str, names: Iterable[str]
) -> dict[str, torch.Tensor]:
    """The tensors ``names`` of a safetensors file whose header has been checked
    (:func:`read_header`), on the CPU, read through a memory map."""
    try:
        with safe_open(path, framework="pt") as reader:
            return {name: reader.get_tensor(name) for name in names}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors {what} file: {error}") from None
