"""A model's accuracy and mean cross-entropy on a split: the number every run reports."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

EVAL_BATCH = 4096  # inference batch: big enough to be fast, small enough for any device


class Score(NamedTuple):
    """Accuracy (fraction correct) and mean cross-entropy in nats."""

    accuracy: float
    loss: float


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = EVAL_BATCH,
) -> Score:
    """Accuracy and mean cross-entropy of ``model`` on normalised inputs, in eval mode.

    ``loss = (1/N) sum_i (logsumexp(z_i) - z_i[y_i])``, summed per batch in float64 and divided
    by N once (as pytorch/examples does), so the batch size does not change the result.

    Args:
        model: returns logits (B, C).
        inputs: normalised inputs (N, ...) on the model's device.
        labels: int64 class indices (N,) on the same device.

    Returns:
        :class:`Score` ``(accuracy, loss)``; a plain tuple unpacks it.

    >>> model = nn.Linear(2, 2, bias=False)
    >>> _ = model.weight.data.copy_(torch.eye(2))
    >>> accuracy, loss = evaluate_model(model, torch.eye(2)[[0, 0]], torch.tensor([0, 1]))
    >>> accuracy, round(loss, 6)  # (ln(1 + e^-1) + ln(1 + e)) / 2
    (0.5, 0.813262)
    """
    if len(inputs) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"need as many labels as inputs (and at least one): {len(inputs)} vs {len(labels)}"
        )
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64)
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = model(inputs[start : start + batch_size]).float()
        target = labels[start : start + batch_size]
        total_loss += F.cross_entropy(logits, target, reduction="sum").double().cpu()
        correct += int((logits.argmax(dim=1) == target).sum())
    model.train(was_training)
    return Score(correct / len(labels), float(total_loss) / len(labels))
