"""Shared fixtures: the tiny demo bundle, trained once per test session (no network)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _torch_keeps_one_thread():
    """The app (`ui.resources._loaded_source`) and the CLI (`--threads`, default 2) set torch's
    thread count for the whole process; in the test process that outlived the test that set
    it, and every later model run (builds, live runs, the tests' direct computations) went
    on with two threads, several times the CPU for the tiny bundle's small matrices
    (a tiny-store build: 1.4 s of CPU with one thread, 8.9 s with two). No test checks the
    thread count, so the test process keeps one."""
    patch = pytest.MonkeyPatch()
    patch.setattr(torch, "set_num_threads", lambda threads: None)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def tiny_bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the `tiny` preset once for the whole session, into a temporary folder."""
    from explorer.build.demo_training import train_bundle
    from explorer.sources.demo_bundle import PRESETS

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    train_bundle(PRESETS["tiny"], out)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_bundle_path: Path):
    from explorer.sources.demo_bundle import load_bundle

    return load_bundle(tiny_bundle_path)


@pytest.fixture(autouse=True)
def _streamlit_logs_to_this_tests_stderr() -> None:
    """Streamlit points its console log handlers at the `sys.stderr` of the moment it parses
    its config, which may be inside an earlier test whose captured stream is closed by now;
    a Streamlit warning would then print a "--- Logging error ---" traceback into the stderr
    this test checks. Point them at this test's stderr."""
    for logger in list(logging.Logger.manager.loggerDict.values()):
        handler = getattr(logger, "streamlit_console_handler", None)
        if isinstance(handler, logging.StreamHandler):
            handler.stream = sys.stderr  # not setStream: it flushes the closed stream


@pytest.fixture(scope="session", autouse=True)
def _scan_for_streamlit_components_once():
    """Every new `AppTest` scans the metadata of every installed distribution for Streamlit
    v2 components (`scan_component_manifests`, 0.3-1 s on this machine, ~530 packages);
    the installed packages do not change during a test session, so scan once."""
    import functools

    from streamlit.components.v2 import manifest_scanner

    patch = pytest.MonkeyPatch()
    patch.setattr(
        manifest_scanner,
        "scan_component_manifests",
        functools.cache(manifest_scanner.scan_component_manifests),
    )
    yield
    patch.undo()
