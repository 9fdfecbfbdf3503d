"""Real-browser fixtures: a headless Debian chromium page driven by Playwright that records
any JS dialog (see `tests.e2e.browser` for the server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, streamlit_server
from tests.stores import CORPUS, tiny_store


@pytest.fixture(scope="module")
def store_path(tiny_bundle_path, tmp_path_factory) -> Path:
    """This module's copy of the tiny bundle's store over `tests.stores.CORPUS` (built once
    per session); a module that needs another corpus defines its own."""
    return tiny_store(tiny_bundle_path, CORPUS, tmp_path_factory.mktemp("e2e") / "tiny.duckdb")


@pytest.fixture(scope="module")
def server(store_path, tiny_bundle_path) -> Iterator[str]:
    """A Streamlit server of the app on this module's `store_path` (its URL)."""
    with streamlit_server(store_path, tiny_bundle_path) as url:
        yield url


@pytest.fixture
def browser_page():
    """A fresh chromium page (1400 x 1200) and the list of JS dialogs it opened."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        yield page, dialogs
        browser.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/e2e/ starts a real server or browser: marked e2e, so the quick
    loop (-m "not e2e and not slow") leaves it out even when its module forgets the mark."""
    for item in items:
        if item.nodeid.startswith("tests/e2e/"):
            item.add_marker(pytest.mark.e2e)
