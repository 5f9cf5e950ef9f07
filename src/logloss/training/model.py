"""The article's dense network: flatten, then Linear + ReLU (+ Dropout) layers, then logits.

The model outputs *logits* (no softmax inside): the loss applies log-softmax itself, in log space,
which is exact where ``log(softmax(x))`` in two steps would underflow.

    logits = W_L · relu(... relu(W_1 · x + b_1) ...) + b_L        x: (N, H*W) -> logits: (N, C)

``Architecture`` is the JSON-able description saved with every checkpoint; ``DenseNet`` is the
network built from it, and ``check_state_dict`` explains a checkpoint that does not fit it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from logloss.training.config import check_hidden, is_integer

ARCHITECTURE_KIND = "dense"
# Caps for the MNIST family (28x28 digits, letters, clothes; 8x8 digits), checked before a model
# is built (see docs/training.md, "What is validated").  The hidden widths' caps are in config.py.
MAX_INPUT_SIZE = 65_536  # input features: a 256x256 image
MAX_CLASSES = 1_000
MAX_PARAMETERS = 50_000_000  # 200 MB of float32; the best preset's network has 1.9 million


@dataclass(frozen=True)
class Architecture:
    """Shape of a dense classifier: input image shape, hidden widths, classes, dropout.

    Every field is checked, types included (``hidden=(256.7,)`` is refused, not rounded), and so
    are the caps above: a network over :data:`MAX_PARAMETERS` is refused before it exists.
    """

    input_shape: tuple[int, ...] = (28, 28)
    hidden: tuple[int, ...] = (256, 256)
    num_classes: int = 10
    dropout: float = 0.0

    def __post_init__(self) -> None:
        shape = self.input_shape
        if not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 3:
            raise ValueError(f"input_shape must be 1 to 3 sizes, got {shape!r:.80}")
        if not all(is_integer(s) and 1 <= s <= MAX_INPUT_SIZE for s in shape):
            raise ValueError(f"input_shape must be positive sizes, got {shape!r:.80}")
        object.__setattr__(self, "input_shape", tuple(int(s) for s in shape))
        object.__setattr__(self, "hidden", check_hidden(self.hidden))
        if not is_integer(self.num_classes) or not 2 <= self.num_classes <= MAX_CLASSES:
            raise ValueError(
                f"num_classes must be at least 2 and at most {MAX_CLASSES}, got "
                f"{self.num_classes!r:.80}"
            )
        dropout = self.dropout
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool):
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r:.80}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self._check_size()

    def _check_size(self) -> None:
        """Refuse an input or a network over the caps (before anything is allocated)."""
        if self.input_size > MAX_INPUT_SIZE:
            raise ValueError(
                f"input_shape {list(self.input_shape)} has {self.input_size:,} features, more "
                f"than the {MAX_INPUT_SIZE:,} a dense network of the MNIST family takes"
            )
        if self.parameter_count > MAX_PARAMETERS:
            raise ValueError(
                f"the network {self.input_size}-{'-'.join(map(str, self.hidden))}-"
                f"{self.num_classes} has {self.parameter_count:,} parameters, more than the "
                f"{MAX_PARAMETERS:,} logloss builds (200 MB of float32): choose narrower layers"
            )

    @property
    def parameter_count(self) -> int:
        """Weights and biases: sum over layers of (inputs + 1) * outputs."""
        widths = [self.input_size, *self.hidden, self.num_classes]
        return sum((a + 1) * b for a, b in itertools.pairwise(widths))

    @property
    def input_size(self) -> int:
        """Number of input features, the product of ``input_shape`` (784 for MNIST)."""
        size = 1
        for s in self.input_shape:
            size *= s
        return size

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description, with ``"kind": "dense"``."""
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["hidden"] = list(self.hidden)
        return {"kind": ARCHITECTURE_KIND, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Architecture:
        """Inverse of :meth:`to_dict`; an unknown kind or key is a ``ValueError``."""
        data = dict(data)
        kind = data.pop("kind", ARCHITECTURE_KIND)
        if kind != ARCHITECTURE_KIND:
            raise ValueError(
                f"unsupported architecture kind {kind!r}: this version of logloss builds only "
                f"{ARCHITECTURE_KIND!r} networks"
            )
        known = {"input_shape", "hidden", "num_classes", "dropout"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown architecture field(s) {unknown[:10]}"
                f"{' ...' if len(unknown) > 10 else ''}; expected only {sorted(known)}"
            )
        return cls(**data)


class DenseNet(nn.Module):
    """Fully connected classifier returning logits of shape (N, C).

    >>> net = DenseNet(Architecture(hidden=(8,), num_classes=3, input_shape=(2, 2)))
    >>> net(torch.zeros(5, 2, 2)).shape
    torch.Size([5, 3])
    """

    def __init__(self, architecture: Architecture) -> None:
        super().__init__()
        self.architecture = architecture
        layers: list[nn.Module] = [nn.Flatten()]
        width = architecture.input_size
        for hidden in architecture.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if architecture.dropout > 0:
                layers.append(nn.Dropout(architecture.dropout))
            width = hidden
        layers.append(nn.Linear(width, architecture.num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, *input_shape) or (N, input_size) float -> logits (N, C)."""
        return self.layers(x)


def parameter_shapes(architecture: Architecture) -> dict[str, tuple[int, ...]]:
    """The state-dict names and shapes of ``DenseNet(architecture)``, without allocating it.

    >>> parameter_shapes(Architecture(input_shape=(2, 2), hidden=(3,), num_classes=2))
    {'layers.1.weight': (3, 4), 'layers.1.bias': (3,), 'layers.3.weight': (2, 3), \
'layers.3.bias': (2,)}
    """
    with torch.device("meta"):  # shapes only: no memory, and no random numbers are drawn
        model = DenseNet(architecture)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise a ``ValueError`` saying how ``state`` differs from ``model``'s parameters.

    Args:
        model: the network built from the checkpoint's architecture.
        state: tensors read from ``source`` (a file name, for the message).
    """
    check_shapes(
        {name: tuple(t.shape) for name, t in model.state_dict().items()},
        {name: tuple(t.shape) for name, t in state.items()},
        source,
        getattr(model, "architecture", "?"),
    )


def check_shapes(
    expected: Mapping[str, tuple[int, ...]],
    found: Mapping[str, tuple[int, ...]],
    source: str,
    architecture: Any,
) -> None:
    """Raise a ``ValueError`` naming the missing, unexpected and misshapen tensors of ``source``.

    Args:
        expected: name -> shape that ``architecture`` needs (:func:`parameter_shapes`).
        found: name -> shape in ``source`` (read from a file's header, before its data).
    """
    problems = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        problems.append(f"missing {missing}")
    if unexpected:
        problems.append(f"unexpected {unexpected[:10]}" + (" ..." if len(unexpected) > 10 else ""))
    for name in sorted(set(expected) & set(found)):
        if tuple(expected[name]) != tuple(found[name]):
            problems.append(
                f"{name} has shape {list(found[name])}, the architecture needs "
                f"{list(expected[name])}"
            )
    if problems:
        raise ValueError(
            f"checkpoint weights in {source} do not match the architecture {architecture}: "
            + "; ".join(problems)
            + ". The weights come from a different network: load them with the checkpoint.json "
            "they were saved with, or train again."
        )
