"""Every option of a training run, in one typed dataclass (no torch needed to read it).

``TrainConfig`` is saved as JSON next to every checkpoint and read back with
``TrainConfig.from_dict``, which refuses unknown options.  ``PRESETS`` names whole sets of
options: ``default`` (fast: about 98% on MNIST in seconds on a CPU) and ``best`` (about 99.2%
in minutes).  Kept free of torch so that ``logloss --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "cosine", "constant")
LOSSES = ("logloss", "torch", "fused")
DEFAULT_VALIDATION_FRACTION = 1 / 12  # 5,000 of MNIST's 60,000 training images
# Caps for a dense network of the MNIST family (see docs/training.md, "What is validated"):
# checked before anything is allocated, for a command line and for a checkpoint.json alike.
MAX_HIDDEN_WIDTH = 16_384  # units in one hidden layer (the best preset uses 1,024)
MAX_HIDDEN_LAYERS = 16
MAX_SEED = 2**63 - 1  # torch.manual_seed takes at most 64 bits


# --- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; saved as JSON next to each checkpoint.

    Defaults are the fast preset (>= 98% test accuracy on MNIST in seconds on a CPU); see
    :data:`PRESETS` for ``best``.  Augmentation magnitudes are in degrees, a fraction of the size,
    and pixels.  ``validation_size`` is a count of training samples or a fraction of them: the
    default 1/12 holds out 5,000 of MNIST's 60,000 and 120 of digits' 1,437.
    """

    dataset: str = "mnist"
    hidden: tuple[int, ...] = (256, 256)
    epochs: int = 5
    batch_size: int = 256
    lr: float = 3e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    momentum: float = 0.9
    schedule: str = "onecycle"
    label_smoothing: float = 0.0
    dropout: float = 0.0
    augment: bool = False
    augment_rotation: float = 10.0
    augment_scale: float = 0.1
    augment_shift: float = 2.0
    augment_elastic: float = 1.5
    loss: str = "logloss"
    validation_size: int | float = DEFAULT_VALIDATION_FRACTION
    target_accuracy: float | None = None
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        hidden = parse_hidden(self.hidden) if isinstance(self.hidden, str) else self.hidden
        object.__setattr__(self, "hidden", check_hidden(hidden, at_least=1))
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_validation_size(self.validation_size)
        _check_int("seed", self.seed, 0, MAX_SEED)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("loss", self.loss, LOSSES)
        _check_range("lr", self.lr, 0.0, math.inf, low_open=True)
        _check_range("weight_decay", self.weight_decay, 0.0, math.inf)
        _check_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _check_range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        _check_range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        _check_range("augment_rotation", self.augment_rotation, 0.0, 180.0)
        _check_range("augment_scale", self.augment_scale, 0.0, 1.0, high_open=True)
        _check_range("augment_shift", self.augment_shift, 0.0, math.inf)
        _check_range("augment_elastic", self.augment_elastic, 0.0, math.inf)
        if not isinstance(self.augment, bool):
            raise ValueError(f"augment must be true or false, got {self.augment!r}")
        if self.target_accuracy is not None:
            _check_range("target_accuracy", self.target_accuracy, 0.0, 1.0, low_open=True)
        if not isinstance(self.dataset, str) or not isinstance(self.device, str):
            raise ValueError("dataset and device must be strings")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready options (``hidden`` as a list)."""
        data = dataclasses.asdict(self)
        data["hidden"] = list(self.hidden)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Options from a dict (e.g. ``checkpoint.json``); an unknown key is a ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown training option(s) {unknown[:10]}{' ...' if len(unknown) > 10 else ''}; "
                f"known options: {', '.join(sorted(known))}"
            )
        return cls(**data)

    @classmethod
    def preset(cls, name: str = "default", **overrides: Any) -> TrainConfig:
        """A named preset (see :data:`PRESETS`) with some options changed.

        >>> TrainConfig.preset("best").augment
        True
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})


# "best": augmentation (random rotation, scale, shift and an elastic distortion, drawn per
# sample on the device), dropout, a wider network and a longer schedule.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "best": {
        "hidden": (1024, 1024),
        "epochs": 50,
        "lr": 1e-3,
        "dropout": 0.2,
        "augment": True,
    },
}


def parse_hidden(text: str) -> tuple[int, ...]:
    """``"1024,1024"`` -> ``(1024, 1024)``; every comma separates two widths.

    An empty width (``"256,,256"``, ``"256,"``) is an error, not a silently different network.

    >>> parse_hidden("256, 128")
    (256, 128)
    """
    parts = [part.strip() for part in str(text).split(",")]
    try:
        widths = tuple(int(part) for part in parts)
    except ValueError:
        empty = [index for index, part in enumerate(parts) if not part]
        where = f" (width {empty[0] + 1} of {len(parts)} is empty)" if empty else ""
        raise ValueError(
            f"hidden must be comma-separated layer widths such as 256,256; got {text!r}{where}"
        ) from None
    return widths


def check_hidden(widths: Any, *, at_least: int = 0) -> tuple[int, ...]:
    """Hidden layer widths as a tuple of ints, each in [1, MAX_HIDDEN_WIDTH], at most
    MAX_HIDDEN_LAYERS of them (and ``at_least``); a float, a bool or a string is refused, never
    rounded.

    >>> check_hidden([256, 128])
    (256, 128)
    """
    if not isinstance(widths, (list, tuple)) or not at_least <= len(widths) <= MAX_HIDDEN_LAYERS:
        raise ValueError(
            f"hidden must be a list of {at_least} to {MAX_HIDDEN_LAYERS} layer widths, got "
            f"{_short(widths)}"
        )
    for width in widths:
        if not is_integer(width) or not 1 <= width <= MAX_HIDDEN_WIDTH:
            raise ValueError(
                f"hidden layer widths must be whole numbers from 1 to {MAX_HIDDEN_WIDTH:,}, got "
                f"{_short(list(widths))}"
            )
    return tuple(int(width) for width in widths)


def is_integer(value: Any) -> bool:
    """An int (NumPy's too), not a bool and not a float such as 256.0."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _short(value: Any) -> str:
    """``repr(value)``, cut to 80 characters for an error message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_int(name: str, value: Any, minimum: int, maximum: float = math.inf) -> None:
    if not is_integer(value) or not minimum <= value <= maximum:
        upper = f" and <= {maximum}" if math.isfinite(maximum) else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{upper}, got {_short(value)}")


def _check_validation_size(value: Any) -> None:
    """A count >= 1 or a fraction in (0, 1)."""
    if isinstance(value, float) and 0.0 < value < 1.0:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"validation_size must be a count of samples >= 1 or a fraction in (0, 1), got "
            f"{value!r}"
        )


def parse_validation_size(text: str) -> int | float:
    """``"5000"`` -> 5000 (a count); ``"0.1"`` -> 0.1 (a fraction of the training set).

    >>> parse_validation_size("5000"), parse_validation_size("0.1")
    (5000, 0.1)
    """
    try:
        value: int | float = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"validation size must be a count such as 5000 or a fraction such as 0.1; "
                f"got {text!r}"
            ) from None
    _check_validation_size(value)
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_range(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        closed_high = not high_open and math.isfinite(high)  # an infinite end is never included
        interval = f"{'(' if low_open else '['}{low}, {high}{']' if closed_high else ')'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
