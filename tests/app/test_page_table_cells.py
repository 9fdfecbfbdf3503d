"""The cells of the pages' tables that went through the shared table helpers, read from what
Streamlit sends the browser: percentages with fixed decimals while the column keeps its
numbers, a missing value as the one marker, short labels where a table had to fit 1440 px,
and every table naming features with their descriptions, links and row numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit import dataframe_util
from streamlit.testing.v1 import AppTest

from explorer.analysis.descriptions import load_descriptions
from explorer.analysis.specialists import SpecialistSettings, load_specialists, top_specialists
from explorer.charts.feature import token_label
from explorer.live.interventions import Intervention
from explorer.live.runs import run_text
from explorer.sources.source import load_source
from explorer.store.reader import Store
from explorer.ui.links import ROW_NUMBER, feature_url
from explorer.ui.tables import OPEN

PAGES = Path(__file__).resolve().parents[2] / "app_pages"
MISSING = "—"


@pytest.fixture
def open_page(store_path, tiny_bundle_path, monkeypatch):
    """Run a page of `app_pages` (by file name) with URL parameters on the shared store."""

    def opened(name: str, store: Path = store_path, **params: str) -> AppTest:
        monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
        monkeypatch.setenv("EXPLORER_STORE", str(store))
        at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=180)
        at.query_params.update(params)
        at.run()
        assert not at.exception, at.exception
        return at

    return opened


def table_with(at: AppTest, column: str):
    """The one table of the page with `column`."""
    (table,) = [frame for frame in at.dataframe if column in frame.value.columns]
    return table


def texts(table) -> pd.DataFrame:
    """The texts the browser shows for a styled table's cells."""
    return dataframe_util.convert_arrow_bytes_to_pandas_df(
        table.proto.arrow_data.styler.display_values
    )


def config(table) -> dict:
    return json.loads(table.proto.columns)


def percent(share: float, decimals: int) -> str:
    return MISSING if pd.isna(share) else f"{100 * share:.{decimals}f}%"


def described(store_path: Path, frame: pd.DataFrame) -> list[str]:
    """Each row's feature description, read from the store's descriptions per SAE."""
    with Store.open(store_path) as store:
        by_sae = {sae: load_descriptions(store, sae) for sae in frame["sae"].unique()}
    return [
        by_sae[sae].set_index("feature").loc[feature, "description"]
        for sae, feature in zip(frame["sae"], frame["feature"], strict=True)
    ]


def assert_names_features(table, store_path: Path, saes: list[str]) -> None:
    """A table naming features: numbered rows first, one-click links, descriptions."""
    cells = table.value
    assert cells.index.name == ROW_NUMBER
    assert cells.index.tolist() == list(range(1, len(cells) + 1))
    assert config(table)["_index"]["hidden"] is False  # the numbers show, before the links
    assert cells.columns[0] == "link"
    named = cells.assign(sae=saes)
    assert cells["link"].tolist() == [
        feature_url(sae, feature) for sae, feature in zip(saes, cells["feature"], strict=True)
    ]
    assert cells["description"].tolist() == described(store_path, named)
    # the link cell shows plain text (a LinkColumn opens a new tab when its text is clicked);
    # a click on the cell opens the page in this tab (`linked_dataframe`)
    assert config(table)["link"]["type_config"]["type"] == "text"
    assert set(texts(table)["link"]) == {OPEN}


def test_specialist_tables_read_in_the_number_style(open_page, store_path) -> None:
    at = open_page("specialists", permutations="20")
    with Store.open(store_path) as store:
        result = load_specialists(store, SpecialistSettings(permutations=20))
    table = result.table[result.table["family"] == "bundled"]

    at.session_state["details"] = "Replication"  # one tab of the details runs at a time
    at.run()
    rates = table_with(at, "replication_rate")
    found = result.replication[result.replication["family"] == "bundled"]
    pairs = zip(found["discovered"], found["replicated"], strict=True)
    expected = [r / d if d else float("nan") for d, r in pairs]
    assert rates.value["category"].tolist() == found["category"].tolist()
    assert rates.value["replication_rate"].tolist() == pytest.approx(expected, nan_ok=True)
    assert texts(rates)["replication_rate"].tolist() == [percent(r, 1) for r in expected]
    assert "format" not in config(rates)["replication_rate"]["type_config"]  # the text shows
    assert rates.proto.placeholder == MISSING

    top = top_specialists(table, 5)
    at.session_state["details"] = "Top specialists"
    at.session_state["more_measures"] = True  # the expander's table runs only while it is open
    at.run()
    finding, more = (table_with(at, name) for name in ("token_explained", "token_share"))
    for shown in (finding, more):
        assert shown.value["feature"].tolist() == top["feature"].tolist()
        assert_names_features(shown, store_path, top["sae"].tolist())
    assert finding.value["token"].tolist() == [
        MISSING if pd.isna(token) else token_label(token) for token in top["token"]
    ]
    assert texts(more)["token_share"].tolist() == [percent(s, 1) for s in top["token_share"]]
    assert config(more)["n_texts"]["label"] == "texts"
    assert config(finding)["token_explained"]["label"] == "detector"  # "token detector": 981 px
    # to fit 1440 px, the token confound's measures are in the expander's table
    assert not {"token_share", "token_auroc", "notebook_score"} & set(finding.value.columns)

    saes = sorted(set(table["sae"]))
    at.session_state["tab"] = "numbers"  # the numbers tab runs only while it is open
    at.session_state["details"] = "Coverage"
    at.run()
    counts, coverage = [frame for frame in at.dataframe if set(saes) <= set(frame.value.columns)]
    # the most frequent feature's share of each category's texts, a column per SAE
    top = result.features[result.features["freq_rank"] == 1][["sae", "feature"]]
    cells = table.merge(top, on=["sae", "feature"])
    shares = (cells["n_texts_active"] / cells["n_texts"]).set_axis(
        pd.MultiIndex.from_frame(cells[["category", "sae"]])
    )
    shown = coverage.value.set_index("category")[saes].stack()
    assert shown.tolist() == pytest.approx(shares.loc[shown.index].tolist())
    assert texts(coverage).set_index("category")[saes].stack().tolist() == [
        percent(share, 1) for share in shown
    ]
    by_cell = table.groupby(["category", "sae"])["is_specialist"].sum().unstack("sae").fillna(0)
    pivot = counts.value.set_index("category")[saes]
    assert pivot.astype(int).equals(by_cell.loc[pivot.index, saes].astype(int))
    assert all(config(counts)[sae]["type_config"]["format"] == "%d" for sae in saes)


