"""Token taxonomy page: metrics, the feature table, the shuffle baseline and the store comparison
equal the library's for the SAE and thresholds chosen in the sidebar or the URL; the headline
monosemantic count is the sum of the label chart's monosemantic bars, counted here from the
feature table; a bad second store path gets a message; an old demo store is rebuilt on first
use."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from explorer.analysis.enrichment import (
    MONOSEMANTIC_LABELS,
    TaxonomySettings,
    compare_saes,
    load_taxonomy,
    shuffle_baseline,
    taxonomy_summary,
)
from explorer.charts import feature_href
from explorer.store.reader import Store
from explorer.store.schema import SCHEMA_VERSION, stored_schema_version
from explorer.ui import resources
from tests.app.tabs import open_tab, table_on_tabs
from tests.stores import tiny_store

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "taxonomy.py")
CORPUS = "bundled+arithmetic:60"
TABLE_COLUMNS = ["feature", "label", "top_tokens", "max_enrichment", "ceiling", "p_value",
                 "n_active_tokens", "n_significant"]  # fmt: skip
COMPARED = ["store", "sae", "layer", "n_features", "monosemantic_rate", "number_share",
            "max_enrichment"]  # fmt: skip


@pytest.fixture(scope="module")
def store_path(tiny_bundle_path, tmp_path_factory) -> Path:
    return tiny_store(tiny_bundle_path, CORPUS, tmp_path_factory.mktemp("taxonomy") / "tiny.duckdb")


@pytest.fixture(scope="module")
def other_store_path(tiny_bundle_path, tmp_path_factory) -> Path:
    """A second store of the same model over another corpus (arithmetic only)."""
    path = tmp_path_factory.mktemp("taxonomy_other") / "arithmetic.duckdb"
    return tiny_store(tiny_bundle_path, "arithmetic:80", path)


@pytest.fixture
def page(store_path, tiny_bundle_path, monkeypatch) -> AppTest:
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    return AppTest.from_file(PAGE, default_timeout=120)


def comparison_of(path: Path, name: str, settings: TaxonomySettings) -> pd.DataFrame:
    with Store.open(path) as store:
        return compare_saes(store, settings).assign(store=name)[COMPARED]


TABS = (
    "Labels against shuffled tokens",
    "Enrichment against activity",
    "Top features by enrichment",
    "Stores side by side",
)


def table_with(at: AppTest, column: str) -> pd.DataFrame:
    """The one dataframe of the page that has `column`, on the tab open now or else on the
    first tab that shows it (which stays open)."""
    return table_on_tabs(at, TABS, lambda table: column in table.columns).value


def captions_of(at: AppTest, tab: str) -> list[str]:
    return [caption.value for caption in open_tab(at, tab).caption]


def assert_page_shows(
    at: AppTest,
    store_path: Path,
    sae: str,
    label: str = "all",
    rows: int = 200,
    other: Path | None = None,
    **settings,
) -> pd.DataFrame:
    """The page's numbers equal the library's; returns the library's feature table."""
    assert not at.exception, at.exception
    chosen = TaxonomySettings(**settings)
    with Store.open(store_path) as store:
        features = load_taxonomy(store, sae, chosen)
    summary = taxonomy_summary(features)
    shown = {metric.label: metric.value for metric in at.metric}
    assert shown == {
        "features analysed": f"{summary['n_features']:,}",
        "monosemantic rate": f"{summary['monosemantic_rate']:.1%}",
        "number features": f"{summary['number_share']:.1%}",
        "max enrichment": f"{summary['max_enrichment']:,.1f}",
    }
    # one definition: the headline counts the features whose label is of one token kind
    n_monosemantic = int(features["label"].isin(MONOSEMANTIC_LABELS).sum())
    assert summary["monosemantic_rate"] == n_monosemantic / len(features)
    assert any(
        f"{n_monosemantic:,} of {len(features):,} live features" in caption
        for caption in captions_of(at, TABS[0])
    )
    with Store.open(store_path) as store:
        baseline = shuffle_baseline(store, sae, chosen).set_index("measure")
        n_total = int(store.token_counts()["n"].sum())
    assert any(f"N = {n_total:,} corpus tokens" in caption for caption in captions_of(at, TABS[1]))
    shown_baseline = table_with(at, "shuffled (mean)")
    assert shown_baseline["observed"].tolist() == pytest.approx(
        [
            summary[m]
            for m in (
                "n_with_significant",
                "n_monosemantic",
                "monosemantic_rate",
                "n_polysemantic",
                "median_max_enrichment",
                "max_enrichment",
            )
        ],  # fmt: skip
        nan_ok=True,
    )
    assert shown_baseline["shuffled (mean)"].tolist() == pytest.approx(
        baseline.loc[
            [
                "n_with_significant",
                "n_monosemantic",
                "monosemantic_rate",
                "n_polysemantic",
                "median_max_enrichment",
                "max_enrichment",
            ],
            "shuffled_mean",
        ].tolist(),  # fmt: skip
        nan_ok=True,
    )
    expected = (features if label == "all" else features[features["label"] == label]).head(rows)
    table = table_with(at, "top_tokens")
    assert table.columns.tolist() == ["link", "feature", "description", *TABLE_COLUMNS[1:]]
    pd.testing.assert_frame_equal(
        table[TABLE_COLUMNS].reset_index(drop=True),
        expected[TABLE_COLUMNS].reset_index(drop=True),
        check_dtype=False,
    )
    assert table["link"].tolist() == [feature_href(sae, f) for f in expected["feature"]]
    compared = [comparison_of(store_path, f"A: {store_path.name}", chosen)]
    if other is not None:
        compared.append(comparison_of(other, f"B: {other.name}", chosen))
    pd.testing.assert_frame_equal(
        table_with(at, "store").reset_index(drop=True),
        pd.concat(compared, ignore_index=True),
        check_dtype=False,
    )
    return features


