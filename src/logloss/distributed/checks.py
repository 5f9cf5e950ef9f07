"""Input checks that every rank agrees on: a bad input is the same clear error on every rank.

A rank that raised on its own would leave the others waiting in the next collective.  So each
rank checks its own inputs without raising, turns what it found (its shapes, dtypes, options,
checksums of the replicated tensors, or its error message) into a row of integers, and one
all-gather gives every rank every row; then every rank applies the same rules to the same rows
and raises the same ``ValueError``, naming the rank.  Cost: one all-gather of ~25 integers and
an O(N) pass over the targets (and O(N H) over the hidden states of the linear loss).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from logloss._checks import check_index_target, check_label_smoothing, check_reduction
from logloss._tensors import is_tensor
from logloss.distributed.group import (
    ShardLayout,
    all_gather_stacked,
    message_device,
    resolve_group,
)
from logloss.distributed.row_math import REDUCTIONS, LossOptions
from logloss.fused.checks import check_target_tensor

Facts = dict[str, int]

_DTYPES = (
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
)
_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu", "meta")
_WORDS = {2: torch.int16, 4: torch.int32}  # an element's bits as integer words (8 bytes: two)


def dtype_code(dtype: torch.dtype) -> int:
    return _DTYPES.index(dtype) if dtype in _DTYPES else len(_DTYPES)


def device_code(device: torch.device) -> int:
    kind = device.type
    return _DEVICE_TYPES.index(kind) if kind in _DEVICE_TYPES else len(_DEVICE_TYPES)


def float_bits(x: float) -> int:
    """The IEEE float64 bits of ``x`` as an int64 (so floats travel in the integer facts)."""
    return struct.unpack("<q", struct.pack("<d", float(x)))[0]


def bits_float(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<q", bits))[0]


def checksums(x: torch.Tensor) -> tuple[int, int]:
    """Two exact, order-independent checksums of ``x``'s bits: equal tensors give equal pairs.

    Rows are x's first axis (elements of a 1-D tensor); sums of the 16-/32-bit words of each row,
    then their plain and position-weighted sums (a permutation of rows changes the second).
    """
    rows = x.shape[0] if x.dim() else 1
    flat = x.detach().contiguous().reshape(rows, x.numel() // rows if rows else 0)
    size = flat.element_size()
    words = flat.to(torch.int32) if size == 1 else flat.view(_WORDS[min(size, 4)])
    row_sums = words.sum(dim=1, dtype=torch.int64)  # (rows,)
    position = torch.arange(row_sums.shape[0], device=x.device) % 251 + 1
    return int(row_sums.sum()), int((row_sums * position).sum())


def tensor_facts(x: torch.Tensor | None, name: str) -> Facts:
    """Whether given, dtype code, size and checksums of a tensor that must be identical on
    every rank (the size too: zeros add nothing to the checksums)."""
    if x is None:
        return {f"{name}_given": 0}
    first, second = checksums(x)
    return {
        f"{name}_given": 1,
        f"{name}_dtype": dtype_code(x.dtype),
        f"{name}_numel": x.numel(),
        f"{name}_sum": first,
        f"{name}_mix": second,
    }


def agree(
    local: Callable[[], Facts], names: tuple[str, ...], group: dist.ProcessGroup | None
) -> list[Facts]:
    """Every rank's facts (``local()``'s dict, read in ``names`` order), after one all-gather.

    An exception raised by ``local()`` is not raised at once: its message travels to every rank
    (a second all-gather, only when some rank failed) and all raise it as a ``ValueError``,
    with the rank (an exception other than ValueError keeps its type name in the message).
    """
    try:
        facts, error = local(), b""
    except Exception as exc:  # any failure here must reach the other ranks, or they would wait
        kind = "" if isinstance(exc, ValueError) else f"{type(exc).__name__}: "
        facts, error = {}, f"{kind}{exc}".encode()
    row = torch.tensor([len(error)] + [facts.get(name, 0) for name in names], dtype=torch.int64)
    device = message_device(group)
    gathered = all_gather_stacked(row, group, device).tolist()  # (P, 1 + len(names))
    lengths = [r[0] for r in gathered]
    if any(lengths):
        _raise_errors(error, lengths, group, device)
    return [dict(zip(names, r[1:], strict=True)) for r in gathered]


def _raise_errors(
    error: bytes, lengths: list[int], group: dist.ProcessGroup | None, device: torch.device
) -> None:
    """Share every rank's error message (UTF-8 bytes, padded) and raise them all, everywhere."""
    padded = np.zeros(max(lengths), dtype=np.uint8)
    padded[: len(error)] = np.frombuffer(error, dtype=np.uint8)
    messages = all_gather_stacked(torch.from_numpy(padded), group, device).numpy()
    ranks_by_message: dict[str, list[str]] = {}
    for r, n in enumerate(lengths):
        if n:
            text = bytes(messages[r, :n]).decode(errors="replace")
            ranks_by_message.setdefault(text, []).append(str(r))
    found = [
        f"rank{'s' if len(ranks) > 1 else ''} {', '.join(ranks)} of {len(lengths)}: {text}"
        for text, ranks in ranks_by_message.items()
    ]
    raise ValueError("; ".join(found))


