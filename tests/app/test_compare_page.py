"""Compare SAEs page: the per-SAE table and the per-category counts equal the library's for the
thresholds set in the sidebar or in the URL, counted within the sidebar's family (default the
bundled prose family; the specialists and categories per SAE are recounted with pandas); a bad
URL value gets a warning and the defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit import dataframe_util
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
from tests.app.tabs import table_on_tabs
from tests.stores import TINY

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "compare.py")
SAES = ["L0.resid_post", "L1.resid_post", "L2.resid_post"]


TABS = ("Specialists", "Descriptions and quality", "The field's metrics")


def table_with(at: AppTest, *columns: str):
    """The one table of the page with `columns`, on the tab open now or else on the first
    tab that shows it (one tab runs at a time: each is opened and run in turn)."""
    return table_on_tabs(at, TABS, lambda table: set(columns) <= set(table.columns))


def settings_in_url(at: AppTest) -> dict:
    """The page's URL parameters but the open tab's."""
    return {name: value for name, value in at.query_params.items() if name != "tab"}


def browser_texts(table) -> pd.DataFrame:
    """The texts a styled table sends the browser for its cells."""
    return dataframe_util.convert_arrow_bytes_to_pandas_df(
        table.proto.arrow_data.styler.display_values
    )


def p_text(p: float) -> str:
    """The oracle of a p-value's text: three decimals, scientific below 0.001."""
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def assert_page_shows(
    at: AppTest, store_path: Path, family: str = "bundled", **settings
) -> pd.DataFrame:
    """The two tables of one row per SAE (specialists and frequency; quality) hold the
    library's comparison, split in two so each fits 1440 px; the counts per category."""
    assert not at.exception, at.exception
    with Store.open(store_path) as store:
        result = load_specialists(store, SpecialistSettings(**settings))
        expected = compare_saes(store.saes(), in_family(result, family))
    empty = [column for column in expected if expected[column].isna().all()]  # not shown
    expected = expected.drop(columns=empty)
    specialist_table = table_with(at, "n_specialists", "spearman_rho")
    quality_table = table_with(at, "dead_fraction")
    shown = specialist_table.value
    assert len(shown.columns) + len(quality_table.value.columns) - 1 == len(expected.columns)
    pd.testing.assert_frame_equal(shown, expected[shown.columns], check_dtype=False)
    quality = quality_table.value
    pd.testing.assert_frame_equal(quality, expected[quality.columns], check_dtype=False)
    assert shown["sae"].tolist() == quality["sae"].tolist() == SAES
    table = result.table[result.table["family"] == family]
    for row in shown.itertuples():
        cells = table[table["sae"] == row.sae]
        chosen = cells[cells["is_specialist"]]
        assert row.n_specialists == chosen["feature"].nunique()
        assert row.categories_with_specialists == chosen["category"].nunique()
        assert row.n_categories == cells["category"].nunique()
    at.session_state["tab"] = "Specialists"
    at.session_state["category_numbers"] = True  # an expander that runs only while open
    at.run()
    (counts,) = [
        frame
        for frame in at.dataframe
        if {"category", *SAES} <= set(frame.value) and "best_sae" not in frame.value  # probing's
    ]
    pivot = category_matrix(table).pivot(index="category", columns="sae", values="n_specialists")
    assert counts.value.set_index("category").to_dict() == pivot[SAES].to_dict()
    assert all(config(counts)[sae]["type_config"]["format"] == "%d" for sae in SAES)
    return shown


def config(table) -> dict:
    return json.loads(table.proto.columns)


def test_default_thresholds(page, store_path) -> None:
    at = page.run()
    shown = assert_page_shows(at, store_path)
    assert not at.warning and settings_in_url(at) == {}
    quality = table_with(at, "dead_fraction").value
    assert quality["n_features"].tolist() == [TINY.d_sae] * TINY.n_layers
    assert shown["n_specialists"].gt(0).any(), "the tiny store has specialists to compare"
    at.session_state["tab"] = "Specialists"
    at.run()
    assert any("selectivity" in caption.value for caption in at.caption)  # the default measure


