"""A linked table on a touch screen: a tap on a column header sorts the table and opens no
feature (Streamlit's grid also selects the first column's top cell on such a tap, so a
first column of links opened the feature that sorted first), and a tap on a row's link
still opens its feature in this tab."""

from __future__ import annotations

import pytest

from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, settle

pytestmark = pytest.mark.e2e
HEADER_Y = 18  # px below a grid's top edge: its header row
ROW_Y = 35 + 17  # the middle of its first row
LINK_X = 80  # px from its left edge: past the row numbers (#), in the link column


@pytest.fixture
def touch_page(server):
    """A touch-screen chromium page on Rankings, its first table (a feature table) drawn."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1600}, has_touch=True)
        page = context.new_page()
        page.goto(f"{server}/rankings")
        settle(page, 300_000)
        page.locator("[data-testid='stDataFrame'] table tbody tr").first.wait_for(
            state="attached", timeout=300_000
        )
        yield page
        browser.close()


def row_numbers(grid) -> list[str]:
    """The row numbers (#) of the grid's rows, top to bottom, from its accessible copy."""
    return grid.locator("table tbody tr td[aria-colindex='1']").all_inner_texts()


def test_a_tap_on_a_header_sorts_and_opens_nothing(touch_page) -> None:
    page = touch_page
    grid = page.locator("[data-testid='stDataFrame']").first
    box = grid.bounding_box()
    before = row_numbers(grid)
    assert before == [str(n) for n in range(1, len(before) + 1)]  # the ranking's own order
    page.touchscreen.tap(box["x"] + box["width"] - 40, box["y"] + HEADER_Y)  # the last column
    page.wait_for_function(
        "n => document.querySelector(\"[data-testid='stDataFrame'] tbody td\").innerText !== n",
        arg="1",
        timeout=30_000,
    )
    settle(page)
    assert page.evaluate("location.pathname").endswith("/rankings")
    after = row_numbers(grid)  # the rows drawn: the grid draws those in view only
    assert after[0] != "1" and len(set(after)) == len(after)  # re-sorted

    link = grid.locator("table tbody tr").first.locator("td[aria-colindex='2']").inner_text()
    page.touchscreen.tap(box["x"] + LINK_X, box["y"] + ROW_Y)  # the top row's link
    page.wait_for_function("() => location.pathname.endsWith('/feature')", timeout=60_000)
    assert page.evaluate("location.search").endswith(link.split("?", 1)[1])
    assert len(page.context.pages) == 1
