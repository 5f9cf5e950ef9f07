"""Compatibility alias: earlier releases (and their docs) imported ``logloss.model``; the code
lives in logloss.training.model (see docs/architecture.md)."""

from logloss.training.model import (
    Architecture,
    DenseNet,
    check_state_dict,
)

__all__ = [
    "Architecture",
    "DenseNet",
    "check_state_dict",
]
