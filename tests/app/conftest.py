"""App tests run the real pages with AppTest on the tiny bundle and a store built from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")


@dataclass(frozen=True)
class AppEnv:
    app: str
    store: Path


@pytest.fixture
def app_env(tiny_bundle_path, tmp_path, monkeypatch) -> AppEnv:
    """Point the app at the tiny bundle and a store path that does not exist yet."""
    store = tmp_path / "app.duckdb"
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store))
    monkeypatch.chdir(Path(APP).parent)
    return AppEnv(app=APP, store=store)
