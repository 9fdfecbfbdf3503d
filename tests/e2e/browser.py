"""Real-browser helpers: the app's entry run as `streamlit run` on a free 127.0.0.1 port, and
the headless Debian chromium the tests drive with Playwright."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def streamlit_server(store_path: Path, bundle_path: Path) -> Iterator[str]:
    """`streamlit run streamlit_app.py` on the tiny bundle and `store_path`; yields its URL."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium to run the e2e tests.")
    port = free_port()
    env = {
        **os.environ,
        "EXPLORER_SOURCE": f"demo:{bundle_path}",
        "EXPLORER_STORE": str(store_path),
        "PYTHONPATH": str(ROOT),
    }
    entry = ROOT / "streamlit_app.py"
    command = [sys.executable, "-m", "streamlit", "run", str(entry), "--server.port", str(port)]
    command += ["--server.headless", "true"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("streamlit did not start within 60 s")
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


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
