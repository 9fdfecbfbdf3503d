"""The atlas page during a first run: the demo store is written and the build's server
thread is still laying out the map (`DemoBuild.atlas_pending`). The page waits for that step
rather than laying out a second map. When the step keeps the map, the page reruns and shows
it from the store; when the step fails, the page shows the step's message and falls back to
the loaded source (here a source that cannot load, so the fallback is seen as its message).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from explorer.analysis.atlas import ATLAS, atlas_key
from explorer.store.derived import Derived
from explorer.store.reader import Store
from explorer.store.writer import add_derived
from explorer.ui.resources import DemoBuild, demo_builds

ATLAS_PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "atlas.py")
STEP_SECONDS = 1.0  # how long the planted atlas step runs after the page starts waiting


def planted_map(path: Path) -> pd.DataFrame:
    """sae, feature, x, y of every feature of the store at `path` (x = feature, y = layer)."""
    with Store.open(path) as store:
        saes = store.saes()
    return pd.concat(
        [
            pd.DataFrame({"sae": sae, "feature": range(d_sae), "x": range(d_sae), "y": layer})
            for sae, d_sae, layer in zip(saes["sae"], saes["d_sae"], saes["layer"], strict=True)
        ],
        ignore_index=True,
    ).astype({"x": "float32", "y": "float32"})


@pytest.fixture
def pending(store_path: Path, tmp_path: Path, monkeypatch):
    """A copy of the tiny store as a first run's store whose atlas step is running: a
    `DemoBuild` of its path, written and not yet laid out. The app's source cannot load, so
    a page that laid the map out itself would show the loader's message."""
    path = tmp_path / "first_run.duckdb"
    shutil.copy(store_path, path)
    build = DemoBuild(str(path))
    build._done.set()  # the store is written; the atlas step goes on in the server thread
    key = str(path.absolute())
    demo_builds().by_path[key] = build
    monkeypatch.setenv("EXPLORER_STORE", str(path))
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tmp_path / 'no_such_bundle'}")
    yield path, build
    demo_builds().by_path.pop(key, None)


def run_step_then(build: DemoBuild, step) -> threading.Thread:
    """Run `step` (the atlas step's outcome) after STEP_SECONDS, then end the step."""

    def run() -> None:
        time.sleep(STEP_SECONDS)
        step()
        build._atlas_done.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_the_page_waits_for_the_first_run_atlas_and_shows_the_kept_map(pending) -> None:
    path, build = pending
    assert build.atlas_pending
    kept = [Derived(ATLAS, atlas_key(), {"per_sae": planted_map(path)}, {"saes": []})]
    step = run_step_then(build, lambda: add_derived(path, kept))
    started = time.perf_counter()
    at = AppTest.from_file(ATLAS_PAGE, default_timeout=120).run()
    step.join()
    assert time.perf_counter() - started >= STEP_SECONDS  # it waited for the step
    assert not at.exception, at.exception
    assert [error.value for error in at.error] == []  # the source was never loaded
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["features on the map"] == "128"  # the last SAE's map, from the store


def test_a_failed_atlas_step_is_shown_and_the_page_goes_on_without_it(pending) -> None:
    path, build = pending

    def fail() -> None:
        build.atlas_error = "Laying out the atlas failed: planted failure."

    step = run_step_then(build, fail)
    at = AppTest.from_file(ATLAS_PAGE, default_timeout=120).run()
    step.join()
    assert not at.exception, at.exception
    assert [w.value for w in at.warning] == ["Laying out the atlas failed: planted failure."]
    assert len(at.error) == 1 and "no_such_bundle" in at.error[0].value  # the source's message
    assert [metric.label for metric in at.metric] == []  # no map was drawn
