"""Logit lens page: the browse table, reverse lookup, consistency metrics and the diverse
selection show the library's numbers for the SAE and settings chosen in the sidebar or the
URL; tokens that are not one token, and bad link values, get a message."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explorer.analysis.lens_checks import (
    INPUT_LIKE,
    OUTPUT_LIKE,
    ConsistencySettings,
    consistency,
    consistency_summary,
    diverse_features,
    example_ranks,
)
from explorer.analysis.logit_lens import reverse_lookup
from explorer.charts import feature_href
from explorer.charts.feature import token_label
from explorer.sources.source import load_source
from explorer.sources.unembed import unembed_directions
from explorer.store.queries.descriptions import lens_tokens_in_corpus
from explorer.store.queries.lens import feature_ranking, lens_overview, top_examples_with_next
from explorer.store.reader import Store
from tests.stores import TINY

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "logit_lens.py")
DEEPEST = "L2.resid_post"  # the tiny preset's last SAE, the page's default


@pytest.fixture(scope="module")
def loaded(tiny_bundle_path):
    return load_source(f"demo:{tiny_bundle_path}")


@pytest.fixture
def page(store_path, tiny_bundle_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))

    def open_page(**query: str) -> AppTest:
        at = AppTest.from_file(PAGE, default_timeout=120)
        at.query_params.update(query)
        at.run()
        assert not at.exception, at.exception
        return at

    return open_page


def read(store_path: Path, reader, *args):
    with Store.open(store_path) as store:
        return reader(store, *args)


def test_browse_hides_tokens_absent_from_the_corpus_by_default(page, store_path) -> None:
    at = page()
    lists = read(store_path, lens_tokens_in_corpus, DEEPEST, 5).set_index("feature")
    shown = at.dataframe[0].value.set_index("feature")
    for feature in shown.index[:20]:
        expected = [token_label(t) for t in lists.loc[feature, "promoted"]]
        assert list(shown.loc[feature, "promoted"]) == expected
    hidden, stored = int(lists["n_hidden"].sum()), int(lists["n_stored"].sum())
    assert hidden > 0
    assert f"{hidden:,} of the {stored:,} stored" in " ".join(c.value for c in at.caption)


def test_browse_lists_every_feature_with_its_stored_tokens(page, store_path) -> None:
    at = page()
    assert not at.warning
    at.toggle(key="lens_page.in_corpus").set_value(False).run()
    shown = at.dataframe[0].value
    expected = read(store_path, lens_overview, DEEPEST, 5)
    expected = expected.sort_values(["max_logit", "feature"], ascending=[False, True])
    assert shown["feature"].tolist() == expected["feature"].tolist()
    np.testing.assert_allclose(shown["max_logit"], expected["max_logit"])
    first = expected.iloc[0]
    assert list(shown["promoted"].iloc[0]) == [token_label(t) for t in first["promoted"]]
    assert shown["link"].iloc[0] == feature_href(DEEPEST, int(first["feature"]))
    at.number_input(key="url_n").set_value(2).run()
    assert at.query_params["n"] == "2"
    assert {len(tokens) for tokens in at.dataframe[0].value["promoted"]} == {2}
    # a GPT-2-sized SAE's 24,576 rows are not sent on every run: the first rows shown
    at.number_input(key="url_rows").set_value(10).run()
    assert at.query_params["rows"] == "10"
    assert at.dataframe[0].value["feature"].tolist() == expected["feature"].head(10).tolist()
    assert f"10 of the {len(expected):,} features of {DEEPEST}" in " ".join(
        caption.value for caption in at.caption
    )


def test_reverse_lookup_by_id_equals_the_library(page, loaded) -> None:
    token_id = 42
    at = page(view="reverse", sae="L1.resid_post", given="id", token=str(token_id), top="7")
    assert not at.warning
    shown = at.dataframe[0].value
    expected = reverse_lookup(loaded, "L1.resid_post", token_id, 7)
    assert shown["feature"].tolist() == expected["feature"].tolist()
    assert shown["direction"].tolist() == ["promotes"] * 7 + ["suppresses"] * 7
    np.testing.assert_allclose(shown["logit"], expected["logit"], rtol=1e-6)
    assert shown["link"].tolist() == [feature_href("L1.resid_post", f) for f in expected["feature"]]


def test_reverse_lookup_by_typed_token_and_a_message_for_several(page, loaded) -> None:
    at = page(view="reverse")
    tokenizer = loaded.tokenizer
    token_id = next(i for i in range(100, 512) if len(tokenizer.decode([i]).strip()) >= 3)
    text = tokenizer.decode([token_id])
    at.text_input(key="url_token").set_value(text).run()
    assert not at.warning
    expected = reverse_lookup(loaded, DEEPEST, token_id, 20)
    assert at.dataframe[0].value["feature"].tolist() == expected["feature"].tolist()
    assert f"Token id {token_id}." in at.caption[0].value
    at.text_input(key="url_token").set_value(f"{text}, {text}!").run()
    assert "tokens for this tokenizer" in at.warning[0].value
    assert not at.dataframe


def test_consistency_metrics_equal_the_library(page, store_path, loaded) -> None:
    at = page(view="consistency", k="5", seed="3")
    settings = ConsistencySettings(k=5, seed=3)
    examples = read(store_path, top_examples_with_next, DEEPEST)
    unembed = partial(unembed_directions, loaded.model)
    table = consistency(examples, loaded.sae(DEEPEST).sae.W_dec, unembed, settings)
    summary = consistency_summary(table)
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["features checked"] == f"{summary['n_features']:,}"
    assert metrics["mean hit rate"] == f"{summary['mean_hit_rate']:.3f}"
    assert metrics["random baseline"] == f"{summary['mean_random_hit_rate']:.3f}"
    assert metrics[OUTPUT_LIKE] == f"{summary[OUTPUT_LIKE]:,}"
    assert metrics[INPUT_LIKE] == f"{summary[INPUT_LIKE]:,}"
    shown = at.dataframe[0].value
    marked = table[table["kind"].isin([OUTPUT_LIKE, INPUT_LIKE])]
    assert sorted(shown["feature"]) == sorted(marked["feature"])
    first = int(
        table.sort_values(["hit_rate", "feature"], ascending=[False, True]).iloc[0]["feature"]
    )
    detail = at.dataframe[1].value
    assert detail["rank"].tolist() == list(examples.loc[examples["feature"] == first, "rank"])
    ranks = example_ranks(examples, loaded.sae(DEEPEST).sae.W_dec, unembed, first, 5)
    np.testing.assert_array_equal(detail["next_rank"], ranks["next_rank"])


def test_diverse_selection_count_follows_the_threshold(page, store_path, loaded) -> None:
    at = page(view="diverse", candidates="60")
    decoder = loaded.sae(DEEPEST).sae.W_dec
    ranking = read(store_path, feature_ranking, DEEPEST, "max_logit", 60)
    for threshold in (0.7, 0.2):
        if threshold != 0.7:
            at.sidebar.slider[0].set_value(threshold).run()
        selection = diverse_features(decoder, ranking["feature"].tolist(), threshold)
        n_chosen = int(selection["chosen"].sum())
        assert at.metric[0].value == f"{n_chosen:,} of 60"
        chosen = selection.loc[selection["chosen"], "feature"].tolist()
        assert at.dataframe[0].value["feature"].tolist() == chosen
    assert n_chosen < 60  # 0.2 rejects some of the tiny SAE's features


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"view": "everything"}, "choose one of browse"),
        ({"sae": "L9.resid_post"}, "choose one of L0.resid_post"),
        ({"view": "reverse", "given": "id", "token": "99999"}, "0 to 511"),
        ({"view": "consistency", "k": "0"}, "k must be an integer from 1 to 100; '0' is out"),
        (
            {"view": "reverse", "token": "**bold** ![x](http://e.invalid/x.png)"},
            r"'\*\*bold\*\* \!\[",
        ),
    ],
)
def test_bad_link_values_get_a_message(page, params, message) -> None:
    at = page(**params)
    assert any(message in warning.value for warning in at.warning), [w.value for w in at.warning]


def test_live_views_need_the_stores_source(store_path, monkeypatch) -> None:
    monkeypatch.setenv("EXPLORER_SOURCE", "demo")  # the demo bundle's SAEs have 1024 features
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params.update({"view": "consistency"})
    at.run()
    assert not at.exception, at.exception
    assert f"has no SAE 'L2.resid_post' with {TINY.d_sae} features" in at.info[0].value
    assert not at.metric and not at.dataframe
    at.radio(key="url_view").set_value("browse").run()
    assert len(at.dataframe[0].value) == TINY.d_sae
