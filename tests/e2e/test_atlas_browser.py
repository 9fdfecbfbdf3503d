"""Feature atlas in a real browser: a click on a point opens the feature it names, in the same
tab; a box dragged on the map lists the features inside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, settle

pytestmark = pytest.mark.e2e
POINTS = "[data-testid='stVegaLiteChart'] svg .mark-symbol path[aria-roledescription='circle']"
NAMED = re.compile(r"SAE: ([^;]+); feature: (\d+);")


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 2200})
        page.goto(f"{server}/atlas")
        settle(page, 300_000)
        page.locator(POINTS).first.wait_for(timeout=300_000)
        yield page
        browser.close()


def test_a_click_on_a_point_opens_its_feature(page) -> None:
    points = page.locator(POINTS)
    assert points.count() == 128  # the last SAE of the tiny store, one point per feature
    point = points.nth(64)
    sae, feature = NAMED.search(point.get_attribute("aria-label")).groups()
    point.click(force=True)
    page.wait_for_url(re.compile(r"/feature\?"), timeout=300_000)
    settle(page, 300_000)
    assert f"sae={sae}" in page.url and f"feature={feature}" in page.url
    title = page.get_by_role("heading", level=1).first.inner_text()
    assert title == f"{sae} · feature {feature}"


def test_a_box_lists_the_features_inside_it(page, tmp_path: Path) -> None:
    chart = page.locator("[data-testid='stVegaLiteChart']").first.bounding_box()
    x0, y0 = chart["x"] + chart["width"] * 0.2, chart["y"] + chart["height"] * 0.2
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + chart["width"] * 0.5, y0 + chart["height"] * 0.6, steps=10)
    page.mouse.up()
    settle(page, 300_000)
    listed = page.get_by_text(re.compile(r"^\d+ features in the box$"))
    listed.wait_for(timeout=300_000)
    n = int(listed.inner_text().split()[0])
    assert 0 < n <= 128
    page.get_by_text("Download the selection (CSV)").wait_for(timeout=60_000)
    page.screenshot(path=str(tmp_path / "atlas_box.png"))