def test_the_tables_read_in_the_number_style(page, store_path) -> None:
    """Shares as percentages with fixed decimals, p-values scientific only below 0.001, short
    headers whose tooltips define them, so every column is in view at 1440 px."""
    at = page.run()
    shown = assert_page_shows(at, store_path)
    specialist_table = table_with(at, "n_specialists", "spearman_rho")
    texts = browser_texts(specialist_table)
    assert texts["spearman_p"].tolist() == [p_text(p) for p in shown["spearman_p"]]
    formats = config(specialist_table)
    assert formats["pct_specialists"]["type_config"]["format"] == "%.1f%%"  # 4.7%, not 4.7
    assert formats["spearman_rho"]["label"] == "rho"
    assert "Spearman" in formats["spearman_rho"]["help"]
    with Store.open(store_path) as store:
        saes = store.saes().set_index("sae").loc[SAES]
    quality_table = table_with(at, "dead_fraction")
    texts = browser_texts(quality_table)
    for column in ("dead_fraction", "dense_fraction"):
        assert texts[column].tolist() == [f"{100 * v:.1f}%" for v in saes[column]], column
        assert quality_table.value[column].tolist() == pytest.approx(saes[column].tolist())
    formats = config(quality_table)
    assert formats["dense_fraction"]["label"] == "dense"
    assert "10% of tokens" in formats["dense_fraction"]["help"]
    assert [h.value for h in at.subheader][:2] == ["Description scores per SAE", "Quality per SAE"]
    at.session_state["tab"] = "Specialists"
    at.run()
    assert [h.value for h in at.subheader][:2] == [
        "Specialists and frequency per SAE",
        "Specialists per category",
    ]


def test_the_family_decides_the_counts(page, store_path) -> None:
    at = page.run()
    assert at.selectbox(key="url_family").value == "bundled"
    bundled = table_with(at, "n_specialists", "spearman_rho").value
    at.selectbox(key="url_family").set_value("number").run()
    number = assert_page_shows(at, store_path, family="number")
    assert settings_in_url(at) == {"family": "number"}
    assert not number["n_categories"].equals(bundled["n_categories"])


def test_sidebar_thresholds_change_the_comparison(page, store_path) -> None:
    at = page.run()
    before = table_with(at, "n_specialists", "spearman_rho").value
    at.selectbox(key="url_measure").set_value("auroc").run()
    at.number_input(key="url_min_support").set_value(1).run()
    after = assert_page_shows(at, store_path, measure="auroc", min_support=1)
    assert not before["n_specialists"].equals(after["n_specialists"])
    assert settings_in_url(at) == {"measure": "auroc", "min_support": "1"}


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
    page.query_params["tab"] = "Descriptions and quality"  # a shared link to that tab
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


@pytest.mark.parametrize("family", ["bundled", "number"])
def test_after_the_specialist_heatmaps_the_counts_are_still_compares_own(
    store_path, tiny_bundle_path, monkeypatch, family
) -> None:
    """Both pages read the one shared specialists object and keep views of it
    (`cached.of_shared`): the heatmaps' category matrix (every category, untested ones at 0)
    must not stand in for Compare's (tested cells only) in the same server."""
    app = Path(PAGE).parents[1] / "streamlit_app.py"
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    monkeypatch.chdir(app.parent)
    at = AppTest.from_file(str(app), default_timeout=120)
    at.run()
    for page in ("app_pages/specialists.py", "app_pages/compare.py"):
        at.switch_page(page)
        at.run()
        at.selectbox(key="url_family").set_value(family).run()
        assert not at.exception, at.exception
    at.session_state["category_numbers"] = True  # Compare's counts per category, opened
    at.run()
    (counts,) = [frame.value for frame in at.dataframe if {"category", *SAES} <= set(frame.value)]
    with Store.open(store_path) as store:
        table = in_family(load_specialists(store, SpecialistSettings()), family).table
    pivot = category_matrix(table).pivot(index="category", columns="sae", values="n_specialists")
    assert counts.set_index("category").to_dict() == pivot[SAES].to_dict()
