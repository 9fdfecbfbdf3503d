"""Specialist heatmaps page: the numbers shown equal the library's, for the thresholds set in
the sidebar or in the URL; a bad URL value gets a warning and the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.analysis.frequency import strongest_features
from explorer.analysis.specialists import (
    SpecialistSettings,
    category_matrix,
    load_specialists,
    top_specialists,
)
from explorer.store.reader import Store
from explorer.ui.links import feature_url

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "specialists.py")


def expected(store_path: Path, **settings):
    with Store.open(store_path) as store:
        return load_specialists(store, SpecialistSettings(**settings))


def metrics(at: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def assert_page_shows(at: AppTest, store_path: Path, per_category: int = 5, **settings) -> None:
    assert not at.exception, at.exception
    result = expected(store_path, **settings)
    matrix = category_matrix(result.table)
    covered = matrix.loc[matrix["n_specialists"] > 0, "category"].nunique()
    assert metrics(at)["specialists (all SAEs)"] == f"{int(result.table['is_specialist'].sum()):,}"
    assert metrics(at)["categories with a specialist"] == f"{covered} / 11"
    counts = at.dataframe[0].value
    pivot = matrix.pivot(index="category", columns="sae", values="n_specialists")
    assert counts.to_dict() == pivot.to_dict()
    shown = at.dataframe[1].value
    top = top_specialists(result.table, per_category)
    assert shown[["category", "sae", "feature"]].values.tolist() == (
        top[["category", "sae", "feature"]].values.tolist()
    )
    assert shown["score"].tolist() == pytest.approx(top["score"].tolist())
    assert shown["link"].tolist() == [
        feature_url(sae, feature) for sae, feature in zip(top["sae"], top["feature"], strict=True)
    ]


def test_default_thresholds_show_the_librarys_specialists(page, store_path) -> None:
    at = page.run()
    assert_page_shows(at, store_path)
    assert not at.warning
    strongest = at.dataframe[2].value
    result = expected(store_path)
    assert strongest["feature"].tolist() == (
        strongest_features(result.features, per_sae=5)["feature"].tolist()
    )
    coverage = at.dataframe[3].value
    assert coverage["sae"].tolist() == ["L0.resid_post", "L1.resid_post", "L2.resid_post"]
    assert at.query_params == {}


def test_sidebar_thresholds_change_the_numbers_and_the_url(page, store_path) -> None:
    at = page.run()
    at.selectbox(key="url_measure").set_value("dominance").run()
    at.number_input(key="url_min_support").set_value(2).run()
    at.number_input(key="url_top").set_value(2).run()
    assert_page_shows(at, store_path, per_category=2, measure="dominance", min_support=2)
    assert at.query_params["measure"] == "dominance"
    assert at.query_params["min_support"] == "2"
    assert at.query_params["top"] == "2"
    at.number_input(key="url_strong_threshold").set_value(0.25).run()  # notebook score only
    assert_page_shows(at, store_path, per_category=2, measure="dominance", min_support=2)
    at.selectbox(key="url_measure").set_value("score").run()
    assert_page_shows(
        at, store_path, per_category=2, measure="score", min_support=2, strong_threshold=0.25
    )
    assert "measure" not in at.query_params  # back at its default


def test_a_shared_link_opens_with_its_thresholds(page, store_path) -> None:
    page.query_params.update({"measure": "enrichment", "fdr": "0.01", "test": "chi2"})
    at = page.run()
    assert not at.warning
    assert_page_shows(at, store_path, measure="enrichment", fdr=0.01, test="chi2")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"share": "2"}, "share must lie in [0.0, 1.0]"),
        ({"min_support": "many"}, "whole number"),
        ({"measure": "best"}, "measure must be one of"),
        ({"share": "0.2"}, "0 < other_share < share"),
        ({"top": "0"}, "choose 1 to 50"),
    ],
)
def test_a_bad_link_value_warns_and_uses_the_default(page, store_path, params, message) -> None:
    page.query_params.update(params)
    at = page.run()
    assert any(message in warning.value for warning in at.warning), [w.value for w in at.warning]
    assert_page_shows(at, store_path)
    assert at.query_params == {}  # the bad value is gone from the URL


def test_contradicting_sidebar_values_warn_and_use_the_defaults(page, store_path) -> None:
    at = page.run()
    at.slider(key="url_other_share").set_value(0.9).run()
    assert any("other_share" in warning.value for warning in at.warning)
    assert_page_shows(at, store_path)
