"""Compatibility alias: earlier releases (and their docs) imported ``logloss.diagnostics``; the code
lives in logloss.insight.diagnostics and logloss.insight.run_evaluation (see
docs/architecture.md)."""

from logloss.insight.diagnostics import (
    DEFAULT_BINS,
    DEFAULT_TOP_K,
    Evaluation,
    Examples,
    Reliability,
    Temperature,
    brier_score,
    confusion_matrix,
    evaluate_logits,
    fit_temperature,
    loss_concentration,
    reliability,
)
from logloss.insight.run_evaluation import (
    SplitEvaluation,
    evaluate_checkpoint,
)

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_TOP_K",
    "Evaluation",
    "Examples",
    "Reliability",
    "SplitEvaluation",
    "Temperature",
    "brier_score",
    "confusion_matrix",
    "evaluate_checkpoint",
    "evaluate_logits",
    "fit_temperature",
    "loss_concentration",
    "reliability",
]
