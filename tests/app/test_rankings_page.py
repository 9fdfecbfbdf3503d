"""Rankings and relations page: the ranking, co-firing and concept tables equal the library's
for the SAE, ranking and count chosen in the sidebar or the URL; typed examples run live
through the tiny model; a bad feature id, bad examples or a bad link value get a message."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit import dataframe_util
from streamlit.testing.v1 import AppTest

from explorer.analysis.concepts import category_concept, example_concept, stack_examples
from explorer.analysis.descriptions import (
    described_features,
    load_descriptions,
    load_scores,
    rank_by_score,
)
from explorer.analysis.rankings import rank_features
from explorer.analysis.specialists import SpecialistSettings, load_specialists
from explorer.live.text import encode_text
from explorer.sources.source import Source, load_source
from explorer.store.queries.feature import co_firing
from explorer.store.queries.relations import category_contrast
from explorer.store.reader import Store
from explorer.ui.links import ROW_NUMBER, feature_url
from tests.app.tabs import open_tab

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "rankings.py")
DEFAULT_SAE = "L2.resid_post"
CATEGORY_TAB, EXAMPLES_TAB = "Features of a category", "Features of typed examples"


def frequency(store: Store, sae: str) -> pd.DataFrame:
    table = store.frequency_table()
    return table[table["sae"] == sae]


def assert_shows(shown: pd.DataFrame, expected: pd.DataFrame, sae: str) -> None:
    """A linked table on the page: the expected columns and a link to each feature."""
    assert shown["link"].tolist() == [feature_url(sae, f) for f in expected["feature"]]
    columns = [c for c in expected.columns if c in shown.columns]
    pd.testing.assert_frame_equal(
        shown[columns].reset_index(drop=True),
        expected[columns].reset_index(drop=True),
        check_dtype=False,
    )


def assert_ranked(shown: pd.DataFrame, expected: pd.DataFrame) -> None:
    """A ranking's rows are numbered by their rank, first; no second rank column."""
    assert shown.index.name == ROW_NUMBER
    assert shown.index.tolist() == expected["rank"].tolist() == list(range(1, len(shown) + 1))
    assert "rank" not in shown.columns


def browser_texts(table) -> pd.DataFrame:
    """The texts a styled table sends the browser for its cells."""
    return dataframe_util.convert_arrow_bytes_to_pandas_df(
        table.proto.arrow_data.styler.display_values
    )


def percent(share: float, decimals: int) -> str:
    """The oracle of a percentage's text: fixed decimals, "< 0.01%" for a tiny positive one."""
    smallest = 10.0**-decimals
    if 0 < 100 * share < smallest / 2:
        return f"< {smallest:.{decimals}f}%"
    return f"{100 * share:.{decimals}f}%"


def assert_ranking(
    at: AppTest, store_path: Path, sae: str, ranking: str, k: int, **settings
) -> pd.DataFrame:
    assert not at.exception, at.exception
    with Store.open(store_path) as store:
        table = None
        if ranking == "most selective":
            table = load_specialists(store, SpecialistSettings(**settings)).table
            table = table[table["sae"] == sae]
        expected = rank_features(frequency(store, sae), ranking, k, table)
    assert_shows(at.dataframe[0].value, expected, sae)
    assert_ranked(at.dataframe[0].value, expected)
    assert len(expected) == k
    return expected


