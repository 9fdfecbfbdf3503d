"""The feature atlas is a store page: on a store that keeps its map, the app (entry and page)
shows the map without importing torch, transformer-lens or sae-lens; on a store that keeps
none it lays the map out from the loaded source's decoders, which imports them.

Each run is a fresh interpreter (this test process has long imported torch) running the
real entry with AppTest, opened on the atlas page as a shared link would open it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from explorer.analysis.atlas import ATLAS, atlas_key
from explorer.store.derived import Derived
from explorer.store.reader import Store
from explorer.store.writer import add_derived
from tests.unit.test_imports import MODEL_LIBRARIES

ROOT = Path(__file__).resolve().parents[2]
RUN_ATLAS = """
import json, sys
from streamlit.testing.v1 import AppTest

at = AppTest.from_file("streamlit_app.py", default_timeout=300)
at.switch_page("app_pages/atlas.py")
at.run()
print(json.dumps({
    "exceptions": [e.value for e in at.exception],
    "titles": [t.value for t in at.title],
    "metrics": {m.label: m.value for m in at.metric},
    "libraries": sorted(set(sys.argv[1:]) & set(sys.modules)),
}))
"""


def run_atlas(store: Path, bundle: Path) -> dict:
    """The atlas page's title, metrics and exceptions, and which model libraries the
    interpreter holds after the run."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "EXPLORER_STORE": str(store),
        "EXPLORER_SOURCE": f"demo:{bundle}",
    }
    done = subprocess.run(
        [sys.executable, "-c", RUN_ATLAS, *MODEL_LIBRARIES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def kept_map_path(store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared tiny store with a kept atlas map (planted coordinates: this test is about
    what the page imports, `tests/unit/test_precompute.py` about the map's layout)."""
    path = tmp_path_factory.mktemp("kept_atlas") / "kept.duckdb"
    shutil.copy(store_path, path)
    with Store.open(path) as store:
        saes = store.saes()
    per_sae = pd.concat(
        [
            pd.DataFrame(
                {"sae": sae, "feature": range(d_sae), "x": range(d_sae), "y": float(layer)}
            )
            for sae, d_sae, layer in zip(saes["sae"], saes["d_sae"], saes["layer"], strict=True)
        ],
        ignore_index=True,
    ).astype({"x": "float32", "y": "float32"})
    add_derived(path, [Derived(ATLAS, atlas_key(), {"per_sae": per_sae}, {"saes": []})])
    return path


def test_a_kept_map_is_shown_without_the_model_libraries(
    kept_map_path: Path, tiny_bundle_path: Path
) -> None:
    shown = run_atlas(kept_map_path, tiny_bundle_path)
    assert shown["exceptions"] == []
    assert shown["titles"] == ["Feature atlas"]
    assert shown["metrics"]["features on the map"] == "128"
    assert shown["libraries"] == []


@pytest.mark.slow  # loads the tiny model in the page (~25 s under load)
def test_without_a_kept_map_the_page_loads_the_source(
    store_path: Path, tiny_bundle_path: Path
) -> None:
    """The check can fail: laying the map out from the decoders loads the model."""
    shown = run_atlas(store_path, tiny_bundle_path)
    assert shown["exceptions"] == []
    assert shown["metrics"]["features on the map"] == "128"
    assert {"torch", "transformer_lens", "sae_lens"} <= set(shown["libraries"])
