"""Compare SAEs with a second store: the field's metrics show every SAE of both stores, a
table per store under its label (eight SAE columns would not fit 1440 px), with each store's
own numbers (its `saes` table,
probing means recounted with pandas, description-score medians from a fresh scoring); a link
naming an unknown store or a file that is not a store gets a message and this store alone;
decoder matching across the two stores (one-to-one against scipy on numpy cosines), and a
sentence when the loaded source does not hold the second store's SAEs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from explorer.analysis.descriptions import load_scores
from explorer.analysis.field_metrics import FIELD_METRICS, sparse_probing
from explorer.build.single import build_store
from explorer.errors import markdown_escaped
from explorer.sources.source import load_source
from explorer.store.reader import Store
from tests.stores import TINY

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "compare.py")
SAES = ["L0.resid_post", "L1.resid_post", "L2.resid_post"]
QUALITY = ["l0", "explained_variance", "ce_loss_recovered", "kl_divergence", "l2_ratio",
           "dead_fraction", "dense_fraction"]  # fmt: skip


@pytest.fixture(scope="module")
def cache_dir(tiny_bundle_path, store_path, tmp_path_factory) -> Path:
    """The cache folder of known stores: another store of the same source over another
    corpus, a DuckDB file that is not a store, and a copy of the explored store whose SAEs
    are renamed (so the loaded source holds none of them)."""
    folder = tmp_path_factory.mktemp("compare_cache")
    build_store(f"demo:{tiny_bundle_path}", "arithmetic:80", folder / "other.duckdb")
    with duckdb.connect(str(folder / "broken.duckdb")) as con:
        con.execute("CREATE TABLE saes (sae VARCHAR)")
    renamed = folder / "renamed.duckdb"
    shutil.copy(store_path, renamed)
    with duckdb.connect(str(renamed)) as con:
        con.execute("UPDATE saes SET sae = 'other.' || sae")
    return folder


@pytest.fixture
def two_stores(page, cache_dir, monkeypatch) -> AppTest:
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(cache_dir))
    return page


METRICS_TAB = "The field's metrics"


@pytest.fixture
def page(page):
    """The Compare page opened on its tab of the field's metrics (one tab runs at a time)."""
    page.session_state["tab"] = METRICS_TAB
    return page


def metrics_tables(at: AppTest) -> list[pd.DataFrame]:
    """The field's metrics tables of the page, one per store shown, a row per metric."""
    return [frame.value.set_index("metric") for frame in at.dataframe if "metric" in frame.value]


def metrics_table(at: AppTest) -> pd.DataFrame:
    [table] = metrics_tables(at)
    return table


def assert_headed(at: AppTest, labels: list[str]) -> None:
    """Each store's tables (the field's metrics and the probes) come under its label."""
    headings = [m.value for m in at.markdown if m.value.startswith("**")]
    assert headings == [f"**{markdown_escaped(label)}**" for label in labels] * 2


def expected_metrics(path: Path) -> pd.DataFrame:
    """The field's metrics of the store at `path` computed here: one column per SAE."""
    with Store.open(path) as store:
        saes = store.saes().set_index("sae")
        rows = {FIELD_METRICS[name]: saes.loc[SAES, name].tolist() for name in QUALITY}
        probing = sparse_probing(store)
        for k in (1, 2, 5):
            means = probing[probing["k"] == k].groupby("sae")["accuracy"].mean()
            rows[FIELD_METRICS[f"probe_k{k}"]] = means[SAES].tolist()
        scores = {sae: load_scores(store, sae) for sae in SAES}
    scored = {sae: table[table["scored"]] for sae, table in scores.items()}
    rows[FIELD_METRICS["description_f1_median"]] = [
        float(np.median(scored[sae]["f1"])) for sae in SAES
    ]
    rows[FIELD_METRICS["description_balanced_accuracy_median"]] = [
        float(np.median(scored[sae]["balanced_accuracy"])) for sae in SAES
    ]
    return pd.DataFrame(rows, index=SAES).T


