"""Shared test fixtures.

Data: tests read MNIST through the project's own ``LOGLOSS_DATA`` variable (``.ci/run`` sets it to
``../shared/data``).  When it is unset, the shared folder beside the checkout is used if present.
Tests that need the data or a browser *fail* under CI (``CI=true``) when it is missing, and skip
only on a developer's machine that lacks it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
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


# A tiny dense network trained for one epoch on the real MNIST (about 90% test accuracy in a few
# seconds of CPU), trained once per session and shared by the diagnostics, report, explain and
# serve tests.  Its options are what the tests that rebuild its validation split rely on.
SMALL_RUN = {"hidden": (32,), "epochs": 1, "batch_size": 512, "seed": 0, "device": "cpu"}


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The run folder (checkpoint.json, initial/last/best.safetensors, metrics.jsonl)."""
    from logloss.training import TrainConfig, train

    folder = tmp_path_factory.getbasetemp() / "small-run"
    train(TrainConfig(**SMALL_RUN), out_dir=folder, data_dir=data_dir, download=False)
    return folder


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@contextlib.contextmanager
def chromium_driver(profile: Path, *, window_size: str = "1200,1000"):
    """Headless Debian Chromium driven by Selenium through the system chromedriver.

    The driver path is explicit, so Selenium never looks for (or downloads) a driver itself.
    Fails under CI when Chromium, chromedriver or Selenium is missing.
    """
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    require(chromium is not None, "chromium is not installed (apt-get install chromium)")
    require(chromedriver is not None, "chromedriver missing (apt-get install chromium-driver)")
    require(importlib.util.find_spec("selenium") is not None, "selenium is not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--window-size={window_size}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
