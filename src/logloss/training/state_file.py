"""Nested states (tensors plus JSON-able values) in one safetensors file, never unpickled.

Tensors go into safetensors; the rest of a state (numbers, strings, nested dicts, tuples) goes into
the safetensors header's metadata as JSON under the key ``"logloss"``.  A damaged or foreign file is
a ``ValueError`` naming the file, never a traceback from the JSON or safetensors reader.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from logloss._atomic import write_bytes_atomic

HEADER_KEY = "logloss"  # safetensors metadata key holding this file's JSON


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


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state written by :func:`save_state` (tensors on the CPU)."""
    tensors, header = read_safetensors(path, "checkpoint")
    if HEADER_KEY not in header:
        raise ValueError(f"{path} was not written by logloss (no {HEADER_KEY!r} metadata)")
    try:
        return join_tensors(json.loads(header[HEADER_KEY]), tensors)
    except (ValueError, TypeError, KeyError, AttributeError) as error:  # JSONDecodeError too
        raise ValueError(
            f"{path} is damaged: its {HEADER_KEY!r} metadata does not describe a saved state "
            f"({error}); the run cannot be resumed from it: start a new run with another --out "
            "(its best/last weights may still load)"
        ) from None


def read_safetensors(path: str | os.PathLike[str], what: str) -> tuple[dict, dict[str, str]]:
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
