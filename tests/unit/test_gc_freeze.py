"""The app keeps the libraries' objects out of the cyclic garbage collector's passes
(`explorer.ui.resources.freeze_long_lived`): with them in, every warm page navigation took
~0.2 s longer than a bare Streamlit app's (bench/README.md). A fresh interpreter imports the
module the entry imports first and reads the collector's permanent generation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import gc, json
before = gc.get_freeze_count()
import explorer.ui.resources as resources
after_store = gc.get_freeze_count()
resources.import_model_libraries()
after_model = gc.get_freeze_count()
resources.import_model_libraries()  # once per kind of library: nothing new
again = gc.get_freeze_count()
print(json.dumps([before, after_store, after_model, again]))
"""


def test_the_libraries_objects_are_frozen_once_each() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    before, after_store, after_model, again = json.loads(done.stdout.strip().splitlines()[-1])
    assert before == 0
    assert after_store > 100_000  # Streamlit, DuckDB, pandas, pyarrow
    assert after_model > after_store + 100_000  # torch, transformer-lens, sae-lens
    assert again == after_model
