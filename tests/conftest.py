"""Shared fixtures: the tiny demo bundle, trained once per test session (no network)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# every chart a test draws (AppTest or a served app) is validated against Vega-Lite's schema,
# which the app skips at run time (`explorer.ui.links.show_chart`)
os.environ.setdefault("EXPLORER_VALIDATE_CHARTS", "1")
torch.set_num_threads(1)


QUICK_LOOP = ("not e2e and not slow", "not slow and not e2e")  # -m of the quick loop
QUICK_LOOP_WORKERS = 2


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """The quick loop (`python -m pytest -m "not e2e and not slow"` over the whole tests/
    folder) runs on two pytest-xdist workers, a test module on one worker (its module
    fixtures are built once): the tests keep their files under each worker's own temporary
    folder, choose free ports and write nothing into the checkout. `-n 0` runs it in one
    process; any other run (`python -m pytest`, what CI runs; a file or a folder; -n given)
    is left as asked. Runs before xdist's own hook, which turns -n into workers."""
    option = config.option
    if (
        config.pluginmanager.has_plugin("xdist")
        and getattr(option, "numprocesses", 0) is None
        and " ".join((option.markexpr or "").split()) in QUICK_LOOP
        and config.args_source == pytest.Config.ArgsSource.TESTPATHS
        and not (option.collectonly or option.usepdb or os.environ.get("PYTEST_XDIST_WORKER"))
        and (os.cpu_count() or 1) >= QUICK_LOOP_WORKERS
    ):
        option.numprocesses = QUICK_LOOP_WORKERS
        option.dist = "loadscope"


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


ROOT = Path(__file__).resolve().parents[1]
BUNDLE_CACHE = Path.home() / ".cache" / "sae-explorer-tests" / "bundles"
KEPT_BUNDLES = 8  # the newest trained bundles kept in BUNDLE_CACHE


@pytest.fixture(scope="session")
def tiny_bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` preset trained once for the session, into a temporary folder.

    With one torch thread the training is deterministic (two runs write identical weights),
    so a bundle trained by the same code, data, Python and packages is reused from
    BUNDLE_CACHE (~10 s of CPU per session and per xdist worker); the key hashes every file
    under explorer/, so any change to the code retrains."""
    from explorer.build.demo_training import train_bundle
    from explorer.sources.demo_bundle import PRESETS

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    cached = BUNDLE_CACHE / _bundle_key(PRESETS["tiny"])
    if (cached / "manifest.json").is_file():
        shutil.copytree(cached, out)
        return out
    train_bundle(PRESETS["tiny"], out)
    _keep_bundle(out, cached)
    return out


def _bundle_key(preset) -> str:
    """What a trained bundle depends on: the preset, explorer/'s files (code and the bundled
    corpus), Python (the training corpus holds stdlib sources) and every installed package
    (the model libraries, and the package READMEs of the corpus)."""
    digest = hashlib.sha256(repr(preset).encode() + sys.version.encode())
    for path in sorted((ROOT / "explorer").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    packages = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions())
    digest.update("\n".join(packages).encode())
    return digest.hexdigest()[:32]


def _keep_bundle(trained: Path, cached: Path) -> None:
    """Copy `trained` to `cached` (renamed into place, so a reader never sees half a bundle;
    another process that got there first wins) and drop all but the newest bundles."""
    try:
        BUNDLE_CACHE.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=BUNDLE_CACHE)) / "tiny"
        shutil.copytree(trained, staging)
        with contextlib.suppress(OSError):  # kept by another process meanwhile
            staging.rename(cached)
        shutil.rmtree(staging.parent, ignore_errors=True)
        kept = sorted(BUNDLE_CACHE.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[KEPT_BUNDLES:]:
            if time.time() - old.stat().st_mtime > 3600:  # not one a run may be copying
                shutil.rmtree(old, ignore_errors=True)
    except OSError:
        pass  # no cache: the next session trains again


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