def test_default_view_ranks_the_deepest_saes_strongest_features(page, store_path) -> None:
    at = page.run()
    expected = assert_ranking(at, store_path, DEFAULT_SAE, "strongest", 25)
    assert expected["max"].is_monotonic_decreasing
    assert not at.warning and not at.error and at.query_params == {}
    with Store.open(store_path) as store:
        top = int(expected["feature"].iloc[0])
        cofiring = co_firing(store, DEFAULT_SAE, top, 15, "token")
        concept = category_concept(category_contrast(store, DEFAULT_SAE, "addition"), 25)
    assert_shows(at.dataframe[1].value, cofiring, DEFAULT_SAE)
    assert at.number_input(key=f"rankings_page.feature.{DEFAULT_SAE}").value == top
    assert len(at.dataframe) == 2  # the closed tabs did not run
    open_tab(at, CATEGORY_TAB)
    assert not at.exception, at.exception
    assert_shows(at.dataframe[1].value, concept, DEFAULT_SAE)
    page.query_params["tab"] = CATEGORY_TAB  # a shared link to that tab opens it
    shared = page.run()
    assert len(shared.dataframe) == 2
    assert_shows(shared.dataframe[1].value, concept, DEFAULT_SAE)


@pytest.mark.parametrize(
    ("ranking", "settings"),
    [("most frequent", {}), ("composite", {}), ("most selective", {"measure": "dominance"})],
)
def test_sidebar_chooses_sae_ranking_and_count(page, store_path, ranking, settings) -> None:
    at = page.run()
    at.selectbox(key="url_sae").set_value("L0.resid_post").run()
    at.selectbox(key="url_ranking").set_value(ranking).run()
    at.number_input(key="url_n").set_value(12).run()
    for name, value in settings.items():
        at.selectbox(key=f"url_{name}").set_value(value).run()
    assert_ranking(at, store_path, "L0.resid_post", ranking, 12, **settings)
    assert at.query_params == {"sae": "L0.resid_post", "ranking": ranking, "n": "12", **settings}


def test_a_shared_link_opens_its_ranking(page, store_path) -> None:
    page.query_params.update({"sae": "L1.resid_post", "ranking": "most selective", "n": "40"})
    at = page.run()
    assert not at.warning
    assert_ranking(at, store_path, "L1.resid_post", "most selective", 40)


@pytest.mark.parametrize("ranking", ["best explained", "least explained"])
def test_rankings_by_description_score_equal_the_library(page, store_path, ranking) -> None:
    page.query_params.update({"sae": "L1.resid_post", "ranking": ranking, "n": "10"})
    at = page.run()
    assert not at.exception and not at.warning
    with Store.open(store_path) as store:
        described = described_features(
            load_descriptions(store, "L1.resid_post"), load_scores(store, "L1.resid_post")
        )
    expected = rank_by_score(described, ranking == "best explained", 10)
    shown = at.dataframe[0].value
    assert_shows(shown, expected, "L1.resid_post")
    assert_ranked(shown, expected)
    assert shown["description"].tolist() == expected["description"].tolist()
    formats = json.loads(at.dataframe[0].proto.columns)
    scores = [c for c in ("f1", "precision", "recall") if expected[c].notna().any()]
    assert "f1" in scores and {c for c in ("precision", "recall") if c in shown} == set(scores[1:])
    assert {formats[c]["type_config"]["format"] for c in scores} == {"%.3f"}  # three decimals


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"ranking": "loudest"}, "choose one of strongest"),
        ({"n": "5"}, "n must be an integer from 10 to 500; '5' is out of range"),
        ({"sae": "L9.resid_post"}, "choose one of L0.resid_post"),
    ],
)
def test_a_bad_link_value_warns_and_uses_the_default(page, store_path, params, message) -> None:
    page.query_params.update(params)
    at = page.run()
    assert any(message in warning.value for warning in at.warning), [w.value for w in at.warning]
    assert_ranking(at, store_path, DEFAULT_SAE, "strongest", 25)


def test_co_firing_of_a_chosen_feature_and_a_bad_feature_id(page, store_path) -> None:
    at = page.run()
    with Store.open(store_path) as store:
        live = frequency(store, DEFAULT_SAE)
        feature = int(live.loc[live["freq_rank"] == 10, "feature"].iloc[0])
        expected = co_firing(store, DEFAULT_SAE, feature, 8, "text")
    at.number_input(key=f"rankings_page.feature.{DEFAULT_SAE}").set_value(feature).run()
    at.radio(key="rankings_page.level").set_value("text").run()
    at.slider(key="rankings_page.k").set_value(8).run()
    assert not at.exception, at.exception
    assert len(expected) == 8
    assert_shows(at.dataframe[1].value, expected, DEFAULT_SAE)

    at.number_input(key=f"rankings_page.feature.{DEFAULT_SAE}").set_value(5000).run()
    assert not at.exception, at.exception
    assert [error.value for error in at.error] == [
        f"A feature id of SAE {DEFAULT_SAE} must be an integer from 0 to 127; 5000 is out of range."
    ]


