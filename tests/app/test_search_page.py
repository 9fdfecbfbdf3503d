"""Search page: label, token and text searches show the library's rows with links to the
feature pages; an empty search, or a token no feature promotes, gets a message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explorer.analysis.text_activations import rank_text_features
from explorer.charts import feature_href
from explorer.live.text import encode_text
from explorer.sources.source import load_source
from explorer.store.queries.search import search_tokens
from explorer.store.reader import Store
from tests.stores import tiny_store

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "search.py")
LABELS = [("L0.resid_post", 3, "carries 50% of sums"), ("L1.resid_post", 7, "snake_case names")]
QUERY_KEY, TEXT_KEY = "url_q", "search_page.text"


@pytest.fixture(scope="module")
def store_path(tiny_bundle_path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("search_page") / "tiny.duckdb"
    tiny_store(tiny_bundle_path, "bundled+arithmetic:60", path)
    with Store.open(path) as store:
        for sae, feature, label in LABELS:
            store.save_label(sae, feature, label, note="from the test")
    return path


@pytest.fixture(scope="module")
def promoted_token(store_path) -> str:
    """A token that is the top promoted token of some feature."""
    with Store.open(store_path) as store:
        lens = store.logit_lens("L1.resid_post", 0)
    return lens.loc[lens["rank"] == 1, "token"].iloc[0]


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


def test_an_empty_search_asks_for_a_query(page) -> None:
    at = page()
    assert at.info[0].value == "Type a label to search for: the search is empty."
    assert not at.dataframe


@pytest.mark.parametrize(("query", "expected"), [("50%", [LABELS[0]]), ("E_C", [LABELS[1]])])
def test_label_search_matches_literally(page, query, expected) -> None:
    at = page()
    at.text_input(key=QUERY_KEY).set_value(query).run()
    shown = at.dataframe[0].value
    assert list(zip(shown["sae"], shown["feature"], shown["label"], strict=True)) == expected
    assert shown["link"].tolist() == [feature_href(sae, f) for sae, f, _ in expected]
    assert at.query_params["q"] == query
    at.text_input(key=QUERY_KEY).set_value("5_%").run()
    assert at.info[0].value == "No feature matches this label search."


def test_token_search_from_a_link_equals_the_library(page, store_path, promoted_token) -> None:
    at = page(by="token", q=promoted_token.strip())
    with Store.open(store_path) as store:
        expected = search_tokens(store, promoted_token.strip(), "exact", None, 5)
    shown = at.dataframe[0].value
    assert len(expected) > 0
    assert list(zip(shown["sae"], shown["feature"], shown["rank"], strict=True)) == list(
        zip(expected["sae"], expected["feature"], expected["rank"], strict=True)
    )
    np.testing.assert_allclose(shown["logit"], expected["logit"])
    assert ("L1.resid_post", 0, 1) in set(
        zip(shown["sae"], shown["feature"], shown["rank"], strict=True)
    )
    at.text_input(key=QUERY_KEY).set_value("no such token here").run()
    assert at.info[0].value == "No feature matches this promoted token search."
    assert not at.dataframe


def test_text_search_ranks_each_saes_features(page, tiny_bundle_path) -> None:
    at = page(by="text", sae="L1.resid_post", rank_by="sum", n="8")
    assert "Type a text" in at.info[0].value
    text = "12 + 30 = 42"
    at.text_area(key=TEXT_KEY).set_value(text).run()
    loaded = load_source(f"demo:{tiny_bundle_path}")
    expected = rank_text_features(encode_text(loaded, "L1.resid_post", text), "sum", 8)
    assert len(at.dataframe) == 1
    shown = at.dataframe[0].value
    assert shown["feature"].tolist() == expected["feature"].tolist()
    np.testing.assert_allclose(shown["sum"], expected["sum"], rtol=1e-5)
    assert shown["link"].tolist() == [feature_href("L1.resid_post", f) for f in expected["feature"]]
    at.selectbox(key="url_sae").set_value("all SAEs").run()
    assert len(at.dataframe) == 3
