"""Stopping the server prints no `nanobind: leaked ...` dump.

DuckDB's Python module is a nanobind extension that lists, at interpreter shutdown, every
object of it still alive. A server that had served Home (a store and a loaded model) printed
about 30 such lines on every stop: the page's store outlived the module teardown
(`explorer.ui.resources._release_stores`). The check runs the real server, stops it the way a
user does (Ctrl+C: SIGINT) and reads its output.
"""

from __future__ import annotations

import signal

from tests.app_server import app_server
from tests.e2e.browser import settle


def test_stopping_the_server_after_home_prints_no_leak_dump(
    browser_page, tiny_bundle_path, store_path, tmp_path
):
    page, _ = browser_page
    log = tmp_path / "server.log"
    env = {"EXPLORER_SOURCE": f"demo:{tiny_bundle_path}", "EXPLORER_STORE": str(store_path)}
    with app_server(env, start_seconds=60, log=log) as (url, process):
        page.goto(url)
        page.wait_for_selector("h1", timeout=180_000)
        settle(page)
        assert page.locator("h1").first.inner_text() == "SAE feature explorer"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    output = log.read_text()
    assert "Stopping..." in output  # the server did stop gracefully, through Python's exit
    assert "nanobind" not in output, output[-3000:]
