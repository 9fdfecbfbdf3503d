"""Public demo mode (EXPLORER_PUBLIC_DEMO=1): the source and store are shown but fixed, the
label form is switched off, ablation runs show the library's numbers but are not saved,
typed text is bounded to 500 characters, and a live run that finds every model slot taken
gets the "busy" warning and runs nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.live.interventions import Intervention
from explorer.live.runs import run_text
from explorer.settings import LIVE_WAIT_S, PUBLIC_LIVE_SLOTS
from explorer.sources.source import load_source
from explorer.store.reader import Store
from explorer.ui.limits import BUSY_MESSAGE, live_slots
from tests.stores import TINY, tiny_store

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "streamlit_app.py")
PAGES = ROOT / "app_pages"
SAE = "L2.resid_post"  # the tiny preset's last SAE


@pytest.fixture(scope="module")
def store_path(tiny_bundle_path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("public_demo") / "tiny.duckdb"
    return tiny_store(tiny_bundle_path, "bundled+arithmetic:40", path)


@pytest.fixture
def demo_env(store_path, tiny_bundle_path, monkeypatch) -> Path:
    monkeypatch.setenv("EXPLORER_PUBLIC_DEMO", "1")
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    monkeypatch.chdir(ROOT)
    return store_path


@pytest.fixture
def all_slots_taken():
    """Every live-model slot of the process held by the test, released afterwards."""
    slots = live_slots(PUBLIC_LIVE_SLOTS)
    for _ in range(PUBLIC_LIVE_SLOTS):
        assert slots.acquire(timeout=5)
    yield
    for _ in range(PUBLIC_LIVE_SLOTS):
        slots.release()


def page(name: str) -> AppTest:
    return AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=120)


def widget(elements, label: str):
    return next(element for element in elements if element.label == label)


def counts(store_path: Path) -> tuple[int, int]:
    with Store.open(store_path) as store:
        return len(store.labels()), len(store.interventions())


def test_source_and_store_are_shown_but_fixed(demo_env, tiny_bundle_path):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["store_path"] = str(demo_env.parent / "elsewhere.duckdb")  # a crafted session
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    source, store = (widget(at.sidebar.text_input, label) for label in ("Source", "Store"))
    assert source.disabled and store.disabled
    assert source.value == f"demo:{tiny_bundle_path}" and store.value == str(demo_env)
    assert any("Public demo" in caption.value for caption in at.sidebar.caption)
    with Store.open(demo_env) as opened:
        n_texts = opened.table_counts()["texts"]
    assert {m.label: m.value for m in at.metric}["texts"] == f"{n_texts:,}"
    assert not (demo_env.parent / "elsewhere.duckdb").exists()


def test_secrets_toml_boolean_switches_the_demo_on(store_path, tiny_bundle_path, monkeypatch):
    monkeypatch.delenv("EXPLORER_PUBLIC_DEMO", raising=False)
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(APP, default_timeout=120)
    at.secrets["EXPLORER_PUBLIC_DEMO"] = True
    at.run()
    assert not at.exception
    assert widget(at.sidebar.text_input, "Source").disabled


def test_a_bad_switch_value_gets_a_message(demo_env, monkeypatch):
    monkeypatch.setenv("EXPLORER_PUBLIC_DEMO", "maybe")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert [e.value for e in at.error][0].startswith("EXPLORER_PUBLIC_DEMO='maybe' is not a yes/no")


def test_label_form_is_switched_off(demo_env):
    before = counts(demo_env)
    at = page("feature")
    at.query_params.update({"sae": SAE, "feature": "3"})
    at.run()
    assert not at.exception and not at.error
    label, note = widget(at.text_input, "Label"), widget(at.text_area, "Notes")
    save = widget(at.button, "Save label")
    assert label.disabled and note.disabled and save.disabled
    assert any("read-only in the public demo" in c.value for c in at.caption)
    assert counts(demo_env) == before


def test_ablation_runs_show_the_librarys_numbers_but_are_not_saved(demo_env, tiny_bundle_path):
    before = counts(demo_env)
    at = page("ablation")
    at.query_params.update({"sae": SAE, "features": "3, 5", "mode": "scale", "value": "4"})
    at.run()
    assert any("not saved to the ledger" in c.value for c in at.caption)
    widget(at.button, "Run on the text").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    with Store.open(demo_env) as store:
        text = store.text(0)["text"]
    loaded = load_source(f"demo:{tiny_bundle_path}")
    expected = run_text(loaded, Intervention(SAE, (3, 5), "scale", 4.0), text).effect.summary()
    shown = {metric.label: metric.value for metric in at.metric}
    assert shown["mean change in loss"] == f"{expected['mean_delta_loss']:+.4f}"
    assert shown["mean KL divergence"] == f"{expected['mean_kl']:.4f}"
    assert any(m.value.startswith("Run (not saved: public demo)") for m in at.markdown)

    widget(at.button, "Run over every text").click().run()
    assert not at.exception and not at.error
    assert any("texts more than the others" in m.value for m in at.markdown)
    assert counts(demo_env) == before


def test_typed_text_is_bounded_to_500_characters(demo_env):
    at = page("tokens").run()
    widget(at.radio, "Show").set_value("Typed text").run()
    text_area = widget(at.text_area, "Text")
    assert text_area.max_chars == 500
    text_area.set_value("a " * 300)  # 600 characters: the widget keeps the first 500
    at = widget(at.button, "Run").click().run()
    assert not at.exception
    assert widget(at.text_area, "Text").value == ("a " * 300)[:500]
    assert [e.value for e in at.error] == [  # 250 x "a " and BOS: the tiny model's n_ctx is 64
        f"The text is 251 tokens; this model reads at most {TINY.n_ctx - 1} after its BOS token. "
        "Shorten the text."
    ]


def test_busy_model_gets_the_try_again_warning_and_runs_nothing(demo_env, all_slots_taken):
    before = counts(demo_env)
    at = page("ablation")
    at.query_params.update({"sae": SAE, "features": "3"})
    at.run()
    started = time.perf_counter()
    widget(at.button, "Run on the text").click().run()
    waited = time.perf_counter() - started
    assert not at.exception and not at.error
    assert [w.value for w in at.warning] == [BUSY_MESSAGE]
    assert not at.metric  # nothing ran
    assert waited >= LIVE_WAIT_S
    assert counts(demo_env) == before

    tokens = page("tokens").run()
    widget(tokens.radio, "Show").set_value("Typed text").run()
    widget(tokens.text_area, "Text").set_value("busy visitors type text")
    tokens = widget(tokens.button, "Run").click().run()
    assert not tokens.exception and not tokens.error
    assert [w.value for w in tokens.warning] == [BUSY_MESSAGE]
    assert not tokens.get("html")


def test_a_freed_slot_lets_the_run_through(demo_env):
    slots = live_slots(PUBLIC_LIVE_SLOTS)
    assert slots.acquire(timeout=5)  # one of the two taken: the other is free
    try:
        at = page("tokens").run()
        widget(at.radio, "Show").set_value("Typed text").run()
        widget(at.text_area, "Text").set_value("one slot is still free")
        at = widget(at.button, "Run").click().run()
    finally:
        slots.release()
    assert not at.exception and not at.warning and not at.error
    assert at.get("html")


def test_one_source_is_kept_loaded_at_a_time(tiny_bundle_path):
    """`loaded_source` keeps one source per process: loading another evicts the first."""
    from explorer.ui import resources

    resources._loaded_source.clear()
    try:
        demo = resources.loaded_source("demo")
        assert resources.loaded_source("demo") is demo  # cached
        tiny = resources.loaded_source(f"demo:{tiny_bundle_path}")
        assert tiny.source.preset == str(tiny_bundle_path)
        again = resources.loaded_source("demo")
        assert again is not demo  # `demo` was evicted by the tiny bundle and loaded anew
        assert resources.loaded_source(f"demo:{tiny_bundle_path}") is not tiny
    finally:
        resources._loaded_source.clear()