def require_equal(
    facts: list[Facts], names: tuple[str, ...], what: str, rule: str, show: Callable | None
) -> None:
    """Raise when the facts ``names`` differ between ranks: '<what> differs across ranks
    (rank 0: x, rank 1: y): <rule>' (values shown through ``show``; None hides them)."""
    values = [tuple(f[name] for name in names) for f in facts]
    if len(set(values)) <= 1:
        return
    if show is None:
        detail = ", ".join(f"rank {r}" for r, v in enumerate(values) if v != values[0])
        detail = f"rank 0 vs {detail}"
    else:
        detail = ", ".join(f"rank {r}: {show(*v)}" for r, v in enumerate(values))
    raise ValueError(f"{what} differs across ranks ({detail}): {rule}")


def dtype_name(code: int) -> str:
    return str(_DTYPES[code]).removeprefix("torch.") if code < len(_DTYPES) else "other"


def device_name(code: int) -> str:
    return _DEVICE_TYPES[code] if code < len(_DEVICE_TYPES) else "other"


# --------------------------------------------------------------------------------------------
# The checks of one rank's own arguments (raising; run inside ``agree``).
# --------------------------------------------------------------------------------------------


def check_float_matrix(x: Any, name: str, shape: str) -> torch.Tensor:
    """A 2-D floating tensor named ``name`` with the documented ``shape`` (e.g. '(N, V_r)')."""
    if not is_tensor(x):
        raise ValueError(f"{name} must be a torch.Tensor of shape {shape}; got {type(x).__name__}")
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(
            f"{name} must be a 2-D floating tensor of shape {shape}; got shape "
            f"{tuple(x.shape)}, dtype {x.dtype}"
        )
    return x


def check_target(target: Any, n: int, like: torch.Tensor, against: str) -> torch.Tensor:
    """(N,) integer class indices on ``like``'s device; returned as contiguous int64."""
    check_target_tensor(
        target,
        (n,),
        like,
        against,
        kinds="integer class indices (int64); the vocabulary-parallel loss takes no "
        "probability targets",
        detail="one global class index per row",
    )
    return target.to(torch.int64).contiguous()


