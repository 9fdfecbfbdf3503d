"""Specialist heatmaps page: the numbers shown (specialists, cells above chance, replication,
token detectors, top specialists) equal computations made here from the library's table and
its permutation null, for the settings of the sidebar or the URL; a bad URL value gets a
warning and the defaults."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from explorer.analysis.controls import load_chance_baseline
from explorer.analysis.replication import load_store_replication
from explorer.analysis.specialists import (
    MEASURE_INFO,
    SpecialistSettings,
    load_specialists,
    top_specialists,
)
from explorer.store.reader import Store
from explorer.ui.links import feature_url

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "specialists.py")
FAST = {"permutations": "20"}  # the page tests' chance baseline: 20 shuffles


@cache
def expected(store_path: Path, **settings):
    with Store.open(store_path) as store:
        chosen = SpecialistSettings(**settings)
        return load_specialists(store, chosen), load_chance_baseline(store, chosen)


def metrics(at: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def assert_page_shows(
    at: AppTest, store_path: Path, family: str = "bundled", per_category: int = 5, **settings
) -> None:
    assert not at.exception, at.exception
    result, baseline = expected(store_path, permutations=20, **settings)
    table = result.table[result.table["family"] == family]
    shown = metrics(at)
    assert shown["specialists (all SAEs)"] == f"{int(table['is_specialist'].sum()):,}"
    # cells above chance, recomputed from the raw permutation hits with numpy
    categories = result.categories.loc[result.categories["family"] == family, "category"]
    saes = sorted(set(result.features["sae"]))
    hits = baseline.hits[baseline.hits["family"] == family]
    above = 0
    for sae in saes:
        for category in categories:
            per_perm = np.bincount(
                hits.loc[(hits["sae"] == sae) & (hits["category"] == category), "perm"],
                minlength=20,
            )
            observed = int(
                table.loc[
                    (table["sae"] == sae) & (table["category"] == category), "is_specialist"
                ].sum()
            )
            p_value = ((per_perm >= observed).sum() + 1) / (len(per_perm) + 1)
            above += observed > 0 and p_value <= 0.05
    assert shown["cells above chance"] == f"{above} / {len(saes) * len(categories)}"
    found = table[table["discovered"]]
    rate = found["replicated"].sum() / len(found) if len(found) else None
    assert shown["replication rate"] == (f"{rate:.0%}" if rate is not None else "none found")
    detectors = int((table["is_specialist"] & table["token_explained"]).sum())
    assert shown["token detectors"] == f"{detectors:,}"
    top = top_specialists(table, per_category)
    listed = table_with(at, "q_value")
    assert listed[["category", "sae", "feature"]].values.tolist() == (
        top[["category", "sae", "feature"]].values.tolist()
    )
    assert listed["score"].tolist() == pytest.approx(top["score"].tolist())
    assert listed["link"].tolist() == [
        feature_url(sae, feature) for sae, feature in zip(top["sae"], top["feature"], strict=True)
    ]


def table_with(at, column: str) -> pd.DataFrame:
    """The one table of the page with `column` (the tabs and the expander run only when open:
    the numbers tab's and the other measures' tables are not drawn by default)."""
    found = [table.value for table in at.dataframe if column in table.value.columns]
    assert len(found) == 1, [list(table.value.columns) for table in at.dataframe]
    return found[0]


def test_hidden_tabs_and_the_closed_expander_run_only_when_opened(page, store_path) -> None:
    page.query_params.update(FAST)
    at = page.run()
    assert not any("chance_p95" in table.value.columns for table in at.dataframe)
    assert not any("replication_rate" in table.value.columns for table in at.dataframe)
    at.session_state["tab"] = "numbers"
    at.run()
    assert not at.exception
    assert any("chance_p95" in table.value.columns for table in at.dataframe)
    assert not any("notebook_score" in table.value.columns for table in at.dataframe)
    at.session_state["more_measures"] = True
    at.run()
    assert table_with(at, "notebook_score")["feature"].tolist() == (
        table_with(at, "q_value")["feature"].tolist()
    )


def test_default_settings_show_the_measure_and_its_controls(page, store_path) -> None:
    page.query_params.update(FAST)
    at = page.run()
    assert_page_shows(at, store_path)
    assert not at.warning
    caption = at.caption[0]
    assert MEASURE_INFO["selectivity"].name in caption.value
    assert "](methods#selectivity)" in caption.value  # a link to the Methods page
    assert at.query_params == FAST


def test_the_number_family_and_replicated_filter(page, store_path) -> None:
    page.query_params.update(FAST)
    at = page.run()
    at.selectbox(key="url_family").set_value("number").run()
    assert_page_shows(at, store_path, family="number")
    at.radio(key="url_findings").set_value("replicated").run()
    result, _ = expected(store_path, permutations=20)
    table = result.table[result.table["family"] == "number"]
    listed = table_with(at, "q_value")
    assert listed["replicated"].all()
    top = top_specialists(table, 5, replicated_only=True)
    assert listed["feature"].tolist() == top["feature"].tolist()
    assert at.query_params["findings"] == "replicated"


def test_sidebar_settings_change_the_numbers_and_the_url(page, store_path) -> None:
    page.query_params.update(FAST)
    at = page.run()
    at.selectbox(key="url_measure").set_value("dominance").run()
    at.number_input(key="url_min_support").set_value(2).run()
    at.number_input(key="url_top").set_value(2).run()
    assert_page_shows(at, store_path, per_category=2, measure="dominance", min_support=2)
    assert at.query_params["measure"] == "dominance"
    assert at.query_params["min_support"] == "2"
    at.radio(key="url_contrast").set_value("corpus").run()
    assert_page_shows(
        at, store_path, per_category=2, measure="dominance", min_support=2, contrast="corpus"
    )
    assert at.query_params["contrast"] == "corpus"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"share": "2"}, "share must lie in [0.0, 1.0]"),
        ({"fdr": "0.9"}, "fdr must lie in [0.0001, 0.5]"),
        ({"min_support": "many"}, "min_support="),
        ({"measure": "best"}, "measure must be one of"),
        ({"share": "0.2"}, "0 < other_share < share"),
        ({"top": "0"}, "from 1 to 50"),
    ],
)
def test_a_bad_link_value_warns_and_uses_the_default(page, store_path, params, message) -> None:
    page.query_params.update({**FAST, **params})
    at = page.run()
    shown = [warning.value.replace("\\", "") for warning in at.warning]  # Markdown-escaped
    assert any(message in warning for warning in shown), shown
    assert_page_shows(at, store_path)
    assert at.query_params == FAST  # the bad value is gone from the URL


@pytest.fixture(scope="module")
def replication_store(tiny_bundle_path, tmp_path_factory) -> Path:
    """A store built with the same source from a user corpus: a JSONL of every other bundled
    text (the odd text ids), in a cache folder of its own."""
    from explorer.build.single import build_store
    from explorer.corpus import bundled_corpus

    folder = tmp_path_factory.mktemp("replication_cache")
    texts = bundled_corpus().texts
    corpus = folder / "mine.jsonl"
    texts.loc[texts["text_id"] % 2 == 1, ["text", "category"]].to_json(
        corpus, orient="records", lines=True
    )
    path = folder / "mine.duckdb"
    build_store(f"demo:{tiny_bundle_path}", str(corpus), path)
    return path


def test_a_user_corpus_store_replicates_the_findings(
    page, store_path, replication_store, monkeypatch
) -> None:
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(replication_store.parent))
    page.query_params.update(FAST)
    at = page.run()
    at.selectbox(key="url_replicate_on").set_value("mine.duckdb").run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    assert at.query_params["replicate_on"] == "mine.duckdb"
    settings = SpecialistSettings(permutations=20)
    with Store.open(store_path) as store, Store.open(replication_store) as other:
        table = load_specialists(store, settings).table
        cells = load_store_replication(store, other, table, settings).cells
    # the rate over the bundled family's specialists, counted here from the re-test's cells
    found = cells[(cells["family"] == "bundled") & cells["external_tested"]]
    assert len(found) > 0
    rate = found["external_replicated"].mean()
    assert metrics(at)["replication rate"] == f"{rate:.0%}"
    at.session_state["details"] = "Replication"  # one tab of the details runs at a time
    at.run()
    rates = table_with(at, "replication_rate").set_index("category")
    by_category = found.groupby("category")["external_replicated"].agg(["size", "sum"])
    assert rates["discovered"].to_dict() == by_category["size"].to_dict()
    assert rates["replicated"].to_dict() == by_category["sum"].to_dict()
    assert any("mine.duckdb" in caption.value for caption in at.caption)
