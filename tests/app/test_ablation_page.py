"""Ablation lab page: the numbers shown for a text run and a corpus run equal the library's,
every run lands in the store's ledger, a ledger entry re-runs to the same numbers, and bad
settings from the sidebar or the URL get a message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.analysis.descriptions import load_descriptions
from explorer.live.interventions import Intervention, specialization_test
from explorer.live.runs import run_corpus, run_text
from explorer.sources.source import load_source
from explorer.store.reader import Store
from tests.stores import tiny_store

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "ablation.py")
SAE = "L2.resid_post"  # the tiny preset's last SAE


@pytest.fixture(scope="module")
def store_path(tiny_bundle_path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ablation") / "tiny.duckdb"
    return tiny_store(tiny_bundle_path, "bundled+arithmetic:40", path)


@pytest.fixture(scope="module")
def loaded(tiny_bundle_path):
    return load_source(f"demo:{tiny_bundle_path}")


@pytest.fixture
def page(store_path, tiny_bundle_path, monkeypatch) -> AppTest:
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    return AppTest.from_file(PAGE, default_timeout=120)


def metrics(at: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def test_text_run_shows_the_librarys_numbers_and_is_saved(page, store_path, loaded):
    page.query_params.update({"sae": SAE, "features": "3, 5", "mode": "scale", "value": "4"})
    page.run()
    assert not page.exception and not page.error
    chosen = page.dataframe[0].value  # the chosen features, each with its description
    with Store.open(store_path) as store:
        before = len(store.interventions())
        text = store.text(0)["text"]
        described = load_descriptions(store, SAE).set_index("feature")["description"]
    assert chosen["feature"].tolist() == [3, 5]
    assert chosen["description"].tolist() == described.loc[[3, 5]].tolist()
    button(page, "Run on the text").click().run()
    assert not page.exception and not page.error

    expected = run_text(loaded, Intervention(SAE, (3, 5), "scale", 4.0), text).effect.summary()
    shown = metrics(page)
    assert shown["mean change in loss"] == f"{expected['mean_delta_loss']:+.4f}"
    assert shown["mean KL divergence"] == f"{expected['mean_kl']:.4f}"
    assert shown["mean |change| at the hook"] == f"{expected['mean_activation_change']:.4f}"
    with Store.open(store_path) as store:
        ledger = store.interventions()
    assert len(ledger) == before + 1
    saved = json.loads(ledger.iloc[0]["settings"])
    assert saved["intervention"]["features"] == [3, 5] and saved["text"] == text
    assert json.loads(ledger.iloc[0]["metrics"])["mean_delta_loss"] == pytest.approx(
        expected["mean_delta_loss"], abs=1e-6
    )


def test_corpus_run_reports_the_test_and_reruns_from_the_ledger(page, store_path, loaded):
    page.query_params.update({"sae": SAE, "features": "7"})
    page.run()
    target = next(s for s in page.selectbox if s.label == "Category to test")
    target.select("python_code")
    button(page, "Run over every text").click().run()
    assert not page.exception and not page.error
    with Store.open(store_path) as store:
        expected = run_corpus(
            loaded, store.texts(), Intervention(SAE, (7,), "zero"), target="python_code"
        ).test
    sentence = next(m.value for m in page.markdown if "texts more than the others" in m.value)
    assert f"{expected['mean_delta_in']:+.5f} on {expected['n_in']} texts" in sentence
    assert f"one-sided p = {expected['p_value']:.2g}" in sentence
    # the sentence also names the category whose mean change is the largest, with its test
    with Store.open(store_path) as store:
        texts = store.texts()
    effects = run_corpus(loaded, texts, Intervention(SAE, (7,), "zero")).effects
    means = effects.groupby("category")["delta_loss"].mean()
    worst = str(means.idxmax())
    if worst == "python_code":
        assert "python\\_code is also the category whose loss changes the most." in sentence
    else:
        own = specialization_test(effects, worst)
        named = sentence.replace("\\", "")
        assert f"The loss changes the most on {worst} texts" in named
        assert f"({own['mean_delta_in']:+.5f} on {own['n_in']} texts" in named
        assert f"one-sided p = {own['p_value']:.2g}; chosen as the largest" in named

    rerun = next(s for s in page.selectbox if s.label == "Re-run")
    rerun.select(rerun.options[0])  # the newest entry: this corpus run
    button(page, "Re-run and compare").click().run()
    assert [s.value for s in page.success] == [
        f"Re-ran #{rerun.value}: the same numbers as recorded."
    ]


def test_bad_settings_get_messages(page, store_path):
    page.query_params.update({"sae": SAE, "features": "99999", "mode": "swap"})
    page.run()
    assert not page.exception
    warnings = " ".join(w.value for w in page.warning)
    assert "features" in warnings and "99999" in warnings and "out of range" in warnings
    # the default feature is used instead, and swap needs two: a message, not a traceback
    assert [e.value for e in page.error] == ["Swapping needs exactly two features."]

    with Store.open(store_path) as store:
        before = len(store.interventions())
    page.query_params.clear()
    fresh = AppTest.from_file(PAGE, default_timeout=120)
    fresh.run()
    typed = next(r for r in fresh.radio if r.label == "Text")
    typed.set_value("Typed text")
    button(fresh, "Run on the text").click().run()
    assert not fresh.exception
    assert any("empty" in e.value for e in fresh.error)
    with Store.open(store_path) as store:
        assert len(store.interventions()) == before  # a refused run saves nothing


def test_the_n_most_frequent_features_are_ablated_together(page, store_path):
    page.query_params.update({"sae": SAE, "general": "3"})
    page.run()
    assert not page.exception and not page.error
    with Store.open(store_path) as store:
        frequency = store.frequency_table()
    top = frequency[frequency["sae"] == SAE].sort_values(["freq_rank", "feature"])["feature"]
    named = ", ".join(f"#{int(f)}" for f in top.head(3))
    shown = page.markdown[0].value.replace("\\", "")  # the description is Markdown-escaped
    assert shown.startswith(f"**zero-ablate {named} in {SAE} at every position")
    assert next(t for t in page.sidebar.text_input if t.label == "Features").disabled


def test_a_rerun_that_differs_from_its_record_says_so(page, store_path, loaded):
    run = run_text(loaded, Intervention(SAE, (4,), "clamp", 3.0), "12 + 30 = 42")
    recorded = {**run.metrics(), "mean_delta_loss": run.metrics()["mean_delta_loss"] + 1.0}
    with Store.open(store_path) as store:
        run_id = store.save_intervention(SAE, run.settings(), recorded)
    page.run()
    rerun = next(s for s in page.selectbox if s.label == "Re-run")
    rerun.select(run_id)
    button(page, "Re-run and compare").click().run()
    assert not page.exception and not page.success
    assert [w.value for w in page.warning] == [
        f"Re-ran #{run_id}: the numbers differ from the record."
    ]
    shown = page.get("json")[0].value
    shown = json.loads(shown) if isinstance(shown, str) else shown
    assert shown["recorded"]["mean_delta_loss"] == pytest.approx(recorded["mean_delta_loss"])
    assert shown["now"]["mean_delta_loss"] == pytest.approx(
        run.metrics()["mean_delta_loss"], abs=1e-6
    )


def test_a_stored_text_is_found_by_search_and_previewed_before_the_run(page, store_path, loaded):
    page.query_params.update({"sae": SAE, "features": "3"})
    page.run()
    with Store.open(store_path) as store:
        texts = store.texts()
    assert page.code[0].value == texts["text"].iloc[0]  # the first text, shown as typed
    piece = "def "
    contains = texts["text"].str.lower().str.contains(piece, regex=False)  # any case
    wanted = texts[texts["category"].eq("python_code") & contains & texts["n_tokens"].gt(0)]
    next(s for s in page.selectbox if s.label == "Category").select("python_code")
    next(t for t in page.text_input if t.label == "Text contains").input(piece).run()
    picker = next(s for s in page.selectbox if s.label == "Stored text")
    assert picker.options[0].startswith(f"#{wanted['text_id'].iloc[0]} · python_code · ")
    assert len(picker.options) == min(len(wanted), 100)
    listed = min(len(wanted), 100)
    assert f"Stored texts that match: {len(wanted):,}; listed: {listed:,}" in page.caption[1].value
    others = wanted.iloc[1:]  # not the first listed, so the choice changes the preview
    chosen = others.loc[others["text"].str.len().idxmin()]  # short enough for the tiny model
    picker.set_value(int(chosen["text_id"])).run()
    assert page.code[0].value == chosen["text"]
    with Store.open(store_path) as store:
        before = len(store.interventions())
    next(c for c in page.checkbox if c.label == "Generate").uncheck()
    button(page, "Run on the text").click().run()
    assert not page.exception and not page.error, [e.value for e in page.error]
    with Store.open(store_path) as store:
        ledger = store.interventions()
    assert len(ledger) == before + 1
    assert json.loads(ledger.iloc[0]["settings"])["text"] == chosen["text"]


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        ("no such text anywhere", ("info", "No stored text contains")),
        ("%_\\", ("info", "No stored text contains")),
        ("x" * 500, ("info", "No stored text contains 'xxxx")),  # the box keeps 200
    ],
)
def test_a_search_that_finds_nothing_or_is_refused_says_so(page, typed, shown):
    page.query_params.update({"sae": SAE, "features": "3"})
    page.run()
    search = next(t for t in page.text_input if t.label == "Text contains")
    search.set_value(typed).run()  # set_value: past the box's max_chars, as a forged message
    assert not page.exception
    kind, message = shown
    assert any(message in m.value for m in getattr(page, kind)), [m.value for m in page.info]
    assert not [s for s in page.selectbox if s.label == "Stored text"]
    button(page, "Run on the text").click().run()
    assert not page.exception
    assert "No stored text is chosen" in " ".join(e.value for e in page.error)


def test_the_steering_coefficient_is_shown_against_the_features_activations(page, store_path):
    with Store.open(store_path) as store:
        stats = store.frequency_table().query("sae == @SAE and max > 0")
    row = stats.sort_values("feature").iloc[0]  # a feature that fired
    feature, top, mean = int(row["feature"]), float(row["max"]), float(row["mean_active"])
    page.query_params.update({"sae": SAE, "features": str(feature), "mode": "steer", "value": "8"})
    page.run()
    assert not page.exception and not page.error
    scale = next(c.value for c in page.caption if "max activation" in c.value)
    expected = (
        f"coefficient 8 = {8 / top:.1f}x #{feature}'s max activation ({top:.3g}), "
        f"{8 / mean:.1f}x its mean when active ({mean:.3g})."
    )
    assert scale.replace("\\", "").startswith(expected)
    value = next(n for n in page.sidebar.number_input if n.label == "Steering coefficient")
    assert f"max activation is {top:.3g} and its mean when active {mean:.3g}" in value.help

    with Store.open(store_path) as store:
        silent = store.frequency_table().query("sae == @SAE and max == 0")["feature"]
    assert len(silent)  # the tiny store has features that never fired: no scale to show
    fresh = AppTest.from_file(PAGE, default_timeout=120)
    fresh.query_params.update({"sae": SAE, "features": str(int(silent.iloc[0])), "mode": "clamp"})
    fresh.run()
    assert any("never fired on this store's texts" in c.value for c in fresh.caption)