def test_a_second_store_shows_every_sae_side_by_side(two_stores, store_path, cache_dir) -> None:
    two_stores.query_params["compare"] = "other.duckdb"
    at = two_stores.run()
    assert not at.exception and not at.error and not at.warning, [e.value for e in at.error]
    assert at.selectbox(key="url_compare").value == "other.duckdb"
    first, second = metrics_tables(at)  # a table per store: eight SAE columns do not fit
    assert list(first.columns) == list(second.columns) == SAES
    assert first.index.tolist() == second.index.tolist()  # the same metrics in the same rows
    for table, path in ((first, store_path), (second, cache_dir / "other.duckdb")):
        expected = expected_metrics(path)
        shown = table.loc[expected.index, SAES]
        np.testing.assert_allclose(shown.to_numpy(float), expected.to_numpy(float), atol=1e-9)
    variance = FIELD_METRICS["explained_variance"]  # TopK SAEs: L0 is k on any corpus
    assert not np.allclose(first.loc[variance], second.loc[variance])
    assert_headed(at, [f"A: {store_path.name}", "B: other.duckdb"])
    assert any("Two stores side by side" in caption.value for caption in at.caption)
    at.selectbox(key="url_compare").set_value("none").run()
    assert list(metrics_table(at).columns) == SAES
    assert at.query_params == {"tab": METRICS_TAB}  # the open tab stays in the URL


@pytest.mark.parametrize("link", ["/etc/passwd", "../other.duckdb", "missing.duckdb"])
def test_a_link_to_an_unknown_store_warns_and_shows_this_store(two_stores, link) -> None:
    two_stores.query_params["compare"] = link
    at = two_stores.run()
    assert not at.exception and not at.error
    [warning] = [w.value for w in at.warning if "compare" in w.value]
    assert "choose one of none, broken.duckdb, other.duckdb, renamed.duckdb" in warning
    assert list(metrics_table(at).columns) == SAES


def test_a_file_that_is_not_a_store_gets_a_message(two_stores) -> None:
    two_stores.query_params["compare"] = "broken.duckdb"
    at = two_stores.run()
    assert not at.exception
    [error] = [e.value for e in at.error]
    assert error.startswith("Second store:") and "is not a complete feature store" in error
    assert "The comparison shows this store only." in error
    assert list(metrics_table(at).columns) == SAES


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def matching_rows(at: AppTest) -> pd.DataFrame:
    [table] = [frame.value for frame in at.dataframe if "measure" in frame.value.columns]
    return table.set_index("measure")


def chart_rows(at: AppTest, column: str) -> list[pd.DataFrame]:
    """The data of the charts on the page whose rows hold `column`, in page order."""
    frames = [
        convert_arrow_bytes_to_pandas_df(dataset.data.data)
        for chart in at.get("vega_lite_chart")
        for dataset in chart.proto.datasets
    ]
    return [frame for frame in frames if column in frame]


def test_decoders_match_one_to_one_within_and_across_stores(
    two_stores, store_path, tiny_bundle_path
) -> None:
    decoders = {
        h.name: h.sae.W_dec.detach().double().numpy()
        for h in load_source(f"demo:{tiny_bundle_path}").saes
    }
    two_stores.query_params["compare"] = "other.duckdb"
    at = two_stores.run()
    at.toggle(key="compare_page.decoders").set_value(True).run()
    assert not at.exception and not at.error, at.exception
    assert not at.info, [i.value for i in at.info]  # same source: every SAE matches
    redundancy = pd.concat(t.loc[FIELD_METRICS["mean_max_cosine"]] for t in metrics_tables(at))
    assert redundancy.notna().all() and len(redundancy) == 2 * len(SAES)
    histograms = chart_rows(at, "nearest")  # redundancy: a chart per store, side by side
    assert [rows["sae"].unique().tolist() for rows in histograms] == [SAES, SAES]
    assert all((rows.groupby("sae").size() == TINY.d_sae).all() for rows in histograms)
    means = [rows.groupby("sae", sort=False)["max_cosine"].mean() for rows in histograms]
    np.testing.assert_allclose(pd.concat(means).to_numpy(), redundancy.to_numpy(), atol=1e-6)
    labels = [caption.value for caption in at.caption]
    assert markdown_escaped(f"A: {store_path.name}") in labels
    assert markdown_escaped("B: other.duckdb") in labels
    cosines = unit(decoders[SAES[0]]) @ unit(decoders[SAES[1]]).T
    rows, columns = linear_sum_assignment(cosines, maximize=True)
    one_to_one = matching_rows(at).loc["one-to-one (Hungarian)"]
    assert one_to_one["mean_cosine"] == pytest.approx(cosines[rows, columns].mean(), abs=1e-5)
    assert one_to_one["share_70"] == pytest.approx((cosines[rows, columns] >= 0.7).mean())
    best = matching_rows(at).loc["best match (max cosine)", "mean_cosine"]
    assert best == pytest.approx(cosines.max(axis=1).mean(), abs=1e-5)
    assert best >= one_to_one["mean_cosine"]
    [table] = [frame for frame in at.dataframe if "measure" in frame.value.columns]
    pairs = json.loads(table.proto.columns)["pairs"]["type_config"]
    assert pairs["format"] == "localized"  # a thousands separator: 2,048 pairs, not 2048

    at.selectbox(key="compare_page.match_a").set_value(f"A: {store_path.name} · {SAES[0]}")
    at.selectbox(key="compare_page.match_b").set_value(f"B: other.duckdb · {SAES[0]}").run()
    assert not at.exception, at.exception
    across = matching_rows(at).loc["one-to-one (Hungarian)"]
    assert across["mean_cosine"] == pytest.approx(1.0, abs=1e-6)  # the same SAE in both
    assert across["share_90"] == 1.0
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["consistency (mean max cosine)"] == "1.000"
    at.selectbox(key="url_compare").set_value("none").run()  # the picked pair is gone
    assert not at.exception, at.exception
    assert at.selectbox(key="compare_page.match_b").options == SAES


