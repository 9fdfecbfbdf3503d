"""App tests run the real pages with AppTest on the tiny bundle and a store built from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

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


@pytest.fixture(scope="session")
def store_path(tiny_bundle_path, tmp_path_factory) -> Path:
    """The tiny bundle's store over `bundled+arithmetic:60`, built once and shared by the
    page tests that only read it. A module that writes into its store (labels,
    interventions) or needs another corpus defines its own `store_path`."""
    from tests.stores import tiny_store

    path = tmp_path_factory.mktemp("shared_store") / "tiny.duckdb"
    return tiny_store(tiny_bundle_path, "bundled+arithmetic:60", path)


@pytest.fixture
def page(request, store_path, tiny_bundle_path, monkeypatch):
    """AppTest of the test module's `PAGE` on the tiny bundle and `store_path`."""
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    return AppTest.from_file(request.module.PAGE, default_timeout=120)