def test_percentages_read_with_fixed_decimals_and_the_tables_fit_the_page(page, store_path):
    at = page.run()
    with Store.open(store_path) as store:
        ranked = rank_features(frequency(store, DEFAULT_SAE), "strongest", 25)
        contrast = category_contrast(store, DEFAULT_SAE, "addition")
    concept = category_concept(contrast, 25)
    ranking_table, co_firing_table = at.dataframe[:2]
    concept_table = open_tab(page.run(), CATEGORY_TAB).dataframe[1]
    texts = browser_texts(ranking_table)
    assert texts["token_freq"].tolist() == [percent(v, 2) for v in ranked["token_freq"]]
    assert ranking_table.value["token_freq"].tolist() == ranked["token_freq"].tolist()
    texts = browser_texts(concept_table)
    for column in ["coverage", "share"]:
        assert texts[column].tolist() == [percent(v, 1) for v in concept[column]], column
    # the category's text counts are in the caption, not two more columns
    assert {"in_active", "n_in"}.isdisjoint(concept_table.value.columns)
    n_texts = int(contrast["n_in"].iloc[0])
    assert any(f"of the category's {n_texts:,} texts" in c.value for c in page.caption)
    # the co-firing table spans the page above its chart, not half of it beside the chart
    assert not any(len(column.dataframe) for column in at.columns)
    assert co_firing_table.value.columns.tolist() == [
        "link", "feature", "description", "jaccard", "n_both", "n_active"
    ]  # fmt: skip


def test_category_concept_follows_the_chosen_category(page, store_path) -> None:
    at = open_tab(page.run(), CATEGORY_TAB)
    at.selectbox(key="rankings_page.category").set_value("python_code").run()
    assert not at.exception, at.exception
    with Store.open(store_path) as store:
        expected = category_concept(category_contrast(store, DEFAULT_SAE, "python_code"), 25)
    assert len(expected) > 0
    assert_shows(at.dataframe[1].value, expected, DEFAULT_SAE)


def test_typed_examples_run_live_and_rank_like_the_library(
    page, store_path, tiny_bundle_path
) -> None:
    lines = ["def add(a, b):", "    return a + b"]
    at = open_tab(page.run(), EXAMPLES_TAB)
    at.text_area(key="rankings_page.examples_text").set_value("\n".join(lines) + "\n\n")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert not at.error, [error.value for error in at.error]
    loaded = load_source(Source.parse(f"demo:{tiny_bundle_path}"))
    acts, n_tokens = stack_examples([encode_text(loaded, DEFAULT_SAE, line) for line in lines])
    with Store.open(store_path) as store:
        expected = example_concept(acts, n_tokens, frequency(store, DEFAULT_SAE), 25)
    shown = at.dataframe[1].value
    assert shown["feature"].iloc[0] == expected["feature"].iloc[0]
    assert_shows(shown, expected, DEFAULT_SAE)
    assert any(f"2 examples, {n_tokens} tokens" in caption.value for caption in at.caption)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("   \n", "Type at least one example"),
        ("\n".join(f"line {i}" for i in range(11)), "at most 10 examples"),
    ],
)
def test_bad_examples_get_a_message(page, text, message) -> None:
    at = open_tab(page.run(), EXAMPLES_TAB)
    at.text_area(key="rankings_page.examples_text").set_value(text)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any(message in error.value for error in at.error), [e.value for e in at.error]
    assert len(at.dataframe) == 1  # the ranking only
