"""A real browser (Debian's chromium, driven by Selenium through Debian's chromedriver; never a
downloaded one) reviews three photos with the keyboard: A, O, A, then U.

Screenshots of every page at phone (390 px) and desktop (1280 px) widths are written to
$NORDLYS_SCREENSHOTS when it is set (else into the test's tmp folder)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.waiting import DEADLINE, wait_until

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install 'nordlys[test]')")
pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                                reason="chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")


@pytest.fixture
def browser(tmp_path: Path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-proxy-server", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,900"):
        options.add_argument(flag)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER, env=env))
    driver.set_page_load_timeout(DEADLINE)
    yield driver
    driver.quit()


def corrections(journal: Path) -> list[tuple]:
    with sqlite3.connect(journal) as db:
        return db.execute("SELECT old_label, new_label FROM corrections ORDER BY id").fetchall()


def press(driver, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    ActionChains(driver).send_keys(key).perform()


def test_review_three_photos_with_the_keyboard_then_undo(tree, web, browser, tmp_path):
    tree.sort(green=2, grey=3)
    first, second, third = tree.files("review")
    server = web()
    browser.get(f"{server.base}/review")
    status = browser.find_element("id", "status")
    for key, photo, to in (("a", first, "aurora"), ("o", second, "other"), ("a", third, "aurora")):
        press(browser, key)
        wait_until(lambda: (tree.root / to / photo.name).exists() and f"moved to {to}" in status.text
                   and photo.name in status.text, DEADLINE, f"{photo.name} in {to}/ and said so")
        assert not photo.exists()
    assert corrections(tree.journal) == [("review", "aurora"), ("review", "other"), ("review", "aurora")]
    press(browser, "u")
    wait_until(lambda: third.exists() and "undone" in status.text, DEADLINE, "undo of the last move")
    assert not (tree.root / "aurora" / third.name).exists()
    assert corrections(tree.journal) == [("review", "aurora"), ("review", "other")]
    tile = browser.find_element("css selector", f'.tile[data-rel="review/{third.name}"]')
    assert "selected" in tile.get_attribute("class")  # the undone photo is selected again
    assert browser.get_log("browser") == [] if "goog:loggingPrefs" in browser.capabilities else True
    shoot_every_page(browser, server.base, tree, Path(os.environ.get("NORDLYS_SCREENSHOTS") or tmp_path / "shots"))


def shoot_every_page(driver, base: str, tree, folder: Path) -> None:
    """Each page at phone and desktop width; a page must not scroll sideways at either."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = tree.files("aurora")[0].relative_to(tree.root).as_posix()
    pages = {"overview": "/", "review": "/review", "recent": "/recent", "photo": f"/photo/{photo}"}
    wide: list[str] = []
    for width, label in ((390, "phone"), (1280, "desktop")):
        driver.set_window_size(width, 900)
        for name, url in pages.items():
            driver.get(base + url)
            wait_until(lambda: driver.execute_script("return document.readyState") == "complete", DEADLINE)
            wait_until(lambda: driver.execute_script(
                "return Array.from(document.images).every(i => i.complete)"), DEADLINE, "images loaded")
            inner = driver.execute_script("return window.innerWidth")
            scroll = driver.execute_script("return document.documentElement.scrollWidth")
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(width, min(max(height + 140, 600), 4000))
            driver.save_screenshot(str(folder / f"{name}-{label}.png"))
            driver.set_window_size(width, 900)
            wide.extend([f"{name} at {width} px: {scroll} > {inner}"] if scroll > inner else [])
    assert not wide, f"pages that scroll sideways: {wide}"
