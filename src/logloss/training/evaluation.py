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


class ScoreSums(NamedTuple):
    """Summed cross-entropy (nats), correct predictions and samples: sums add over shards."""

    loss: float
    correct: int
    count: int


@torch.no_grad()
def score_sums(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = EVAL_BATCH,
    shard: tuple[int, int] = (0, 1),
) -> ScoreSums:
    """Summed cross-entropy and correct count of ``model`` over one shard of a split, eval mode.

    The split is cut into batches of ``batch_size``; shard ``(k, K)`` scores batches ``k``,
    ``k + K``, ``k + 2K``, ...  Each batch's ``sum_i (logsumexp(z_i) - z_i[y_i])`` is computed
    as one process computes it and added in float64, so the K shards' sums add up to one
    process's sums up to float64 rounding.

    Args:
        model: returns logits (B, C).
        inputs: normalised inputs (N, ...) on the model's device.
        labels: int64 class indices (N,) on the same device.
        shard: ``(index, count)``, ``(0, 1)`` for the whole split.
    """
    index, count = shard
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64)
    correct = scored = 0
    for start in range(index * batch_size, len(labels), count * batch_size):
        logits = model(inputs[start : start + batch_size]).float()  # (B, C)
        target = labels[start : start + batch_size]
        total_loss += F.cross_entropy(logits, target, reduction="sum").double().cpu()
        correct += int((logits.argmax(dim=1) == target).sum())
        scored += len(target)
    model.train(was_training)
    return ScoreSums(float(total_loss), correct, scored)


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
    sums = score_sums(model, inputs, labels, batch_size=batch_size)
    return Score(sums.correct / sums.count, sums.loss / sums.count)
