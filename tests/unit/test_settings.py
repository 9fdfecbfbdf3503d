"""Tests of explorer.settings: defaults, the cache directory moving the default store, the
public-demo switch and its limits, clear messages for bad values, and why config.toml cannot
carry the switch (Streamlit does not know the option)."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.errors import StreamlitAPIException

from explorer import settings
from explorer.settings import Settings, SettingsError, from_environ, parse_flag


def test_defaults_start_on_the_demo_bundle_and_store():
    assert from_environ({}) == Settings(
        cache_dir=Path("cache"), store="cache/demo.duckdb", source="demo", public_demo=False
    )
    assert from_environ({}).live_slots is None
    assert from_environ({}).text_chars(2000) == 2000


def test_cache_dir_moves_the_default_store_and_a_store_path_wins(tmp_path):
    moved = from_environ({"EXPLORER_CACHE_DIR": str(tmp_path)})
    assert moved.cache_dir == tmp_path
    assert moved.store == str(tmp_path / "demo.duckdb")
    prebuilt = from_environ(
        {"EXPLORER_CACHE_DIR": str(tmp_path), "EXPLORER_STORE": " /srv/stores/gpt2.duckdb "}
    )
    assert prebuilt.store == "/srv/stores/gpt2.duckdb"
    assert from_environ({"EXPLORER_SOURCE": " demo:tiny "}).source == "demo:tiny"
    assert from_environ({"EXPLORER_SOURCE": "  "}).source == "demo"


@pytest.mark.parametrize("value", ["1", "true", "TRUE", " yes ", "on", "On"])
def test_public_demo_on(value):
    demo = from_environ({"EXPLORER_PUBLIC_DEMO": value})
    assert demo.public_demo is True
    assert demo.live_slots == settings.PUBLIC_LIVE_SLOTS == 2
    assert demo.text_chars(2000) == settings.PUBLIC_TEXT_CHARS == 500
    assert demo.text_chars(300) == 300  # a page's own smaller limit stays


@pytest.mark.parametrize("value", ["0", "false", "No", "off", ""])
def test_public_demo_off(value):
    assert from_environ({"EXPLORER_PUBLIC_DEMO": value}).public_demo is False


def test_a_bad_value_names_the_variable_and_the_accepted_values():
    with pytest.raises(SettingsError) as bad:
        from_environ({"EXPLORER_PUBLIC_DEMO": "maybe"})
    message = str(bad.value)
    assert message.startswith("EXPLORER_PUBLIC_DEMO='maybe' is not a yes/no value")
    for word in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        assert word in message
    with pytest.raises(SettingsError, match="EXPLORER_STORE is not a usable path"):
        from_environ({"EXPLORER_STORE": "a\x00b"})


def test_toml_booleans_from_secrets_are_accepted():
    assert parse_flag("EXPLORER_PUBLIC_DEMO", True) is True
    assert parse_flag("EXPLORER_PUBLIC_DEMO", False) is False
    assert parse_flag("EXPLORER_PUBLIC_DEMO", None) is False


def test_the_process_environment_is_read_on_every_call(monkeypatch):
    monkeypatch.setenv("EXPLORER_PUBLIC_DEMO", "1")
    assert from_environ().public_demo is True
    monkeypatch.setenv("EXPLORER_PUBLIC_DEMO", "0")
    assert from_environ().public_demo is False
    monkeypatch.delenv("EXPLORER_PUBLIC_DEMO")
    monkeypatch.setenv("EXPLORER_STORE", "/data/prebuilt.duckdb")
    assert from_environ().store == "/data/prebuilt.duckdb"


def test_streamlit_config_has_no_place_for_the_switch():
    """An `[explorer] publicDemo = true` section in config.toml is dropped by Streamlit (it
    warns "not a valid config option"), so the app could never read it: hence the variable."""
    with pytest.raises(StreamlitAPIException, match="Unrecognized config option"):
        st.set_option("explorer.publicDemo", True)
    with pytest.raises(RuntimeError, match="not defined"):
        st.get_option("explorer.publicDemo")