def test_default_view_is_the_deepest_sae(page, store_path) -> None:
    at = page.run()
    features = assert_page_shows(at, store_path, "L2.resid_post")
    assert len(features) > 50 and features["label"].nunique() >= 3
    assert not at.warning and not at.error and at.query_params == {}
    # one tab runs and is drawn at a time: each draws its own chart or table, none more
    drawn = {}
    for tab in TABS:
        open_tab(at, tab)
        assert not at.exception, at.exception
        drawn[tab] = (len(at.get("vega_lite_chart")), len(at.dataframe))
    assert drawn == {TABS[0]: (1, 1), TABS[1]: (1, 0), TABS[2]: (0, 1), TABS[3]: (1, 1)}


def test_sidebar_controls_change_the_numbers(page, store_path) -> None:
    at = page.run()
    at.selectbox(key="url_sae").set_value("L0.resid_post").run()
    at.number_input(key="url_support").set_value(1).run()
    at.selectbox(key="url_p").set_value("0.001").run()
    settings = {"min_support": 1, "p_threshold": 0.001}
    features = assert_page_shows(at, store_path, "L0.resid_post", **settings)
    label = features["label"].value_counts().index[0]
    at.selectbox(key="url_label").set_value(label).run()
    at.number_input(key="url_rows").set_value(10).run()
    assert_page_shows(at, store_path, "L0.resid_post", label=label, rows=10, **settings)
    assert (table_with(at, "top_tokens")["label"] == label).all()
    assert at.query_params == {
        "sae": "L0.resid_post",
        "support": "1",
        "p": "0.001",
        "label": label,
        "rows": "10",
    }


def test_a_shared_link_opens_its_view(page, store_path, other_store_path, monkeypatch) -> None:
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(other_store_path.parent))
    page.query_params.update(
        {"sae": "L1.resid_post", "support": "5", "p": "0.05", "compare": other_store_path.name}
    )
    at = page.run()
    assert not at.warning and not at.error
    assert_page_shows(
        at, store_path, "L1.resid_post", other=other_store_path, min_support=5, p_threshold=0.05
    )


def test_a_second_store_is_compared_side_by_side(
    page, store_path, other_store_path, monkeypatch
) -> None:
    """The second store is one of the stores in the cache folder, chosen by file name (a
    link naming a path: tests/reliability/test_bad_input.py)."""
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(other_store_path.parent))
    at = page.run()
    at.selectbox(key="url_compare").set_value(other_store_path.name).run()
    assert not at.error
    assert_page_shows(at, store_path, "L2.resid_post", other=other_store_path)
    stores = table_with(at, "store")["store"].unique().tolist()
    assert stores == [f"A: {store_path.name}", f"B: {other_store_path.name}"]
    (table,) = [frame for frame in at.dataframe if "store" in frame.value.columns]
    cells = convert_arrow_bytes_to_pandas_df(table.proto.arrow_data.styler.display_values)
    for share in ("monosemantic_rate", "number_share"):  # shares read as percentages
        assert cells[share].tolist() == [f"{100 * v:.1f}%" for v in table.value[share]]
    assert at.query_params == {"compare": other_store_path.name}
    at.radio(key="taxonomy_measure").set_value("number_share").run()
    assert not at.exception


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"sae": "L9.resid_post"}, "choose one of L0.resid_post"),
        ({"p": "0.5"}, "choose one of 0.05"),
        ({"support": "0"}, "from 1 to 100000"),
        ({"support": "lots"}, "'lots' is not one"),
        ({"label": "<b>bold</b>"}, "choose one of all"),
    ],
)
def test_a_bad_link_value_warns_and_uses_the_default(page, store_path, params, message) -> None:
    page.query_params.update(params)
    at = page.run()
    assert any(message in warning.value for warning in at.warning), [w.value for w in at.warning]
    assert_page_shows(at, store_path, "L2.resid_post")


def test_an_old_demo_store_is_rebuilt(tiny_bundle_path, store_path, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(resources, "DEMO_CORPUS", CORPUS)
    spec = f"demo:{tiny_bundle_path}"
    old = tmp_path / "demo.duckdb"
    old.write_bytes(store_path.read_bytes())
    with duckdb.connect(str(old)) as con:
        con.execute("DROP TABLE feature_token")
        con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        con.execute("INSERT INTO labels VALUES ('L0.resid_post', 3, 'kept', '', now())")
    assert resources.build_missing_demo_store(str(old), spec)
    assert stored_schema_version(old) == SCHEMA_VERSION
    with Store.open(old) as rebuilt, Store.open(store_path) as original:
        pd.testing.assert_frame_equal(
            rebuilt.feature_tokens("L1.resid_post"), original.feature_tokens("L1.resid_post")
        )
        assert rebuilt.labels()["label"].tolist() == ["kept"]
    assert not resources.build_missing_demo_store(str(old), spec)
    not_a_store = tmp_path / "other.duckdb"
    not_a_store.write_text("not a store")
    assert not resources.build_missing_demo_store(str(not_a_store), spec)
    assert not_a_store.read_text() == "not a store"