def check_scale(value: Any, name: str, *, positive: bool) -> float:
    """A finite number >= 0 (or > 0 with ``positive``) for z_loss and softcap."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x) or x < 0 or (positive and x == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}")
    return x


def check_class_weight(weight: Any, like: torch.Tensor) -> torch.Tensor | None:
    """The full (V,) class weights (finite, >= 0) in the accumulation dtype, or None."""
    if weight is None:
        return None
    if not is_tensor(weight) or weight.dim() != 1 or not weight.is_floating_point():
        got = (tuple(weight.shape), weight.dtype) if is_tensor(weight) else type(weight).__name__
        raise ValueError(f"weight must be a 1-D floating tensor of shape (V,); got {got}")
    if weight.device != like.device:
        raise ValueError(f"weight is on {weight.device} but the logits are on {like.device}")
    if not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
        raise ValueError("weight must hold finite class weights >= 0")
    acc = torch.float64 if like.dtype == torch.float64 else torch.float32
    return weight.to(acc).contiguous()


def option_facts(
    ignore_index: Any, reduction: str, label_smoothing: Any, z_loss: Any, softcap: Any
) -> tuple[Facts, dict[str, Any]]:
    """Validate the scalar options; their facts (for the cross-rank comparison) and values."""
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise ValueError(f"ignore_index must be an int, got {ignore_index!r}")
    check_reduction(reduction)
    values = {
        "ignore_index": int(ignore_index),
        "reduction": reduction,
        "smoothing": check_label_smoothing(label_smoothing),
        "z_loss": check_scale(z_loss, "z_loss", positive=False),
        "softcap": None if softcap is None else check_scale(softcap, "softcap", positive=True),
    }
    facts = {
        "ignore_index": values["ignore_index"],
        "reduction": REDUCTIONS.index(reduction),
        "smoothing": float_bits(values["smoothing"]),
        "z_loss": float_bits(values["z_loss"]),
        "softcap": float_bits(-1.0 if softcap is None else values["softcap"]),
    }
    return facts, values


Rule = tuple[tuple[str, ...], str, str, "Callable | None"]
SAME_OPTIONS = "pass the same options on every rank"
SAME_TARGET = "every rank must pass the same global class indices (the target is replicated)"
COMMON_RULES: tuple[Rule, ...] = (
    (("rows",), "the number of rows N", "every rank passes the same N rows", str),
    (("dtype",), "the dtype", "use one dtype on every rank", dtype_name),
    (("device",), "the device type", "use one kind of device on every rank", device_name),
    (("target_given", "target_dtype"), "target's dtype", SAME_TARGET, lambda _, c: dtype_name(c)),
    (("target_numel", "target_sum", "target_mix"), "target", SAME_TARGET, None),
    (("ignore_index",), "ignore_index", SAME_OPTIONS, str),
    (("reduction",), "reduction", SAME_OPTIONS, lambda c: repr(REDUCTIONS[c])),
    (("smoothing",), "label_smoothing", SAME_OPTIONS, bits_float),
    (("z_loss",), "z_loss", SAME_OPTIONS, bits_float),
    (("softcap",), "softcap", SAME_OPTIONS, lambda b: str(bits_float(b)).replace("-1.0", "None")),
    (
        ("weight_given", "weight_numel", "weight_sum", "weight_mix"),
        "the class weight",
        SAME_OPTIONS,
        None,
    ),
)
COMMON_NAMES = tuple(dict.fromkeys(name for names, *_ in COMMON_RULES for name in names))


def common_facts(
    like: torch.Tensor,
    name: str,
    target: Any,
    class_weight: Any,
    options: dict,
    found: dict[str, Any],
) -> Facts:
    """Check the target, options and class weights of the rows of ``like`` (N, .), called
    ``name`` in messages: the facts of :data:`COMMON_RULES`; validated values go into ``found``."""
    found["like"] = like
    found["target"] = check_target(target, like.shape[0], like, name)
    option_values, found["options"] = option_facts(**options)
    found["weight"] = check_class_weight(class_weight, like)
    return {
        "rows": like.shape[0],
        "dtype": dtype_code(like.dtype),
        "device": device_code(like.device),
        **tensor_facts(target, "target"),
        **option_values,
        **tensor_facts(found["weight"], "weight"),
    }


def check_call(
    local: Callable[[dict[str, Any]], Facts],
    names: tuple[str, ...],
    rules: tuple[Rule, ...],
    group: dist.ProcessGroup | None,
) -> tuple[ShardLayout, LossOptions, torch.Tensor]:
    """Validate one call on every rank together: layout, options, (N,) int64 targets.

    ``local(found)`` checks this rank's arguments (raising ValueError), returns its facts
    (``names``: :data:`COMMON_NAMES`, "classes" = V_r, and those of the extra ``rules``) and
    leaves the values of :func:`common_facts` in ``found``.
    """
    rank, _ = resolve_group(group)
    found: dict[str, Any] = {}
    facts = agree(lambda: local(found), (*COMMON_NAMES, "classes", *names), group)
    for rule in (*COMMON_RULES, *rules):
        require_equal(facts, *rule)
    sizes = tuple(f["classes"] for f in facts)
    like, options = found["like"], found["options"]
    target = check_targets_in_range(found["target"], like, sizes, options["ignore_index"])
    check_weight_length(found["weight"], sizes)
    layout = ShardLayout(group, rank, sizes, message_device(group, like.device))
    loss_options = LossOptions(**options, class_weight=found["weight"], n_classes=sum(sizes))
    return layout, loss_options, target


def check_targets_in_range(
    target: torch.Tensor, like: torch.Tensor, sizes: tuple[int, ...], ignore_index: int
) -> torch.Tensor:
    """Targets in [0, V) for V = sum of the shard sizes, or ``ignore_index`` (raises the same
    error on every rank: the targets are identical by then)."""
    n_classes = sum(sizes)
    if n_classes == 0:
        raise ValueError(
            f"the shards hold no classes (sizes {list(sizes)} on ranks 0..{len(sizes) - 1}); "
            "at least one rank needs at least one column of logits"
        )
    checked, _ = check_index_target(target, like[:, :0], n_classes, ignore_index, "logits")
    return checked


def check_weight_length(weight: torch.Tensor | None, sizes: tuple[int, ...]) -> None:
    if weight is not None and weight.shape[0] != sum(sizes):
        raise ValueError(
            f"weight has {weight.shape[0]} entries but the shards hold {sum(sizes)} classes "
            f"({' + '.join(map(str, sizes))} on ranks 0..{len(sizes) - 1}); pass one weight per "
            "class of the whole vocabulary, the same on every rank"
        )
