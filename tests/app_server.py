"""The app's entry run as `streamlit run streamlit_app.py` on 127.0.0.1, headless, until its
health check answers: for the benchmarks that drive it (`bench.rss`) and the browser tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class AppServerError(RuntimeError):
    """The app did not answer its health check in time, or exited."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def app_server(
    env: Mapping[str, str],
    port: int | None = None,
    start_seconds: float = 90,
    script: Path = ROOT / "streamlit_app.py",
    log: Path | None = None,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run the app (or another Streamlit `script`) with `env` over the current environment
    (and the script's folder as working directory and on PYTHONPATH); yield its URL and
    process once `/_stcore/health` answers 200, terminate it on exit. Its output goes to
    `log` if given (read it once the context has exited: the server has stopped then)."""
    port = port or free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(script)]
    command += ["--server.port", str(port), "--server.headless", "true"]
    output = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        command,
        cwd=script.parent,
        env={**os.environ, "PYTHONPATH": str(script.parent), **env},
        stdout=output,
        stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_seconds
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AppServerError(
                        f"streamlit did not start within {start_seconds:g} s"
                    ) from None
                time.sleep(0.5)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # busy in a long script run: do not leave it behind
            process.kill()
            process.wait()
        if log is not None:
            output.close()
