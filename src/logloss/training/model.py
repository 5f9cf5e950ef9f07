"""The article's dense network: flatten, then Linear + ReLU (+ Dropout) layers, then logits.

The model outputs *logits* (no softmax inside): the loss applies log-softmax itself, in log space,
which is exact where ``log(softmax(x))`` in two steps would underflow.

    logits = W_L · relu(... relu(W_1 · x + b_1) ...) + b_L        x: (N, H*W) -> logits: (N, C)

``Architecture`` is the JSON-able description saved with every checkpoint; ``DenseNet`` is the
network built from it, and ``check_state_dict`` explains a checkpoint that does not fit it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

ARCHITECTURE_KIND = "dense"


@dataclass(frozen=True)
class Architecture:
    """Shape of a dense classifier: input image shape, hidden widths, classes, dropout."""

    input_shape: tuple[int, ...] = (28, 28)
    hidden: tuple[int, ...] = (256, 256)
    num_classes: int = 10
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not self.input_shape or any(s < 1 for s in self.input_shape):
            raise ValueError(f"input_shape must be positive sizes, got {self.input_shape}")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden layer widths must be at least 1, got {list(self.hidden)}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

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
                f"unknown architecture field(s) {unknown}; expected only {sorted(known)}"
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


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise a ``ValueError`` saying how ``state`` differs from ``model``'s parameters.

    Args:
        model: the network built from the checkpoint's architecture.
        state: tensors read from ``source`` (a file name, for the message).
    """
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    problems = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        problems.append(f"missing {missing}")
    if unexpected:
        problems.append(f"unexpected {unexpected}")
    for name in sorted(set(expected) & set(found)):
        if expected[name] != found[name]:
            problems.append(
                f"{name} has shape {list(found[name])}, the architecture needs "
                f"{list(expected[name])}"
            )
    if problems:
        raise ValueError(
            f"checkpoint weights in {source} do not match the architecture "
            f"{getattr(model, 'architecture', '?')}: " + "; ".join(problems) + ". The weights "
            "come from a different network: load them with the checkpoint.json they were saved "
            "with, or train again."
        )
