"""Feature page: deep links, messages on bad links, numbers from the store, escaped examples,
navigation, decoder neighbours, labels that persist, exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest

from explorer.analysis.descriptions import DescriptionSettings, load_scores
from explorer.sources.source import load_source
from explorer.store.reader import Store
from explorer.ui import feature_views
from tests.stores import TINY, build_payload_store

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "feature.py")
SAE = "L1.resid_post"
TITLE_VALUE = re.compile(r'title="token [^"]*?\n' + re.escape(SAE) + r' #\d+: ([0-9.e-]+)"')

LINEAGE_TAB = "Lineage across layers"  # one tab of the page runs at a time
RELATED_TAB = "Related features"


@pytest.fixture(scope="module")
def store_path(tiny_bundle_path, tmp_path_factory) -> Path:
    return build_payload_store(tiny_bundle_path, tmp_path_factory.mktemp("feature_page"))


@pytest.fixture(scope="module")
def facts(store_path):
    """What the tests compare against, read before the app opens the store."""
    with Store.open(store_path) as store, store.cursor() as cursor:
        stats = store.feature_stats(SAE)
        payload = cursor.execute(
            """SELECT s.sae, k.feature::BIGINT FROM feature_topk k JOIN saes s USING (sae_idx)
            JOIN texts x USING (text_id) JOIN tokens t ON t.text_id = k.text_id
                AND t.pos BETWEEN k.pos::INTEGER - 12 AND k.pos::INTEGER + 4
            WHERE x.category = 'payload' AND t.token LIKE '%<%'
            ORDER BY k.rank, s.sae_idx, k.feature LIMIT 1"""
        ).fetchone()
        busiest = int(stats.sort_values("n_active_tokens").iloc[-1]["feature"])
        return {
            "stats": stats.set_index("feature"),
            "live": stats.loc[stats["n_active_tokens"] > 0, "feature"].tolist(),
            "busiest": busiest,
            "top": store.feature_topk(SAE, busiest),
            "payload": payload,
        }


@pytest.fixture
def page(store_path, tiny_bundle_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    monkeypatch.chdir(Path(PAGE).parents[1])

    def open_page(**query: str) -> AppTest:
        at = AppTest.from_file(PAGE, default_timeout=120)
        for key, value in query.items():
            at.query_params[key] = value
        at.run()
        assert not at.exception, at.exception
        return at

    return open_page


def html_bodies(at: AppTest) -> list[str]:
    return [element.value for element in at.get("html")]


def test_deep_link_shows_the_features_numbers_and_highlighted_examples(page, facts):
    feature = facts["busiest"]
    at = page(sae=SAE, feature=str(feature))
    assert at.title[0].value == f"{SAE} · feature {feature}"
    assert not at.warning
    stats = facts["stats"].loc[feature]
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["token frequency"] == f"{100 * stats['token_freq']:.2f}%"  # as in tables
    assert metrics["frequency rank"] == f"{int(stats['freq_rank']):,}"
    rank_help = next(m.help for m in at.metric if m.label == "frequency rank")
    assert f"of the SAE's {TINY.d_sae} features" in rank_help
    assert metrics["max activation"] == f"{stats['max']:.2f}"
    assert metrics["mean when active"] == f"{stats['mean_active']:.2f}"
    assert metrics["active tokens"] == f"{int(stats['n_active_tokens']):,}"
    ablate = next(b for b in at.get("link_button") if b.proto.label == "Ablate or steer it")
    assert ablate.proto.url == f"ablation?sae={SAE}&features={feature}"
    top_html = html_bodies(at)[0]
    top = facts["top"]
    assert top_html.count("<tr>") == len(top)
    assert f"#1  {top['value'].iloc[0]:.3f}" in top_html
    hovered = [float(value) for value in TITLE_VALUE.findall(top_html)]
    assert any(value == pytest.approx(top["value"].iloc[0], rel=1e-3) for value in hovered)
    assert "background-color:rgba(217,79,4,1.000)" in top_html  # the max is full colour
    assert at.query_params["sae"] == SAE and at.query_params["feature"] == str(feature)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"sae": "nope", "feature": "3"}, "There is no SAE 'nope'"),
        ({"sae": SAE, "feature": "abc"}, "'abc' is not an integer"),
        ({"sae": SAE, "feature": "9999"}, "features 0 to 127"),
        ({"sae": SAE, "feature": "-4"}, "Feature -4 is out of range"),
    ],
)
def test_bad_links_give_a_message_and_a_live_default(page, facts, query, message):
    at = page(**query)
    assert any(message in warning.value for warning in at.warning), [w.value for w in at.warning]
    shown = at.title[0].value
    assert re.fullmatch(r"L\d\.resid_post · feature \d+", shown)
    if query["sae"] == SAE:
        assert shown == f"{SAE} · feature {facts['live'][0]}"


def best_explained(store_path: Path) -> tuple[str, int]:
    """The scored feature with the highest description F1 over every SAE (ties: balanced
    accuracy, more held-out active tokens, first SAE, lowest id), read from the scores."""
    settings = DescriptionSettings()
    with Store.open(store_path) as store:
        rows = []
        for order, sae in enumerate(store.saes()["sae"]):
            scores = load_scores(store, sae, settings)
            rows.append(scores[scores["scored"]].assign(sae=sae, order=order))
    scored = pd.concat(rows, ignore_index=True).sort_values(
        ["f1", "balanced_accuracy", "held_active", "order", "feature"],
        ascending=[False, False, False, True, True],
    )
    return scored["sae"].iloc[0], int(scored["feature"].iloc[0])


def test_missing_parameters_open_the_best_explained_feature_without_a_warning(page, store_path):
    at = page()
    assert not at.warning
    sae, feature = best_explained(store_path)
    assert at.title[0].value == f"{sae} · feature {feature}"


def test_payload_texts_are_shown_escaped(page, facts):
    sae, feature = facts["payload"]
    at = page(sae=sae, feature=str(feature))
    body = "".join(html_bodies(at))
    assert "<script" not in body and "<img" not in body and "<b>" not in body
    assert re.search(r">[^<]*&lt;[^<]*</span>", body), "an escaped '<' is a token's text"


def test_previous_next_and_random_move_between_live_features(page, facts):
    live = facts["live"]
    start = live[len(live) // 2]
    at = page(sae=SAE, feature=str(start))
    next(b for b in at.button if b.label == "Next").click().run()
    assert at.title[0].value == f"{SAE} · feature {live[len(live) // 2 + 1]}"
    assert at.query_params["feature"] == str(live[len(live) // 2 + 1])
    next(b for b in at.button if b.label == "Previous").click().run()
    next(b for b in at.button if b.label == "Previous").click().run()
    assert at.title[0].value == f"{SAE} · feature {live[len(live) // 2 - 1]}"
    for _ in range(3):
        next(b for b in at.button if b.label == "Random").click().run()
        assert int(at.title[0].value.rsplit(" ", 1)[1]) in live
    at.number_input[0].set_value(live[0]).run()
    assert next(b for b in at.button if b.label == "Previous").disabled == (live[0] == min(live))


def test_dead_feature_says_so(page, facts):
    dead = next(f for f in range(TINY.d_sae) if f not in facts["live"])
    at = page(sae=SAE, feature=str(dead))
    assert any("never fires" in info.value for info in at.info)
    assert [m.value for m in at.metric if m.label == "active tokens"] == ["0"]


def test_decoder_neighbours_and_co_firing_link_to_feature_pages(page, facts, tiny_bundle_path):
    feature = facts["busiest"]
    default = page(sae=SAE, feature=str(feature))  # opens on the range examples' tab
    assert not any(
        {"cosine", "jaccard", "similarity"} & set(df.value.columns) for df in default.dataframe
    )
    assert any("Examples across the activation range" in h.value for h in default.subheader)
    assert len(html_bodies(default)) == 2  # the top activations and the range's examples
    at = page(sae=SAE, feature=str(feature), tab=RELATED_TAB)  # its shared link
    same = next(df.value for df in at.dataframe if "cosine" in df.value.columns)
    assert not any("similarity" in df.value.columns for df in at.dataframe)  # the other tab
    lineage_at = page(sae=SAE, feature=str(feature), tab=LINEAGE_TAB)  # its shared link
    lineage = next(df.value for df in lineage_at.dataframe if "similarity" in df.value.columns)
    loaded = load_source(f"demo:{tiny_bundle_path}")
    query = F.normalize(loaded.sae(SAE).sae.W_dec.detach()[feature], dim=0)
    cosines = {
        handle.name: F.normalize(handle.sae.W_dec.detach(), dim=1) @ query for handle in loaded.saes
    }
    cosines[SAE][feature] = -2
    values, indices = cosines[SAE].topk(10)
    assert same["link"].tolist() == [f"feature?sae={SAE}&feature={i}" for i in indices.tolist()]
    np.testing.assert_allclose(same["cosine"], values.numpy(), atol=1e-5)
    for name in ("L0.resid_post", "L2.resid_post"):  # the lineage section: 3 per other SAE
        rows = lineage[lineage["sae"] == name]
        values, indices = cosines[name].topk(3)
        np.testing.assert_allclose(rows["similarity"], values.numpy(), atol=1e-5)
        assert rows["link"].tolist() == [f"feature?sae={name}&feature={i}" for i in indices]
    cofiring = next(df.value for df in at.dataframe if "jaccard" in df.value.columns)
    assert len(cofiring) == 10 and cofiring["jaccard"].is_monotonic_decreasing
    assert all(link.startswith(f"feature?sae={SAE}&feature=") for link in cofiring["link"])
    assert str(feature) not in [link.rsplit("=", 1)[1] for link in cofiring["link"]]


def test_label_and_notes_are_saved_in_the_store_and_survive_a_new_session(page, facts):
    feature = facts["live"][1]
    at = page(sae=SAE, feature=str(feature))
    assert any("No label saved for this feature yet." in c.value for c in at.caption)
    assert not any("label" in df.value.columns for df in at.dataframe)  # no empty grid
    at.text_input[0].set_value("   ")
    next(b for b in at.button if b.label == "Save label").click().run()
    assert any("1 to 200 characters" in error.value for error in at.error)
    at.text_input[0].set_value("closing brackets <b>")
    at.text_area[0].set_value("fires on ) and ]")
    next(b for b in at.button if b.label == "Save label").click().run()
    assert not at.exception
    shown = [success.value.replace("\\", "") for success in at.success]  # Markdown-escaped
    assert any("closing brackets <b>" in value for value in shown)
    assert "Label: closing brackets <b>" in [text.value for text in at.text]  # at once
    saved = at.dataframe[-1].value
    assert saved["label"].tolist() == ["closing brackets <b>"]
    assert saved["note"].tolist() == ["fires on ) and ]"]
    again = page(sae=SAE, feature=str(feature))
    assert again.dataframe[-1].value["label"].tolist() == ["closing brackets <b>"]
    assert "Label: closing brackets <b>" in [text.value for text in again.text]
    assert {button.label for button in again.get("download_button")} == {
        "Examples (CSV)",
        "Everything (JSON)",
    }


def test_lineage_waits_for_a_toggle_on_a_big_store_that_keeps_none(page, facts, monkeypatch):
    """A store that keeps no lineage and holds more activations than a page view reads at
    once shows the correlation lineage only once the user asks; the tiny store computes it."""
    from explorer.ui import cached

    at = page(sae=SAE, feature=str(facts["busiest"]), tab=LINEAGE_TAB)
    assert len([df for df in at.dataframe if "similarity" in df.value.columns]) == 2

    monkeypatch.setattr(cached, "MAX_SCAN_ROWS_ON_VIEW", 0)
    at = page(sae=SAE, feature=str(facts["busiest"]), tab=LINEAGE_TAB)
    assert any("Not computed: a build keeps the lineage" in info.value for info in at.info)
    assert len([df for df in at.dataframe if "similarity" in df.value.columns]) == 1  # cosines
    at.toggle(key="lineage_compute").set_value(True).run()
    assert not any("Not computed" in info.value for info in at.info)
    assert len([df for df in at.dataframe if "similarity" in df.value.columns]) == 2


def test_coming_back_from_another_page_shows_the_feature_shown_before(
    store_path, tiny_bundle_path, monkeypatch, facts
):
    """Sidebar navigation Feature -> another page -> Feature: Streamlit drops the feature
    page's widget state on the other page's run; the page must rebuild it (it raised a
    KeyError on the page before) and show the feature the session showed last."""
    app = Path(PAGE).parents[1] / "streamlit_app.py"
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    monkeypatch.chdir(app.parent)
    at = AppTest.from_file(str(app), default_timeout=120)
    at.run()
    feature = facts["busiest"]
    at.switch_page("app_pages/feature.py")
    at.query_params["sae"], at.query_params["feature"] = SAE, str(feature)
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == f"{SAE} · feature {feature}"
    at.switch_page("app_pages/methods.py")
    at.run()
    assert not at.exception, at.exception
    for key in list(at.query_params):  # the sidebar link carries no parameters
        del at.query_params[key]
    at.switch_page("app_pages/feature.py")
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == f"{SAE} · feature {feature}"


def lens_chart_titles(at: AppTest) -> list[str]:
    titles = [json.loads(chart.proto.spec).get("title") for chart in at.get("vega_lite_chart")]
    return [title for title in titles if title and "tokens" in title.lower()]


def test_the_logit_lens_is_one_chart_and_says_when_a_direction_is_all_hidden(
    page, facts, monkeypatch
):
    """Promoted and suppressed tokens are one diverging chart (each chart is browser work
    on every navigation); a direction whose stored tokens are all absent from the corpus
    gets a line saying so, not an empty chart."""
    feature = facts["busiest"]
    at = page(sae=SAE, feature=str(feature))
    assert lens_chart_titles(at) == [
        "Promoted and suppressed tokens",
        "All tokens of the vocabulary",
    ]
    for kept, hidden in (("promoted", "suppressed"), ("suppressed", "promoted")):
        sign = 1 if kept == "promoted" else -1

        def one_direction(lens, ids, sign=sign):
            keep = lens["rank"] * sign > 0
            return lens[keep].reset_index(drop=True), int((~keep).sum())

        monkeypatch.setattr(feature_views, "corpus_only", one_direction)
        at = page(sae=SAE, feature=str(feature))
        captions = [caption.value for caption in at.caption]
        assert f"None of the stored {hidden} tokens occurs in the corpus." in captions
        assert f"None of the stored {kept} tokens occurs in the corpus." not in captions
        assert lens_chart_titles(at)[0] == "Promoted and suppressed tokens"
