"""The ``logloss serve`` page in headless Chromium (Selenium + the system chromedriver).

Draw with the mouse and with a finger, check that the bars show the API's softmax and sum to 1,
pick a true class and check that the loss shown is -ln of its bar; browse test samples.
Screenshots go to ``$LOGLOSS_ARTIFACTS`` (or a temporary folder); their paths are printed.
"""

from __future__ import annotations

import base64
import math
import os
import sys
from pathlib import Path

import httpx
import pytest

from conftest import chromium_driver
from logloss.serve import create_app, running_server

WAIT_S = 30  # generous: two shared CPU cores in CI


@pytest.fixture(scope="module")
def url(small_run: Path, data_dir: Path):
    with running_server(create_app(small_run, which="best", data_dir=data_dir)) as base:
        yield base


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    with chromium_driver(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("LOGLOSS_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("serve-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def wait_for(browser, condition, message: str):
    from selenium.webdriver.support.wait import WebDriverWait

    return WebDriverWait(browser, WAIT_S, poll_frequency=0.05).until(condition, message)


def panel(browser, view: str) -> dict:
    """Every number a breakdown panel shows: exact values (data-value) and the text on screen."""
    return browser.execute_script(
        """
        const root = document.querySelector(`[data-view="${arguments[0]}"] .breakdown`);
        const rows = [...root.querySelectorAll("tbody tr")];
        const value = (selector) => root.querySelector(selector).dataset.value;
        return {
          state: root.dataset.state,
          classes: rows.map((row) => Number(row.dataset.class)),
          probabilities: rows.map((row) => row.querySelector(".prob").dataset.value),
          probability_texts: rows.map((row) => row.querySelector(".prob").textContent),
          logits: rows.map((row) => row.querySelector(".logit").dataset.value),
          widths: rows.map((row) => row.querySelector(".bar").style.width),
          predicted: value(".predicted"),
          p_target: value(".p-target"),
          loss: value(".loss"),
          loss_text: root.querySelector(".loss").textContent,
          target: root.querySelector(".target-select").value,
        };
        """,
        view,
    )


def choose_class(browser, view: str, k: int) -> dict:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    select = browser.find_element(By.CSS_SELECTOR, f'[data-view="{view}"] .target-select')
    Select(select).select_by_value(str(k))
    wait_for(
        browser,
        lambda b: panel(b, view)["target"] == str(k) and panel(b, view)["loss"] not in ("null", ""),
        f"the loss for class {k} did not appear",
    )
    return panel(browser, view)


def check_bars(shown: dict) -> list[float]:
    """The bars show probabilities that sum to 1, with matching widths and rounded text."""
    probabilities = [float(p) for p in shown["probabilities"]]
    assert len(probabilities) == 10
    assert math.isclose(sum(probabilities), 1.0, rel_tol=1e-12)
    for p, width, text in zip(
        probabilities, shown["widths"], shown["probability_texts"], strict=True
    ):
        assert math.isclose(float(width.rstrip("%")), 100 * p, abs_tol=0.005 + 1e-9)
        assert abs(float(text) - p) <= 0.5e-4 + 1e-12
    assert int(shown["predicted"]) == max(range(10), key=lambda k: probabilities[k])
    return probabilities


def check_loss_is_minus_ln_of_bar(shown: dict, k: int) -> None:
    p = float(shown["probabilities"][k])
    assert float(shown["p_target"]) == p
    # p and the loss are each rounded from logsumexp(z) - z_k, a difference of numbers of size
    # max|z|: a few ulps of max|z| apart, more than 1e-12 relative when the loss is ~1e-4.
    ulps = 4 * sys.float_info.epsilon * max(1.0, *(abs(float(z)) for z in shown["logits"]))
    assert math.isclose(float(shown["loss"]), -math.log(p), rel_tol=1e-12, abs_tol=ulps)
    # And on screen, within the rounding of the 4-decimal texts: the bar's text p_text means a
    # probability within p_text +- 0.00005, so -ln of it lies between these bounds.
    p_text, loss_text, half = float(shown["probability_texts"][k]), float(shown["loss_text"]), 5e-5
    assert -math.log(p_text + half) - half <= loss_text
    if p_text > half:
        assert loss_text <= -math.log(p_text - half) + half


def assert_no_console_errors(browser) -> None:
    """No error in the page's console since the last call (CSP violations, failed requests)."""
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors


def open_page(browser, url: str) -> None:
    browser.get(f"{url}/")
    browser.get_log("browser")  # start each test with an empty console log


def draw_with_mouse(browser) -> None:
    """A "7": a top bar, then a diagonal stroke down to the left (offsets from the centre)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    pad = browser.find_element(By.ID, "pad")
    chain = ActionChains(browser).move_to_element_with_offset(pad, -70, -90).click_and_hold()
    for _ in range(7):
        chain.move_by_offset(20, 0)
    for _ in range(9):
        chain.move_by_offset(-9, 20)
    chain.release().perform()


def api_answer_for_canvas(browser, url: str) -> dict:
    """What the API says about the pad's current pixels (the same PNG the page sends)."""
    data_url = browser.execute_script('return document.getElementById("pad").toDataURL();')
    png = base64.b64decode(data_url.split(",", 1)[1])
    answer = httpx.post(
        f"{url}/api/predict", content=png, headers={"Content-Type": "image/png"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def settled(browser) -> bool:
    return (
        browser.execute_script('return document.getElementById("pad").dataset.pending === "false";')
        and panel(browser, "draw")["state"] == "ready"
    )


def test_drawing_updates_the_bars_and_the_loss(browser, url, artifacts):
    open_page(browser, url)
    assert panel(browser, "draw")["state"] == "empty"
    draw_with_mouse(browser)
    wait_for(browser, settled, "the page did not show a prediction after drawing")
    shown = panel(browser, "draw")
    probabilities = check_bars(shown)

    # The page shows exactly what the API answers for the drawing.
    answer = api_answer_for_canvas(browser, url)
    assert probabilities == answer["probabilities"]
    assert [float(z) for z in shown["logits"]] == answer["logits"]
    assert (
        browser.execute_script(
            """
            const canvas = document.querySelector('[data-view="draw"] canvas.input');
            const pixels = canvas.getContext("2d").getImageData(0, 0, 28, 28).data;
            const rows = [];
            for (let i = 0; i < 28; i++) {
              rows.push([...Array(28).keys()].map((j) => pixels[4 * (28 * i + j)]));
            }
            return rows;
            """
        )
        == answer["input"]
    )

    # Pick the predicted class, then the least likely one: loss = -ln of that bar.
    predicted = int(shown["predicted"])
    least = min(range(10), key=lambda k: probabilities[k])
    for k in (predicted, least):
        check_loss_is_minus_ln_of_bar(choose_class(browser, "draw", k), k)
    assert float(panel(browser, "draw")["loss"]) > math.log(10) > 0  # the least likely class

    path = artifacts / "serve-draw.png"
    assert browser.save_screenshot(str(path))
    print(f"screenshot: {path}")
    assert_no_console_errors(browser)


def test_clear_empties_the_pad_and_the_panel(browser, url):
    from selenium.webdriver.common.by import By

    open_page(browser, url)
    draw_with_mouse(browser)
    wait_for(browser, settled, "no prediction after drawing")
    browser.find_element(By.ID, "clear").click()
    shown = panel(browser, "draw")
    assert shown["state"] == "empty"
    assert shown["widths"] == ["0px"] * 10
    ink = browser.execute_script(
        """
        const pad = document.getElementById("pad");
        const pixels = pad.getContext("2d").getImageData(0, 0, pad.width, pad.height).data;
        return pixels.some((v, i) => i % 4 !== 3 && v !== 255);
        """
    )
    assert ink is False


def test_drawing_with_a_finger(browser, url):
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By

    open_page(browser, url)
    pad = browser.find_element(By.ID, "pad")
    finger = ActionBuilder(browser, mouse=PointerInput(interaction.POINTER_TOUCH, "finger"))
    finger.pointer_action.move_to(pad, 0, -90).pointer_down()
    for _ in range(9):
        finger.pointer_action.move_by(0, 20)
    finger.pointer_action.pointer_up()
    finger.perform()
    wait_for(browser, settled, "no prediction after a touch stroke")
    check_bars(panel(browser, "draw"))
    assert api_answer_for_canvas(browser, url)["input"] != [[0] * 28] * 28


def test_browsing_confident_mistakes(browser, url, artifacts):
    from selenium.webdriver.common.by import By

    open_page(browser, url)
    browser.find_element(By.ID, "tab-browse").click()
    wait_for(browser, lambda b: panel(b, "browse")["state"] == "ready", "no random sample shown")
    browser.find_element(By.CSS_SELECTOR, '[data-kind="confident_mistakes"]').click()
    expected = httpx.get(
        f"{url}/api/samples", params={"kind": "confident_mistakes", "count": 24}, timeout=30
    ).json()["items"]
    first = expected[0]
    wait_for(
        browser,
        lambda b: (
            b.execute_script(
                'const b = document.querySelector("#samples button[aria-current=true]");'
                "return b && b.dataset.index;"
            )
            == str(first["index"])
        ),
        "the first confident mistake was not opened",
    )
    shown_indices = browser.execute_script(
        'return [...document.querySelectorAll("#samples button")].map((b) => b.dataset.index);'
    )
    assert shown_indices == [str(item["index"]) for item in expected]
    wait_for(
        browser,
        lambda b: panel(b, "browse")["target"] == str(first["label"]),
        "the sample's label is not the chosen class",
    )
    shown = panel(browser, "browse")
    probabilities = check_bars(shown)
    sample = httpx.get(f"{url}/api/sample/test/{first['index']}", timeout=30).json()
    assert probabilities == sample["probabilities"]
    assert int(shown["predicted"]) == first["predicted"] != first["label"]
    check_loss_is_minus_ln_of_bar(shown, first["label"])

    # Clicking a row picks that class as the true one.
    other = first["predicted"]
    browser.find_element(By.CSS_SELECTOR, f'[data-view="browse"] tr[data-class="{other}"]').click()
    wait_for(
        browser,
        lambda b: (
            panel(b, "browse")["target"] == str(other)
            and float(panel(b, "browse")["p_target"]) == probabilities[other]
        ),
        "clicking a row did not choose its class",
    )
    check_loss_is_minus_ln_of_bar(panel(browser, "browse"), other)
    path = artifacts / "serve-browse.png"
    assert browser.save_screenshot(str(path))
    print(f"screenshot: {path}")
    assert_no_console_errors(browser)


def test_browsing_without_data_shows_a_short_notice(browser, small_run, tmp_path, monkeypatch):
    """issue 14: with no dataset, the browse tab says in one short notice (not a red loader
    error) that browsing is off and how to turn it on; its buttons are disabled."""
    from selenium.webdriver.common.by import By

    monkeypatch.delenv("LOGLOSS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    app = create_app(small_run, which="best", data_dir=tmp_path / "empty")
    with running_server(app) as base:
        open_page(browser, base)
        browser.find_element(By.ID, "tab-browse").click()
        wait_for(
            browser,
            lambda b: "notice" in b.find_element(By.ID, "browse-status").get_attribute("class"),
            "no notice shown",
        )
        status = browser.find_element(By.ID, "browse-status")
        expected = httpx.get(f"{base}/api/samples", timeout=30).json()["detail"]
        buttons = browser.find_elements(By.CSS_SELECTOR, ".kinds button")
    assert status.text == expected
    assert "error" not in status.get_attribute("class")
    assert "download=False" not in status.text
    assert all(not button.is_enabled() for button in buttons)
