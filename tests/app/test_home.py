"""Home page: builds the store on first run, then shows the model, SAEs and their quality."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def test_first_run_builds_the_store_and_shows_quality(app_env):
    assert not app_env.store.exists()
    at = AppTest.from_file(app_env.app, default_timeout=180).run()
    assert not at.exception, at.exception
    assert app_env.store.exists()
    assert at.title[0].value == "SAE feature explorer"
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["layers"] == "3"
    assert int(metrics["texts"].replace(",", "")) > 500
    quality = at.dataframe[-2].value
    assert list(quality["sae"]) == ["L0.resid_post", "L1.resid_post", "L2.resid_post"]
    assert quality["l0"].round(2).tolist() == [8.0, 8.0, 8.0]
    categories = at.dataframe[-1].value
    assert {"python_code", "addition", "non_english"} <= set(categories["category"])


def test_unknown_source_shows_a_message_not_a_traceback(app_env):
    at = AppTest.from_file(app_env.app, default_timeout=60).run()
    at.sidebar.text_input[0].set_value("registry:no-such-release:x").run()
    assert not at.exception
    assert any("no-such-release" in error.value for error in at.error)


def test_corrupted_store_shows_a_message(app_env):
    app_env.store.write_bytes(b"not a duckdb file" * 64)
    at = AppTest.from_file(app_env.app, default_timeout=60).run()
    assert not at.exception
    assert any(app_env.store.name in error.value for error in at.error)
    assert app_env.store.read_bytes().startswith(b"not a duckdb")
