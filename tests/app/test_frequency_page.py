"""Frequency vs specialization page: summary, correlation and rank-range counts equal the
library's for the SAE, ranges and thresholds chosen in the sidebar or the URL."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from explorer.analysis.frequency import (
    default_rank_ranges,
    frequency_specialization_correlation,
    frequency_summary,
    parse_rank_ranges,
    rank_band_counts,
)
from explorer.analysis.specialists import SpecialistSettings, load_specialists
from explorer.store.reader import Store

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "frequency.py")
D_SAE = 128  # the tiny preset's SAEs


def assert_page_shows(
    at: AppTest, store_path: Path, sae: str, ranges: str | None = None, **settings
) -> pd.DataFrame:
    assert not at.exception, at.exception
    with Store.open(store_path) as store:
        features = load_specialists(store, SpecialistSettings(**settings)).features
    features = features[features["sae"] == sae]
    summary = frequency_summary(features)
    correlation = frequency_specialization_correlation(features)
    shown = {metric.label: metric.value for metric in at.metric}
    assert shown == {
        "features": f"{D_SAE}",
        "dead": f"{summary['n_dead']}",
        "specialists": f"{summary['n_specialists']} ({summary['pct_specialists']:.1f}%)",
        "Spearman rho": f"{correlation['rho']:.3f}",
        "p-value": f"{correlation['p_value']:.2g}",
    }
    bands = rank_band_counts(
        features, parse_rank_ranges(ranges or default_rank_ranges(D_SAE), D_SAE)
    )
    pd.testing.assert_frame_equal(at.dataframe[0].value, bands, check_dtype=False)
    return bands


def test_default_view_is_the_deepest_sae(page, store_path) -> None:
    at = page.run()
    bands = assert_page_shows(at, store_path, "L2.resid_post")
    assert bands["band"].tolist() == ["1-25", "26-103", "104-128"]
    assert bands["n_features"].tolist() == [25, 78, 25]
    assert not at.warning and at.query_params == {}


def test_rank_ranges_sae_and_thresholds_from_the_sidebar(page, store_path) -> None:
    at = page.run()
    at.text_input(key="url_ranks").set_value("1-10, 50-128").run()
    at.selectbox(key="url_sae").set_value("L0.resid_post").run()
    at.selectbox(key="url_measure").set_value("dominance").run()
    at.number_input(key="url_min_support").set_value(1).run()
    bands = assert_page_shows(
        at, store_path, "L0.resid_post", "1-10, 50-128", measure="dominance", min_support=1
    )
    assert bands["n_features"].tolist() == [10, 79]
    assert at.query_params == {
        "ranks": "1-10, 50-128",
        "sae": "L0.resid_post",
        "measure": "dominance",
        "min_support": "1",
    }
    at.radio(key="url_x").set_value("freq_rank").run()
    assert at.query_params["x"] == "freq_rank"
    assert_page_shows(
        at, store_path, "L0.resid_post", "1-10, 50-128", measure="dominance", min_support=1
    )


def test_a_shared_link_opens_its_view(page, store_path) -> None:
    page.query_params.update({"sae": "L1.resid_post", "ranks": "1-64,65-128", "measure": "auroc"})
    at = page.run()
    assert not at.warning
    assert_page_shows(at, store_path, "L1.resid_post", "1-64,65-128", measure="auroc")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"ranks": "5-1"}, "first <= last"),
        ({"ranks": "1-999"}, "<= 128"),
        ({"sae": "L9.resid_post"}, "choose one of L0.resid_post"),
        ({"x": "loudness"}, "choose one of token_freq"),
        ({"strong_threshold": "1.5"}, "strong_mode 'absolute'"),
    ],
)
def test_a_bad_link_value_warns_and_uses_the_default(page, store_path, params, message) -> None:
    page.query_params.update(params)
    at = page.run()
    assert any(message in warning.value for warning in at.warning), [w.value for w in at.warning]
    assert_page_shows(at, store_path, "L2.resid_post")


def test_bad_ranges_typed_in_the_sidebar_warn(page, store_path) -> None:
    at = page.run()
    at.text_input(key="url_ranks").set_value("ten to twenty").run()
    assert any("FIRST-LAST" in warning.value for warning in at.warning)
    assert_page_shows(at, store_path, "L2.resid_post")
