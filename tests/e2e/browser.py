"""Real-browser helpers: the app's entry run as `streamlit run` on a free 127.0.0.1 port, and
the headless Debian chromium the tests drive with Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.app_server import AppServerError, app_server

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@contextmanager
def streamlit_server(store_path: Path, bundle_path: Path) -> Iterator[str]:
    """`streamlit run streamlit_app.py` on the tiny bundle and `store_path`; yields its URL."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium to run the e2e tests.")
    env = {"EXPLORER_SOURCE": f"demo:{bundle_path}", "EXPLORER_STORE": str(store_path)}
    try:
        with app_server(env, start_seconds=60) as (url, _process):
            yield url
    except AppServerError as exc:
        pytest.fail(str(exc))


def settle(page, timeout: float = 120_000) -> None:
    """Wait for the script run a click or a visit started to end, with no stale element:
    first for Streamlit's running indicator to appear (a quick run may end before it
    shows), then for it to go."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with suppress(PlaywrightTimeout):
        page.wait_for_selector("[data-testid='stStatusWidget']", timeout=1_500)
    page.wait_for_function(
        """() => !document.querySelector("[data-testid='stStatusWidget']")
            && !document.querySelector("[data-stale='true']")""",
        timeout=timeout,
    )
