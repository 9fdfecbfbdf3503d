"""Token highlighting page: stored texts (escaped, values on hover, top features per token),
typed text run live (bounded), and one feature over a category (others in grey)."""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from explorer.analysis.descriptions import DescriptionSettings, load_descriptions, with_user_labels
from explorer.sources.source import load_source
from explorer.store.reader import Store
from tests.stores import TINY, build_payload_store

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "tokens.py")
SAE = "L1.resid_post"
SPAN = re.compile(r'<span style="([^"]*)" title="([^"]*)">([^<]*)</span>')


@pytest.fixture(scope="module")
def store_path(tiny_bundle_path, tmp_path_factory) -> Path:
    return build_payload_store(tiny_bundle_path, tmp_path_factory.mktemp("tokens_page"))


@pytest.fixture(scope="module")
def facts(store_path):
    with Store.open(store_path) as store, store.cursor() as cursor:
        payload = store.texts("payload").iloc[0]
        text_id = int(payload["text_id"])
        acts = store.text_acts(text_id, SAE)
        strongest = int(acts.sort_values("value").iloc[-1]["feature"])
        other_texts = cursor.execute(
            """SELECT count(DISTINCT a.text_id) FROM acts a JOIN saes s USING (sae_idx)
            JOIN texts t USING (text_id) WHERE s.sae = ? AND a.feature = ?
                AND t.category <> 'payload'""",
            [SAE, strongest],
        ).fetchone()[0]
        return {
            "strongest": strongest,
            "other_texts": other_texts,
            "text_id": text_id,
            "acts": acts,
            "tokens": store.text_tokens(text_id),
            "max": store.feature_stats(SAE).set_index("feature")["max"],
            "payload_ids": store.texts("payload")["text_id"].tolist(),
            "shown": with_user_labels(
                load_descriptions(store, SAE, DescriptionSettings()), store.labels(SAE)
            ).set_index("feature")["shown"],
        }


@pytest.fixture
def page(store_path, tiny_bundle_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    monkeypatch.chdir(Path(PAGE).parents[1])
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, at.exception
    return at


def widget(elements, label: str):
    return next(element for element in elements if element.label == label)


def spans(html: str) -> list[tuple[str, str, str]]:
    return SPAN.findall(html)


def show_payload(at: AppTest, facts) -> AppTest:
    widget(at.selectbox, "SAE").set_value(SAE).run()
    widget(at.selectbox, "Category").set_value("payload").run()
    return widget(at.selectbox, "Text").set_value(facts["text_id"]).run()


def test_stored_payload_is_escaped_with_values_on_hover(page, facts):
    at = show_payload(page, facts)
    at = widget(at.text_input, "Features").set_value("3, 5").run()
    assert not at.exception and not at.error
    html = at.get("html")[0].value
    assert "<script" not in html and "&lt;script&gt;" in "".join(t for *_, t in spans(html))
    tokens = spans(html)
    assert [text for *_, text in tokens] == [escape(t) for t in facts["tokens"]["token"]]
    acts = facts["acts"]
    for (_, title, _), pos in zip(tokens, facts["tokens"]["pos"], strict=True):
        for feature in (3, 5):
            value = acts[(acts["pos"] == pos) & (acts["feature"] == feature)]["value"]
            shown = re.search(rf"{SAE} #{feature}: ([0-9.e-]+)", title).group(1)
            assert float(shown) == pytest.approx(float(value.sum()), abs=5e-5, rel=1e-3)
    assert f"{SAE} #3" in html and f"full colour at {facts['max'][3]:.3g}" in html


def test_top_features_at_each_token_equal_the_stored_activations(page, facts):
    at = show_payload(page, facts)
    table = at.dataframe[0].value
    acts = facts["acts"]
    assert len(table) == len(facts["tokens"])
    for _, row in table.iterrows():
        at_pos = acts[acts["pos"] == row["pos"]].sort_values(
            ["value", "feature"], ascending=[False, True]
        )
        for rank in (1, 2):
            best = at_pos.iloc[rank - 1]
            feature = int(best["feature"])
            expected = " · ".join(filter(None, [f"#{feature}", facts["shown"][feature]]))
            assert row[f"feature {rank}"] == expected  # its id and description
            assert float(row[f"value {rank}"]) == pytest.approx(best["value"], abs=5e-3)
    features = table[[f"feature {rank}" for rank in (1, 2, 3)]]
    assert not features.isna().any().any()  # a token with fewer active features says "—"
    assert "&lt;" not in "".join(table["token"]) and "<" in "".join(table["token"])


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("abc", "A feature id must be an integer from 0 to 127; 'abc' is not one"),
        (str(TINY.d_sae), "out of range"),
        ("1 2 3 4 5 6 7 8 9", "at most 8"),
    ],
)
def test_bad_feature_ids_give_messages(page, facts, typed, message):
    at = show_payload(page, facts)
    at = widget(at.text_input, "Features").set_value(typed).run()
    assert not at.exception
    assert any(message in error.value for error in at.error)


def test_typed_text_runs_live_through_the_model_and_sae(page, tiny_bundle_path):
    at = page
    widget(at.radio, "Show").set_value("Typed text").run()
    text = 'print("<b>hi</b>")'
    widget(at.selectbox, "SAE").set_value(SAE)
    widget(at.text_area, "Text").set_value(text)
    widget(at.text_input, "Features").set_value("7")
    at = widget(at.button, "Run").click().run()
    assert not at.exception and not at.error
    html = at.get("html")[0].value
    assert "<b>" not in html
    assert "print(&quot;&lt;b&gt;hi&lt;/b&gt;&quot;)" in "".join(t for *_, t in spans(html))
    loaded = load_source(f"demo:{tiny_bundle_path}")
    handle = loaded.sae(SAE)
    tokens = loaded.model.to_tokens(text)
    with torch.inference_mode():
        _, cache = loaded.model.run_with_cache(tokens, names_filter=[handle.hook_name])
        expected = handle.sae.encode(cache[handle.hook_name])[0, 1:, 7].numpy()
    shown = [float(re.search(r"#7: ([0-9.e-]+)", title).group(1)) for _, title, _ in spans(html)]
    np.testing.assert_allclose(shown, expected, atol=5e-5, rtol=1e-3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the text is empty"),
        ("word " * 80, f"this model reads at most {TINY.n_ctx - 1} after its BOS"),
    ],
)
def test_empty_or_oversized_typed_text_gives_a_message(page, text, message):
    at = page
    widget(at.radio, "Show").set_value("Typed text").run()
    widget(at.text_area, "Text").set_value(text)
    at = widget(at.button, "Run").click().run()
    assert not at.exception
    assert any(message in error.value for error in at.error), [e.value for e in at.error]


def test_one_feature_over_a_category_colours_the_target_and_greys_the_rest(page, facts):
    at = page
    widget(at.radio, "Show").set_value("One feature over a category").run()
    widget(at.selectbox, "SAE").set_value(SAE).run()
    feature = facts["strongest"]
    widget(at.number_input, "Feature").set_value(feature).run()
    at = widget(at.selectbox, "Target category").set_value("payload").run()
    assert not at.exception
    target, others = (element.value for element in at.get("html"))
    assert target.count("<tr>") == len(facts["payload_ids"])
    shown = re.sub(r"<[^>]+>", "", target)
    assert "<script" not in target and "&lt;script&gt;" in shown
    assert shown.count("payload · text") == 2
    assert "rgba(107,114,128," in others and "rgba(217,79,4," not in others
    assert "rgba(217,79,4," in target and "payload ·" not in others
    assert others.count("<tr>") == min(10, facts["other_texts"])
