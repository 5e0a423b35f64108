"""The dashboard in a real browser: Debian's headless Chromium driven through Debian's
chromedriver with Selenium (`.ci/browser` installs both; no browser can be downloaded
here). The page lists the running machines, follows a machine stopped from the CLI and
a line a machine prints without a reload, and its buttons work from the keyboard.

A screenshot is saved to tests/artifacts/dashboard.png (git-ignored); with
TAXIWAY_DOCS_SCREENSHOT=1 it is also copied to docs/dashboard.png for the README.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_app import dashboard_url, machine_ids, running_app, say, status, wait_for

from cli_runner import run_taxiway as taxiway

__all__ = ["running_app"]  # the fixture, used by name

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "tests" / "artifacts" / "dashboard.png"


def _browser_problem() -> str | None:
    if not os.path.exists(CHROMIUM) or not os.path.exists(CHROMEDRIVER):
        return "Debian's chromium and chromium-driver are not installed (run `bash .ci/browser`)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (it is in the test extras: pip install -e '.[test]')"
    return None


pytestmark = pytest.mark.skipif(_browser_problem() is not None, reason=str(_browser_problem()))


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="taxiway-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",  # tests run as root in CI
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,1300",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _text(driver: Any, selector: str) -> str:
    """The element's rendered text, read in one step in the page: the page replaces
    elements as updates come, and a found-then-read element may be gone by the read."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
        selector,
    )


# Accessibility, as the browser computes it: every control named, every form field
# labelled, and every piece of visible text at WCAG AA contrast against the background it
# is drawn on (4.5:1; 3:1 for large text).
A11Y_PROBLEMS = """
const problems = [];
for (const b of document.querySelectorAll("button")) {
  const name = (b.getAttribute("aria-label") || b.textContent).trim();
  if (!name) problems.push("a button without a name: " + b.outerHTML.slice(0, 80));
}
for (const f of document.querySelectorAll("select, input, textarea")) {
  if (!f.labels || !f.labels.length) problems.push("a field without a label: " + f.id);
}
function rgba(text) {
  const m = text.match(/rgba?\\(([^)]+)\\)/);
  if (!m) return [0, 0, 0, 0];
  const parts = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
  return [parts[0], parts[1], parts[2], parts.length > 3 ? parts[3] : 1];
}
function luminance([r, g, b]) {
  const c = [r, g, b].map((v) => {
    v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
}
function background(el) {
  for (let n = el; n && n.nodeType === 1; n = n.parentElement) {
    const bg = rgba(getComputedStyle(n).backgroundColor);
    if (bg[3] > 0) return bg;
  }
  return [255, 255, 255, 1];
}
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
const seen = new Set();
while (walker.nextNode()) {
  const el = walker.currentNode.parentElement;
  if (!walker.currentNode.textContent.trim() || seen.has(el) || el.closest("svg")) continue;
  seen.add(el);
  const rect = el.getBoundingClientRect();
  const style = getComputedStyle(el);
  if (!rect.width || !rect.height || style.visibility === "hidden" || rect.width <= 1) continue;
  const fg = rgba(style.color), bg = background(el);
  const [hi, lo] = [luminance(fg), luminance(bg)].sort((a, b) => b - a);
  const ratio = (hi + 0.05) / (lo + 0.05);
  const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
  const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
  if (ratio < needed) {
    const text = el.textContent.trim().slice(0, 30);
    problems.push(`contrast ${ratio.toFixed(2)} < ${needed}: ${el.tagName} "${text}"`);
  }
}
return problems;
"""


def _state_of(driver: Any, machine_id: str) -> str:
    return _text(driver, f'tr[data-id="{machine_id}"] .state')