def test_the_logit_lens_browse_table_shows_its_numbers_before_the_token_lists(
    open_page, store_path
) -> None:
    at = open_page("logit_lens", sae="L1.resid_post")
    browse = at.dataframe[0]
    cells = browse.value
    assert cells.columns.tolist() == ["link", "feature", "description", "max_logit",
                                      "min_logit", "token_freq", "max_act", "promoted",
                                      "suppressed"]  # fmt: skip
    with Store.open(store_path) as store:
        stats = store.feature_stats("L1.resid_post").set_index("feature")
    assert texts(browse)["token_freq"].tolist() == [
        percent(stats.loc[feature, "token_freq"], 2) for feature in cells["feature"]
    ]
    assert_names_features(browse, store_path, ["L1.resid_post"] * len(cells))
    assert config(browse)["promoted"]["width"] == config(browse)["suppressed"]["width"] == 150


def test_home_lists_texts_and_tokens_per_category(open_page, store_path) -> None:
    at = open_page("home")
    shown = table_with(at, "n_tokens")
    with Store.open(store_path) as store:
        stored = store.texts()
    stored = stored[stored["n_tokens"] > 0]
    by_hand = stored.groupby("category")["n_tokens"].agg(["size", "sum"])
    assert shown.value["category"].tolist() == by_hand.index.tolist()
    assert shown.value["n_texts"].tolist() == by_hand["size"].tolist()
    assert shown.value["n_tokens"].tolist() == by_hand["sum"].tolist()
    assert {config(shown)[c]["label"] for c in ("n_texts", "n_tokens")} == {"texts", "tokens"}
    assert shown.proto.placeholder == MISSING


def test_a_label_without_a_note_shows_the_marker(open_page, store_path, tmp_path) -> None:
    store = tmp_path / "labels.duckdb"
    shutil.copy(store_path, store)
    with Store.open(store) as opened:
        opened.save_label("L0.resid_post", 5, "first", "")
        opened.save_label("L0.resid_post", 5, "second", "a note")
    at = open_page("feature", store=store, sae="L0.resid_post", feature="5")
    labels = at.dataframe[-1]
    notes = dict(zip(labels.value["label"], labels.value["note"], strict=True))
    assert notes == {"second": "a note", "first": MISSING}
    assert labels.proto.placeholder == MISSING
    assert config(labels)["created_at"]["label"] == "saved"

    only = tmp_path / "one.duckdb"
    shutil.copy(store_path, only)
    with Store.open(only) as opened:
        opened.save_label("L0.resid_post", 5, "no note", "  ")
    at = open_page("feature", store=only, sae="L0.resid_post", feature="5")
    assert at.dataframe[-1].value.columns.tolist() == ["label", "created_at"]  # none has one


def test_a_text_runs_per_token_table_has_fixed_decimals(
    open_page, store_path, tiny_bundle_path, tmp_path
) -> None:
    store = tmp_path / "ablation.duckdb"
    shutil.copy(store_path, store)
    at = open_page("ablation", store=store, sae="L2.resid_post", features="3, 5", mode="scale",
                   value="4")  # fmt: skip
    next(b for b in at.button if b.label == "Run on the text").click().run()
    assert not at.exception, at.exception
    with Store.open(store) as opened:
        text = opened.text(0)["text"]
    loaded = load_source(f"demo:{tiny_bundle_path}")
    intervention = Intervention("L2.resid_post", (3, 5), "scale", 4.0)
    expected = run_text(loaded, intervention, text).effect.per_token()
    per_token = table_with(at, "delta_loss")
    cells = per_token.value
    assert cells["token"].tolist() == [token_label(token) for token in expected["token"]]
    for column in ("delta_loss", "kl", "#3 before", "#5 after"):
        assert cells[column].tolist() == pytest.approx(expected[column].tolist(), abs=1e-5)
    formats = {
        name: entry.get("type_config", {}).get("format")
        for name, entry in config(per_token).items()
    }
    assert formats["delta_loss"] == "%+.4f" and formats["clean_loss"] == "%.4f"
    assert formats["#3 before"] == formats["#5 after"] == "%.2f"  # activations: 2 decimals
    assert config(per_token)["_index"]["hidden"] is True
