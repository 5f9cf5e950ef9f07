"""One JSON policy for every ``--json`` output, HTTP answer and file logloss writes.

JSON has no NaN or infinity.  logloss writes them as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` (which Python's ``float()`` and JavaScript's ``Number()`` both parse back), never
as bare ``NaN`` (not JSON) and never as ``null`` (which would lose inf vs NaN).  NumPy scalars and
arrays become plain numbers and lists.  :func:`restore_non_finite` is the inverse, used when
logloss reads its own files (it also accepts the ``"nan"``/``"inf"`` spelling of early files).
The policy is documented in docs/json.md.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
# read back too: checkpoints written before this policy used Python's str() spelling
_READ_NON_FINITE = {**NON_FINITE, "nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def json_ready(value: Any) -> Any:
    """``value`` with non-finite floats spelled as strings, NumPy values as plain Python ones.

    Lists, tuples and dicts are converted recursively (tuples become lists).

    >>> json_ready([1.5, -math.inf, {"loss": np.float32("nan"), "n": np.int64(3)}])
    [1.5, '-Infinity', {'loss': 'NaN', 'n': 3}]
    """
    if isinstance(value, (float, np.floating)):
        x = float(value)
        if math.isfinite(x):
            return x
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, dict):
        return {key: json_ready(v) for key, v in value.items()}
    return value


def dumps(value: Any, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Strict JSON text of ``value`` under the policy above.

    >>> dumps({"loss": float("inf")}, indent=None)
    '{"loss": "Infinity"}'
    """
    return json.dumps(json_ready(value), indent=indent, sort_keys=sort_keys, allow_nan=False)


def restore_non_finite(value: Any) -> Any:
    """Inverse of :func:`json_ready`'s spelling: ``"Infinity"`` -> ``inf`` (recursively).

    Only exact spellings are read back; any other string stays a string.

    >>> restore_non_finite({"a": ["Infinity", "-inf", 1.5], "status": "finished"})
    {'a': [inf, -inf, 1.5], 'status': 'finished'}
    """
    if isinstance(value, str):
        return _READ_NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [restore_non_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: restore_non_finite(v) for k, v in value.items()}
    return value


# A JSON string literal: the quotes, then anything but a quote or backslash, or an escape pair.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def nesting_depth(text: str) -> int:
    """How deep the arrays and objects of JSON ``text`` nest, without parsing it.

    Brackets inside string literals are ignored; the depth is the maximum over the text of
    (opening brackets so far) - (closing brackets so far).  Linear time, no recursion: it is safe
    on text nested far beyond what :func:`json.loads` survives.

    >>> nesting_depth('{"a": [1, {"b": "[[["}]}'), nesting_depth("3")
    (3, 0)
    """
    outside = _STRING.sub("", text).encode("utf-8")
    codes = np.frombuffer(outside, dtype=np.uint8)
    brackets = codes[np.isin(codes, np.frombuffer(b"[]{}", dtype=np.uint8))]
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max(initial=0))


def loads_limited(text: str, *, max_chars: int, max_depth: int) -> Any:
    """Parse JSON ``text`` after checking, cheaply, that it is not too long or too deep.

    Raises:
        ValueError: more than ``max_chars`` characters, nesting deeper than ``max_depth``, or not
            JSON (:class:`json.JSONDecodeError`); never ``RecursionError``.

    >>> loads_limited('{"a": [1]}', max_chars=100, max_depth=2)
    {'a': [1]}
    """
    if len(text) > max_chars:
        raise ValueError(f"{len(text):,} characters of JSON, more than the {max_chars:,} allowed")
    depth = nesting_depth(text)
    if depth > max_depth:
        raise ValueError(f"JSON nested {depth:,} deep, deeper than the {max_depth} allowed")
    return json.loads(text)
