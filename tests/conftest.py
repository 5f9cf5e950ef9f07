"""Shared test fixtures.

Data: tests read MNIST through the project's own ``LOGLOSS_DATA`` variable (``.ci/run`` sets it to
``../shared/data``).  When it is unset, the shared folder beside the checkout is used if present.
Tests that need the data or a browser *fail* under CI (``CI=true``) when it is missing, and skip
only on a developer's machine that lacks it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def require(condition: bool, reason: str) -> None:
    """Skip when ``condition`` is false on a developer's machine; fail under CI."""
    if condition:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder holding ``mnist/`` with the four original .gz files."""
    root = Path(os.environ.get("LOGLOSS_DATA", SHARED_DATA))
    require((root / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file(), f"MNIST not found in {root}")
    return root