def test_the_page_follows_the_app_live(running_app: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    app = running_app
    ids = machine_ids(app)
    url = dashboard_url(app)
    port = url.split(":")[2].split("/")[0]

    # without the token: 401, and not a machine id in the answer
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
    assert refused.value.code == 401
    body = refused.value.read().decode()
    assert not any(i in body for i in ids.values())

    browser.get(url)
    # the token went into a cookie and out of the address bar
    assert browser.current_url == f"http://127.0.0.1:{port}/"
    assert "token" not in browser.current_url
    wait_for(lambda: _text(browser, "#connection") == "live", what="the event stream")
    for group, machine_id in ids.items():
        row = browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{machine_id}"]')
        assert group in row.text and "started" in row.text
    assert "http://127.0.0.1:" in _text(browser, "#edge")
    assert "v1" in _text(browser, "#releases")
    assert browser.execute_script(A11Y_PROBLEMS) == []
    # the keyboard reaches the buttons, and the focused one shows it
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    for _ in range(10):
        if browser.switch_to.active_element.tag_name == "button":
            break
        browser.switch_to.active_element.send_keys(Keys.TAB)
    focused = browser.switch_to.active_element
    assert focused.tag_name == "button"
    assert focused.value_of_css_property("outline-style") == "solid"

    # a marker on the page: it must survive every update below (no reload)
    browser.execute_script("window.__taxiwayNoReload = 'kept';")

    # a line the worker prints shows in the log tail (following every machine)
    say(app, "hello dashboard 5e1c")
    wait_for(lambda: "hello dashboard 5e1c" in _text(browser, "#log"), what="the log line")

    # a machine stopped from the CLI is shown stopped without a reload
    assert taxiway(app, "machine", "stop", ids["worker"]).returncode == 0
    wait_for(lambda: _state_of(browser, ids["worker"]) == "stopped", what="the stopped state")
    assert browser.execute_script("return window.__taxiwayNoReload") == "kept"
    announce = browser.find_element(By.ID, "announce")  # visually hidden: read its text
    wait_for(lambda: "stopped" in announce.get_attribute("textContent"), what="the announcement")

    # its Start button, pressed from the keyboard, starts it again
    start = browser.find_element(
        By.CSS_SELECTOR, f'button[data-action="start"][data-machine="{ids["worker"]}"]'
    )
    assert start.get_attribute("aria-label") == f"Start machine {ids['worker']}"
    start.send_keys(Keys.ENTER)
    wait_for(lambda: _state_of(browser, ids["worker"]) == "started", what="the restart")
    assert {m["id"]: m["state"] for m in status(app)["machines"]}[ids["worker"]] == "started"

    # Destroy asks first; Cancel (the default) leaves the machine be
    browser.find_element(
        By.CSS_SELECTOR, f'button[data-action="destroy"][data-machine="{ids["web"]}"]'
    ).click()
    dialog = browser.find_element(By.ID, "confirm-destroy")
    wait_for(dialog.is_displayed, what="the confirm dialog")
    assert browser.switch_to.active_element.get_attribute("id") == "confirm-cancel"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(lambda: not dialog.is_displayed(), what="the dialog to close")
    assert ids["web"] in {m["id"] for m in status(app)["machines"]}

    # a deploy shows its steps and its release's status as it goes
    config = app / "fly.toml"
    config.write_text(config.read_text().replace("[env]\n", '[env]\nGREETING = "v2"\n'))
    deployed = taxiway(app, "deploy", "--no-smoke-checks", timeout=120)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    wait_for(lambda: "Release v2: complete" in _text(browser, "#deploy"), what="the deploy")
    steps = browser.find_elements(By.CSS_SELECTOR, "#deploy li")
    assert steps and "release v2" in steps[0].text
    assert "v2 (current)" in _text(browser, "#releases")

    # the charts fill in from the samples (memory of each machine's process tree)
    wait_for(
        lambda: len(browser.find_elements(By.CSS_SELECTOR, "#machine-charts figure")) >= 4,
        what="the machine charts",
    )
    assert "metrics unavailable" in _text(browser, "#services-unavailable") or (
        browser.find_elements(By.CSS_SELECTOR, "#service-charts figure")
    )
    say(app, "one more line for the picture")
    wait_for(lambda: "one more line" in _text(browser, "#log"), what="the second line")

    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACT))
    if os.environ.get("TAXIWAY_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(ARTIFACT, ROOT / "docs" / "dashboard.png")
