"""What each training step uses: the loss function, the optimiser and the learning-rate schedule."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from logloss.fused import cross_entropy as fused_cross_entropy
from logloss.losses import cross_entropy
from logloss.training.config import LOSSES, TrainConfig, check_choice

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_loss(name: str, label_smoothing: float = 0.0) -> LossFunction:
    """The training loss ``(logits (B, C), target (B,)) -> mean cross-entropy``.

    ``logloss``: this package's :func:`logloss.losses.cross_entropy`; ``torch``:
    ``torch.nn.functional.cross_entropy``; ``fused``: :func:`logloss.fused.cross_entropy`.
    All three compute ``mean(logsumexp(z) - z[y])`` (with label smoothing if asked).
    """
    check_choice("loss", name, LOSSES)
    function = {"torch": F.cross_entropy, "logloss": cross_entropy, "fused": fused_cross_entropy}[
        name
    ]

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return function(logits, target, label_smoothing=label_smoothing)

    return loss


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or SGD with Nesterov momentum."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.momentum > 0,
        weight_decay=config.weight_decay,
    )


def make_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-step learning-rate schedule: one-cycle (warm up to lr, anneal), cosine, or none."""
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total_steps
        )
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None
