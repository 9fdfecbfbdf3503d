"""Compare SAEs page: the per-SAE table and the per-category counts equal the library's for the
thresholds set in the sidebar or in the URL, counted within the sidebar's family (default the
bundled prose family; the specialists and categories per SAE are recounted with pandas); a bad
URL value gets a warning and the defaults."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from explorer.analysis.compare import compare_saes
from explorer.analysis.descriptions import (
    compare_scores,
    described_features,
    load_descriptions,
    load_scores,
)
from explorer.analysis.specialists import (
    SpecialistSettings,
    category_matrix,
    in_family,
    load_specialists,
)
from explorer.store.reader import Store
from tests.stores import TINY

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "compare.py")
SAES = ["L0.resid_post", "L1.resid_post", "L2.resid_post"]


def assert_page_shows(
    at: AppTest, store_path: Path, family: str = "bundled", **settings
) -> pd.DataFrame:
    assert not at.exception, at.exception
    with Store.open(store_path) as store:
        result = load_specialists(store, SpecialistSettings(**settings))
        expected = compare_saes(store.saes(), in_family(result, family))
    shown = at.dataframe[0].value
    empty = [column for column in expected if expected[column].isna().all()]  # not shown
    pd.testing.assert_frame_equal(shown, expected.drop(columns=empty), check_dtype=False)
    assert shown["sae"].tolist() == SAES
    table = result.table[result.table["family"] == family]
    for row in shown.itertuples():
        cells = table[table["sae"] == row.sae]
        chosen = cells[cells["is_specialist"]]
        assert row.n_specialists == chosen["feature"].nunique()
        assert row.categories_with_specialists == chosen["category"].nunique()
        assert row.n_categories == cells["category"].nunique()
    counts = at.dataframe[1].value
    pivot = category_matrix(table).pivot(index="category", columns="sae", values="n_specialists")
    assert counts.to_dict() == pivot.to_dict()
    return shown


def test_default_thresholds(page, store_path) -> None:
    at = page.run()
    shown = assert_page_shows(at, store_path)
    assert not at.warning and at.query_params == {}
    assert shown["n_features"].tolist() == [TINY.d_sae] * TINY.n_layers
    assert shown["n_specialists"].gt(0).any(), "the tiny store has specialists to compare"
    assert any("selectivity" in caption.value for caption in at.caption)  # the default measure


def test_the_family_decides_the_counts(page, store_path) -> None:
    at = page.run()
    assert at.selectbox(key="url_family").value == "bundled"
    bundled = at.dataframe[0].value
    at.selectbox(key="url_family").set_value("number").run()
    number = assert_page_shows(at, store_path, family="number")
    assert at.query_params == {"family": "number"}
    assert not number["n_categories"].equals(bundled["n_categories"])


def test_sidebar_thresholds_change_the_comparison(page, store_path) -> None:
    at = page.run()
    before = at.dataframe[0].value
    at.selectbox(key="url_measure").set_value("auroc").run()
    at.number_input(key="url_min_support").set_value(1).run()
    after = assert_page_shows(at, store_path, measure="auroc", min_support=1)
    assert not before["n_specialists"].equals(after["n_specialists"])
    assert at.query_params == {"measure": "auroc", "min_support": "1"}


def test_a_shared_link_opens_its_view(page, store_path) -> None:
    page.query_params.update({"measure": "dominance", "share": "0.6", "other_share": "0.35"})
    at = page.run()
    assert not at.warning
    assert_page_shows(at, store_path, measure="dominance", share=0.6, other_share=0.35)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"measure": "best"}, "measure must be one of selectivity, score"),
        ({"min_support": "many"}, "must be an integer; 'many' is not one"),
        ({"fdr": "0.9"}, "fdr must lie in"),
    ],
)
def test_a_bad_link_value_warns_and_uses_the_default(page, store_path, params, message) -> None:
    page.query_params.update(params)
    at = page.run()
    assert any(message in warning.value for warning in at.warning), [w.value for w in at.warning]
    assert_page_shows(at, store_path)


def test_description_scores_per_sae_equal_the_library(page, store_path) -> None:
    at = page.run()
    with Store.open(store_path) as store:
        expected = compare_scores(
            {
                sae: described_features(load_descriptions(store, sae), load_scores(store, sae))
                for sae in SAES
            }
        )
    shown = next(df.value for df in at.dataframe if "f1_median" in df.value.columns)
    pd.testing.assert_frame_equal(
        shown.reset_index(drop=True), expected, check_dtype=False, check_exact=False
    )
    at.toggle[0].set_value(False).run()
    assert not any("f1_median" in df.value.columns for df in at.dataframe)
