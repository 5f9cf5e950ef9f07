"""Where a run stands between two steps, and how ``--resume`` gets back there bit for bit.

``resume.safetensors`` holds a :class:`RunState` plus the model, optimiser, schedule and random
generators (:meth:`RunState.to_state`); :func:`saved_state` reads it back for a run that is not
complete and was saved with the same options, after :func:`validate_resume_state` has checked
every part of it against the run's options: nothing of a damaged file is used.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from logloss.training import run_folder
from logloss.training.config import TrainConfig, is_integer
from logloss.training.history import EpochRecord
from logloss.training.model import Architecture, DenseNet, check_shapes, parameter_shapes
from logloss.training.optimization import make_optimizer, make_scheduler
from logloss.training.state_file import Limits

# A resume state's JSON: 64 KiB (options, optimiser and schedule settings), 1 KiB per epoch
# (the records); its tensors: the model and two Adam moments, the permutation, 64 KiB of RNG
# states and counters.  Anything bigger is refused before it is read.
RESUME_JSON_BYTES = 2**16
RESUME_JSON_BYTES_PER_EPOCH = 2**10
RESUME_EXTRA_TENSOR_BYTES = 2**16
CUDA_RNG_STATE_BYTES = 16  # a CUDA generator's state: its seed and offset, 8 bytes each
REQUIRED_KEYS = (
    "config",
    "epoch",
    "step",
    "permutation",
    "running",
    "best_accuracy",
    "elapsed",
    "model",
    "optimizer",
    "scheduler",
    "rng",
    "best_epoch",
    "initial_loss",
    "records",
)


@dataclass
class RunState:
    """The position of a run: with the model, optimiser, schedule and generators, it is all that
    ``resume.safetensors`` holds.

    ``permutation`` and ``running`` are ``None`` at an epoch boundary; mid-epoch they are the
    epoch's shuffle (N,) and its running sums (loss and correct count on the device, ``seen``).
    """

    epoch: int = 0  # 0-based index of the epoch to run (= epochs completed at a boundary)
    step: int = 0  # steps of that epoch already done
    permutation: torch.Tensor | None = None
    running: dict[str, Any] | None = None
    best_accuracy: float = -1.0
    elapsed: float = 0.0  # training seconds so far (evaluation excluded)

    def to_state(self) -> dict[str, Any]:
        """This position as the JSON-and-tensor part of a resume state."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "permutation": self.permutation,
            "running": self.running,
            "best_accuracy": self.best_accuracy,
            "elapsed": self.elapsed,
        }

    @classmethod
    def from_state(cls, saved: Mapping[str, Any]) -> RunState:
        """Inverse of :meth:`to_state` (extra keys of ``saved`` are ignored)."""
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls)})


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """The global torch generator's state, the shuffle generator's, and CUDA's on CUDA."""
    state = {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(
    state: Mapping[str, torch.Tensor], generator: torch.Generator, device: torch.device
) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    generator.set_state(state["shuffle"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    """Batches in one epoch: ``ceil(train_size / batch_size)`` (the last one may be short)."""
    return math.ceil(train_size / batch_size)


def saved_state(config: TrainConfig, out_dir: Path) -> dict[str, Any]:
    """The resume state of an unfinished run in ``out_dir``, saved with the same options.

    ``checkpoint.json`` gives the architecture and the training set's size; the file is then read
    within :func:`resume_limits` and checked whole by :func:`validate_resume_state`.

    Raises:
        ValueError: a complete run, different options, or a missing, damaged or forged file.
    """
    metadata = run_folder.read_metadata(out_dir)
    status = metadata.get("status")
    if status in ("finished", "target_reached"):
        raise ValueError(
            f"the run in {out_dir} is complete (status: {status}): nothing to resume; "
            "start a new run with another --out folder"
        )
    architecture, train_size = _run_shape(metadata, config, out_dir / run_folder.METADATA_FILE)
    path = out_dir / run_folder.RESUME_FILE
    saved = run_folder.load_state(path, resume_limits(config, architecture, train_size))
    validate_resume_state(saved, config, architecture, train_size, path)
    return saved


def _run_shape(metadata: Mapping, config: TrainConfig, path: Path) -> tuple[Architecture, int]:
    """The run's architecture (that of ``config``) and training set size, from its
    ``checkpoint.json`` (already validated)."""
    run_folder.require_fields(metadata, path, ("architecture", "sizes"))
    architecture = Architecture.from_dict(metadata["architecture"])
    train_size = metadata["sizes"].get("train")
    problem = None
    if not is_integer(train_size) or train_size < 1:
        problem = "sizes has no training set size"
    elif (config.hidden, config.dropout) != (architecture.hidden, architecture.dropout):
        problem = f"its architecture {architecture.to_dict()} is not that of its config"
    if problem:
        raise ValueError(
            f"{path} is damaged: {problem}; the run cannot be resumed: start a new run with "
            "another --out"
        )
    return architecture, train_size


def resume_limits(config: TrainConfig, architecture: Architecture, train_size: int) -> Limits:
    """The most a legitimate ``resume.safetensors`` of this run holds (see the constants)."""
    parameters = architecture.parameter_count
    return Limits(
        header_bytes=RESUME_JSON_BYTES + RESUME_JSON_BYTES_PER_EPOCH * config.epochs,
        json_depth=run_folder.MAX_JSON_DEPTH,
        tensor_bytes=3 * 4 * parameters + 8 * train_size + RESUME_EXTRA_TENSOR_BYTES,
    )


def check_resumable(saved: Mapping[str, Any], config: TrainConfig, out_dir: Path) -> None:
    """Refuse to resume with options that differ from the saved run's (except the device)."""
    stored = TrainConfig.from_dict(saved)
    differ = [
        f"{f.name} (saved {getattr(stored, f.name)!r}, given {getattr(config, f.name)!r})"
        for f in dataclasses.fields(TrainConfig)
        if f.name != "device" and getattr(stored, f.name) != getattr(config, f.name)
    ]
    if differ:
        raise ValueError(
            f"cannot resume the run in {out_dir} with different options: {'; '.join(differ)}. "
            "Resume with the saved options (omit them), or start a new run with another --out"
        )


def validate_resume_state(
    saved: Any, config: TrainConfig, architecture: Architecture, train_size: int, path: Path
) -> None:
    """Check a whole resume state against the run's options before any of it is used
    (``architecture``: the options' network, for the run's data; ``train_size``: its samples).

    Rules: a JSON object with every key of :data:`REQUIRED_KEYS`; ``config`` valid and equal to
    ``config`` (device aside); ``0 <= epoch <= epochs``; at an epoch boundary ``permutation``
    and ``running`` null and ``step`` 0, mid-epoch ``1 <= step < steps per epoch``,
    ``permutation`` a shuffle of the ``train_size`` samples and ``running`` the sums of
    ``step`` full batches; one record per finished epoch, numbered
    from 1, ``best_epoch`` among them and ``best_accuracy`` its validation accuracy; ``model``
    the architecture's float32 tensors; the optimiser's settings those of the options and its
    state one entry per parameter once a step is done (Adam's step count = steps done); the
    schedule's settings those of the options and its position the steps done; ``rng`` states
    that torch accepts.

    Raises:
        ValueError: ``<path> is damaged: <field> ...``, and what to do.
    """
    _check_keys(saved, path)
    try:
        TrainConfig.from_dict(_mapping("config", saved["config"]))
    except (TypeError, ValueError) as error:
        raise _damaged(path, error) from None
    check_resumable(saved["config"], config, path.parent)
    try:
        steps = steps_per_epoch(train_size, config.batch_size)
        done = _check_position(saved, config, steps, train_size)
        _check_history(saved)
        shapes = parameter_shapes(architecture)
        _check_tensors("model", saved["model"], shapes, torch.float32)
        optimizer, scheduler = _fresh_schedule(config, architecture, config.epochs * steps)
        _check_optimizer(saved["optimizer"], optimizer, list(shapes.values()), done)
        _check_scheduler(saved["scheduler"], scheduler, done)
        _check_rng(saved["rng"])
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as error:
        raise _damaged(path, error) from None


def _damaged(path: Path, error: Exception | str) -> ValueError:
    return ValueError(
        f"{path} is damaged: {error}; the run cannot be resumed from it: start a new run with "
        "another --out (its best/last weights may still load)"
    )


def _check_keys(saved: Any, path: Path) -> None:
    if not isinstance(saved, dict):
        raise _damaged(path, f"it holds a {type(saved).__name__}, not a run's state")
    missing = [key for key in REQUIRED_KEYS if key not in saved]
    if missing:
        raise _damaged(path, f"it has no {', '.join(map(repr, missing))} entry")


def _mapping(name: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object, got {_short(value)}")
    return value


def _short(value: Any) -> str:
    """``repr(value)`` cut to 60 characters (a tensor by its shape), for a message."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _whole(name: str, value: Any, low: int, high: int) -> int:
    """``value``, a whole number in [low, high] (not a bool, a float or a string)."""
    if not is_integer(value) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {_short(value)}")
    return int(value)


def _number(name: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {_short(value)}")
    return float(value)


def _tensor(name: str, value: Any, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dtype != dtype or value.shape != shape:
        raise ValueError(
            f"{name} must be a {dtype} tensor of shape {list(shape)}, got {_short(value)}"
        )
    return value


def _check_position(saved: Mapping, config: TrainConfig, steps: int, train_size: int) -> int:
    """``epoch``, ``step``, ``permutation`` and ``running``; returns the steps done so far."""
    epoch = _whole("epoch", saved["epoch"], 0, config.epochs)
    permutation, running = saved["permutation"], saved["running"]
    if permutation is None and running is None:
        _whole("step (at an epoch boundary)", saved["step"], 0, 0)
        return epoch * steps
    if permutation is None or running is None:
        raise ValueError("permutation and running must both be null or both be set")
    _whole("epoch (in progress)", epoch, 0, config.epochs - 1)
    step = _whole("step (in an epoch)", saved["step"], 1, steps - 1)
    _tensor("permutation", permutation, (train_size,), torch.int64)
    if not torch.equal(torch.sort(permutation).values, torch.arange(train_size)):
        raise ValueError(f"permutation must hold each of 0..{train_size - 1} once")
    running = _mapping("running", running)
    if set(running) != {"loss", "correct", "seen"}:
        raise ValueError(f"running must hold loss, correct and seen, got {sorted(running)[:5]}")
    seen = _whole(
        "running seen", running["seen"], step * config.batch_size, step * config.batch_size
    )
    _tensor("running loss", running["loss"], (), torch.float32)
    correct = _tensor("running correct", running["correct"], (), torch.int64)
    _whole("running correct", int(correct), 0, seen)
    return epoch * steps + step


def _check_history(saved: Mapping) -> None:
    """``records`` (one per finished epoch), ``best_epoch``, ``best_accuracy``, the initial
    loss and accuracy, ``elapsed``."""
    records = saved["records"]
    if not isinstance(records, list) or len(records) != saved["epoch"]:
        raise ValueError(f"records must list the {saved['epoch']} finished epochs")
    fields = [field.name for field in dataclasses.fields(EpochRecord)]
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict) or sorted(record) != sorted(fields):
            raise ValueError(f"record {number} must hold {', '.join(fields)}")
        _whole(f"record {number}'s epoch", record["epoch"], number, number)
        for name in fields[1:]:
            _number(f"record {number}'s {name}", record[name])
    best_accuracy = _number("best_accuracy", saved["best_accuracy"])
    if records:
        best = _whole("best_epoch", saved["best_epoch"], 1, len(records))
        if best_accuracy != records[best - 1]["val_accuracy"]:
            raise ValueError("best_accuracy must be the best epoch's validation accuracy")
    elif saved["best_epoch"] is not None or best_accuracy != -1.0:
        raise ValueError("best_epoch must be null and best_accuracy -1 before the first epoch")
    _number("initial_loss", saved["initial_loss"])
    _number("initial_accuracy", saved.get("initial_accuracy", math.nan))
    elapsed = _number("elapsed", saved["elapsed"])
    if not (math.isfinite(elapsed) and elapsed >= 0):
        raise ValueError(f"elapsed must be a finite number of seconds >= 0, got {elapsed}")


def _check_tensors(
    name: str, value: Any, shapes: Mapping[str, tuple[int, ...]], dtype: torch.dtype
) -> None:
    """A dict of tensors with exactly the names and shapes of ``shapes``, all of ``dtype``."""
    tensors = _mapping(name, value)
    found = {key: tuple(getattr(t, "shape", ())) for key, t in tensors.items()}
    check_shapes(shapes, found, f"the {name} state", "of the run's options")
    for key, tensor in tensors.items():
        _tensor(f"{name} {key}", tensor, shapes[key], dtype)


def _fresh_schedule(
    config: TrainConfig, architecture: Architecture, total_steps: int
) -> tuple[dict, dict | None]:
    """The state dicts of a new run's optimiser and schedule, built on shapes only."""
    with torch.device("meta"):  # no memory, and no random numbers drawn
        model = DenseNet(architecture)
    optimizer = make_optimizer(config, model)
    scheduler = make_scheduler(config, optimizer, total_steps)
    return optimizer.state_dict(), None if scheduler is None else scheduler.state_dict()


# optimiser settings that the schedule moves (one-cycle moves Adam's beta1, SGD's momentum)
_SCHEDULED = ("lr", "betas", "momentum")


def _check_optimizer(
    saved: Any, fresh: Mapping, shapes: Sequence[tuple[int, ...]], steps_done: int
) -> None:
    """Settings as a new run's (the scheduled ones finite numbers); state per parameter."""
    saved = _mapping("optimizer", saved)
    if set(saved) != {"state", "param_groups"}:
        raise ValueError("optimizer must hold state and param_groups")
    groups = saved["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(fresh["param_groups"]):
        raise ValueError(f"optimizer param_groups must list {len(fresh['param_groups'])} group")
    for group, expected in zip(groups, fresh["param_groups"], strict=True):
        if set(_mapping("optimizer param_groups", group)) != set(expected):
            raise ValueError(f"optimizer param_groups must hold {', '.join(sorted(expected))}")
        for key, value in expected.items():
            if key in _SCHEDULED:
                _same_numbers(f"optimizer {key}", group[key], value)
            elif not _same(group[key], value):
                raise ValueError(f"optimizer {key} is {_short(group[key])}, not {value!r}")
    _check_optimizer_state(saved["state"], fresh, shapes, steps_done)


def _same(value: Any, expected: Any) -> bool:
    """``value == expected`` for JSON values of the same types throughout (so a tensor, or a
    bool where a number belongs, is never equal, and nothing asks a tensor for its truth)."""
    if type(value) is not type(expected):
        return False
    if isinstance(expected, dict):
        return value.keys() == expected.keys() and all(_same(value[k], expected[k]) for k in value)
    if isinstance(expected, (list, tuple)):
        pairs = zip(value, expected, strict=False)
        return len(value) == len(expected) and all(_same(a, b) for a, b in pairs)
    return value == expected


def _same_numbers(name: str, value: Any, like: Any) -> None:
    """Finite numbers with the structure of ``like`` (a number, or a tuple of numbers)."""
    values = value if isinstance(like, tuple) else (value,)
    count = len(like) if isinstance(like, tuple) else 1
    if not isinstance(values, tuple) or len(values) != count:
        raise ValueError(f"{name} must be {count} number(s), got {_short(value)}")
    for number in values:
        if not math.isfinite(_number(name, number)):
            raise ValueError(f"{name} must be finite, got {number}")


def _check_optimizer_state(
    state: Any, fresh: Mapping, shapes: Sequence[tuple[int, ...]], steps_done: int
) -> None:
    """Empty before the first step; after it, every parameter's Adam moments and step count
    (AdamW), or its momentum buffer (SGD with momentum; SGD without momentum keeps none)."""
    group = fresh["param_groups"][0]
    adam = "betas" in group
    names = ("step", "exp_avg", "exp_avg_sq") if adam else ("momentum_buffer",)
    keeps_state = adam or group["momentum"] != 0
    expected = set(range(len(shapes))) if steps_done and keeps_state else set()
    state = _mapping("optimizer state", state)
    if set(state) != expected:
        raise ValueError(f"optimizer state must have an entry for each of {len(expected)} tensors")
    for index, entry in state.items():
        if set(_mapping("optimizer state entry", entry)) != set(names):
            raise ValueError(f"optimizer state {index} must hold {', '.join(names)}")
        for key in names:
            shape = () if key == "step" else shapes[index]  # Adam's step count is a scalar
            _tensor(f"optimizer state {index} {key}", entry[key], shape, torch.float32)
        if adam and float(entry["step"]) != steps_done:
            raise ValueError(
                f"optimizer state {index} counts {float(entry['step'])} steps, not {steps_done}"
            )


def _check_scheduler(saved: Any, fresh: Mapping | None, steps_done: int) -> None:
    """Null for a constant learning rate; else a new run's schedule, ``steps_done`` steps on."""
    if fresh is None:
        if saved is not None:
            raise ValueError("scheduler must be null: the options use a constant learning rate")
        return
    saved = _mapping("scheduler", saved)
    if set(saved) != set(fresh):
        raise ValueError(f"scheduler must hold {', '.join(sorted(fresh))}")
    position = {"last_epoch": steps_done, "_step_count": steps_done + 1}
    for key, value in fresh.items():
        if key == "_last_lr":
            if not isinstance(saved[key], list):
                raise ValueError(f"scheduler _last_lr must be a list, got {_short(saved[key])}")
            _same_numbers("scheduler _last_lr", tuple(saved[key]), tuple(value))
        elif not _same(saved[key], position.get(key, value)):
            raise ValueError(
                f"scheduler {key} is {_short(saved[key])}, not {position.get(key, value)!r}"
            )


def _check_rng(rng: Any) -> None:
    """The CPU generators' states (torch accepts them: tried on a scratch generator) and, from a
    CUDA run, the CUDA generator's."""
    rng = _mapping("rng", rng)
    if not {"torch", "shuffle"} <= set(rng) <= {"torch", "shuffle", "cuda"}:
        raise ValueError(f"rng must hold torch, shuffle (and cuda), got {sorted(rng)[:5]}")
    size = tuple(torch.get_rng_state().shape)
    for key in ("torch", "shuffle"):
        try:
            torch.Generator().set_state(_tensor(f"rng {key}", rng[key], size, torch.uint8))
        except RuntimeError as error:
            raise ValueError(f"rng {key} is not a generator's state ({error})") from None
    if "cuda" in rng:
        _tensor("rng cuda", rng["cuda"], (CUDA_RNG_STATE_BYTES,), torch.uint8)
