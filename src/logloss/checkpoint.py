"""Compatibility alias: earlier releases (and their docs) imported ``logloss.checkpoint``; the code
lives in logloss.training.checkpoint and logloss.training.run_folder (see docs/architecture.md)."""

from logloss.training.checkpoint import (
    Checkpoint,
    load_checkpoint,
)
from logloss.training.run_folder import (
    METADATA_FILE,
    METRICS_FILE,
    RESUME_FILE,
    WEIGHT_FILES,
    load_state,
    load_weights,
    read_metadata,
    save_state,
    save_weights,
    write_metadata,
)
from logloss.training.splits import (
    Normalization,
)

__all__ = [
    "METADATA_FILE",
    "METRICS_FILE",
    "RESUME_FILE",
    "WEIGHT_FILES",
    "Checkpoint",
    "Normalization",
    "load_checkpoint",
    "load_state",
    "load_weights",
    "read_metadata",
    "save_state",
    "save_weights",
    "write_metadata",
]