def test_a_store_whose_saes_the_source_lacks_is_not_matched(two_stores) -> None:
    two_stores.query_params["compare"] = "renamed.duckdb"
    at = two_stores.run()
    at.toggle(key="compare_page.decoders").set_value(True).run()
    assert not at.exception and not at.error, at.exception
    [note] = [i.value for i in at.info if "cannot be matched" in i.value]
    assert "holds none of its SAEs" in note and markdown_escaped("other.L0.resid_post") in note
    first, second = metrics_tables(at)
    assert list(second.columns) == [f"other.{sae}" for sae in SAES]
    assert second.loc[FIELD_METRICS["l0"]].notna().all()
    assert first.loc[FIELD_METRICS["mean_max_cosine"]].notna().all()
    assert FIELD_METRICS["mean_max_cosine"] not in second.index  # no value: no row
    labels = at.selectbox(key="compare_page.match_a").options
    assert not any("renamed" in label for label in labels)


def test_probing_per_category_shows_both_stores(two_stores, store_path, cache_dir) -> None:
    """Each store's probes at each k, recomputed here from its activations; the other store's
    corpus (arithmetic only) lacks the prose categories, not in its table; the
    features each probe uses stay the explored store's (their links open its pages)."""
    two_stores.query_params["compare"] = "other.duckdb"
    at = two_stores.run()
    assert not at.exception and not at.error, at.exception
    expected = {}
    stores = {f"A: {store_path.name}": store_path, "B: other.duckdb": cache_dir / "other.duckdb"}
    for label, path in stores.items():
        with Store.open(path) as store:
            probes = sparse_probing(store)
        for row in probes.itertuples():
            expected[(row.k, row.category, f"{label} · {row.sae}")] = row.accuracy
    for k in (1, 5):
        at.radio(key="compare_page.probe_k").set_value(k).run()
        tables = [f for f in at.dataframe if "best_accuracy" in f.value.columns]
        categories = {}
        for element, label in zip(tables, stores, strict=True):  # a table per store
            table = element.value.set_index("category")
            assert list(table.columns) == ["best_sae", "best_accuracy", *SAES]
            formats = json.loads(element.proto.columns)
            assert {formats[c]["type_config"]["format"] for c in SAES} == {"%.3f"}
            categories[label] = sorted(
                {c for (at_k, c, column) in expected if at_k == k and column.startswith(label)}
            )
            assert table.index.tolist() == categories[label]
            for category in categories[label]:
                cells = [expected[(k, category, f"{label} · {sae}")] for sae in SAES]
                np.testing.assert_allclose(table.loc[category, SAES].to_numpy(float), cells)
                assert table.loc[category, "best_accuracy"] == pytest.approx(max(cells))
                assert table.loc[category, "best_sae"] == SAES[int(np.argmax(cells))]
        # the other corpus holds the operations only: the prose categories are not in its table
        assert set(categories["B: other.duckdb"]) < set(categories[f"A: {store_path.name}"])
    assert_headed(at, list(stores))
    captions = " ".join(caption.value for caption in at.caption)
    assert "Both stores' SAEs, a line" in captions
    means = pd.Series(expected).loc[1].groupby(level=1).mean()  # k = 1, over categories
    best = f"k = 1: {markdown_escaped(means.idxmax())} ({means.max():.3f})"
    assert f"Best mean accuracy over the categories (chance 0.5): {best};" in captions
    at.session_state["probe_features"] = True  # an expander that runs only while open
    at.run()
    [features] = [f.value for f in at.dataframe if "link" in f.value and "category" in f.value]
    assert set(features["sae"]) <= set(SAES)
