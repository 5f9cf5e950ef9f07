"""Shared test fixtures and settings.

Data: tests find MNIST the way the product does (:func:`logloss.data.find_dataset`): pytest's
``--data-dir DIR``, then ``$LOGLOSS_DATA``, then the user cache that ``logloss data fetch mnist``
fills.  Tests that need the data or a browser *fail* under CI (``CI=true``) when it is missing;
on a developer's machine they skip, and the end of the run says so in a loud summary.

Hypothesis: the ``ci`` profile (chosen when ``CI=true``) is derandomized, so a failure in CI
replays exactly; elsewhere the ``dev`` profile explores new examples and prints the blob that
reproduces a failure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

from logloss.data import find_dataset

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if IN_CI else "dev")

MISSING: list[str] = []  # what was skipped for lack of data or tools, for the final summary


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="folder holding mnist/ (default: $LOGLOSS_DATA, then the user cache)",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if MISSING:
        terminalreporter.section("NOT TESTED: data or tools missing", sep="!", red=True, bold=True)
        for reason in sorted(set(MISSING)):
            terminalreporter.line(f"  {reason}", red=True)
        terminalreporter.line(
            "  Get MNIST with `logloss data fetch mnist` (or pass --data-dir / set LOGLOSS_DATA);"
            " under CI=true these are failures, not skips.",
            red=True,
        )


def require(condition: bool, reason: str) -> None:
    """Skip when ``condition`` is false on a developer's machine; fail under CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    MISSING.append(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_dir(pytestconfig: pytest.Config) -> Path:
    """The data folder holding ``mnist/`` with the four original .gz files."""
    found = find_dataset("mnist", data_dir=pytestconfig.getoption("--data-dir"))
    require(
        found is not None,
        "MNIST not found (looked in --data-dir, $LOGLOSS_DATA and the user cache)",
    )
    return found[1].parent


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
