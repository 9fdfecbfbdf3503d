"""Frequency vs specialization page: summary, correlation and rank-range counts equal the
library's for the SAE, ranges and thresholds chosen in the sidebar or the URL; the answer under
each measure equals scipy's Spearman rho over a full recomputation of the specialists under
that measure, with its answer in words (the chosen measure's whole conclusion above the
table); the chance column of the rank
ranges equals a pandas count of the permutation null's hits. Every number is the sidebar's
family's (default the bundled prose family): a feature is a specialist, and has a best score,
by its cells of that family alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from streamlit.testing.v1 import AppTest

from explorer.analysis.controls import load_chance_baseline
from explorer.analysis.frequency import (
    default_rank_ranges,
    frequency_specialization_correlation,
    frequency_summary,
    parse_rank_ranges,
    rank_band_counts,
)
from explorer.analysis.specialists import (
    MEASURES,
    SpecialistSettings,
    in_family,
    load_specialists,
)
from explorer.store.reader import Store
from tests.app.tabs import open_tab, table_on_tabs
from tests.stores import TINY

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "frequency.py")
D_SAE = TINY.d_sae
ANSWER_COLUMNS = ["measure", "answer", "rho", "p_value", "n", "n_specialists", "pct_top",
                  "pct_bottom"]  # fmt: skip


def family_features(result, sae: str, family: str) -> pd.DataFrame:
    """One SAE's features with best_score (its best cell of `family`: specialist cells
    first, then the highest score) and is_specialist (any specialist cell of `family`),
    counted with pandas from the table of every tested cell."""
    table = result.table[(result.table["family"] == family) & (result.table["sae"] == sae)]
    best = table.sort_values(["is_specialist", "score"], ascending=False).drop_duplicates("feature")
    features = result.features[result.features["sae"] == sae].drop(
        columns=["best_score", "is_specialist"]
    )
    features = features.merge(
        best[["feature", "score"]].rename(columns={"score": "best_score"}), how="left"
    )
    chosen = set(table.loc[table["is_specialist"], "feature"])
    return features.assign(is_specialist=features["feature"].isin(chosen))


TABS = (
    "Kinds per rank range",
    "The answer under each measure",
    "Kinds per frequency band",
    "Frequency density",
)


def table_with(at: AppTest, column: str, first: str | None = None) -> pd.DataFrame:
    """The one dataframe of the page that has `column` (and whose first row's band is
    `first`, when given), on the tab open now or else on the first tab that shows it."""
    return table_on_tabs(
        at,
        TABS,
        lambda table: column in table.columns and (first is None or table["band"].iloc[0] == first),
    ).value


def assert_answers(at: AppTest, store: Store, sae: str, family: str, **settings) -> pd.DataFrame:
    """Each measure's row: Spearman rho and p from scipy over the features of a separate
    `load_specialists` run under that measure; the specialist shares of ranks 1-128 (the SAE
    is smaller than 200) and 17-128 (the rarest 112) counted with pandas."""
    shown = table_with(at, "answer").reset_index(drop=True)
    assert shown.columns.tolist() == ANSWER_COLUMNS  # the sentence's name and numbers: its row's
    assert shown["measure"].tolist() == list(MEASURES)
    for i, measure in enumerate(MEASURES):
        under = load_specialists(store, SpecialistSettings(**{**settings, "measure": measure}))
        features = family_features(under, sae, family)
        scored = features[(features["token_freq"] > 0) & features["best_score"].notna()]
        rho, p_value = stats.spearmanr(scored["token_freq"], scored["best_score"])
        row = shown.iloc[i]
        assert row["rho"] == pytest.approx(rho, abs=1e-9)
        assert row["p_value"] == pytest.approx(p_value, rel=1e-6)
        assert row["n"] == len(scored)
        assert row["n_specialists"] == int(features["is_specialist"].sum())
        live = features[features["token_freq"] > 0]
        for column, (first, last) in (("pct_top", (1, D_SAE)), ("pct_bottom", (17, D_SAE))):
            inside = live[live["freq_rank"].between(first, last)]
            assert row[column] == pytest.approx(100 * inside["is_specialist"].mean())
        word = "rarer" if rho < 0 else "more frequent"
        assert row["answer"] == (
            f"{word} features score as more specialised"
            if p_value < 0.05
            else "no monotone relation between frequency and score"
        )
    return shown


def assert_chance(
    at: AppTest, store: Store, features: pd.DataFrame, ranges, family: str, **settings
) -> None:
    """Per range: live features, specialists and the null's mean and 95th percentile of the
    range's features called by chance in each permutation (zeros counted)."""
    null = load_chance_baseline(store, SpecialistSettings(**settings))
    null.hits.drop(null.hits.index[null.hits["family"] != family], inplace=True)
    shown = table_with(at, "beats_chance", f"{ranges[0][0]}-{ranges[0][1]}")
    assert shown["band"].tolist() == [f"{first}-{last}" for first, last in ranges]
    for row, (first, last) in zip(shown.itertuples(), ranges, strict=True):
        live = features[features["freq_rank"].between(first, last) & (features["token_freq"] > 0)]
        hits = null.hits[
            null.hits["sae"].isin(live["sae"]) & null.hits["feature"].isin(live["feature"])
        ]
        per_perm = (
            hits.drop_duplicates(["feature", "perm"]).groupby("perm").size()
            .reindex(range(null.permutations), fill_value=0)
        )  # fmt: skip
        assert row.n_live == len(live)
        assert row.n_specialists == int(live["is_specialist"].sum())
        assert row.chance_mean == pytest.approx(per_perm.mean())
        assert row.chance_p95 == pytest.approx(np.quantile(per_perm, 0.95))
        assert row.beats_chance == (row.n_specialists > row.chance_p95)
    live = features[features["token_freq"] > 0]
    decade = np.floor(np.log10(live["token_freq"]))
    decades = table_with(
        at, "beats_chance", f"1e{int(decade.min()):+03d} - 1e{int(decade.min()) + 1:+03d}"
    )
    assert decades["n_live"].tolist() == live.groupby(decade).size().tolist()
    assert decades["n_specialists"].tolist() == live.groupby(decade)["is_specialist"].sum().tolist()


def assert_page_shows(
    at: AppTest,
    store_path: Path,
    sae: str,
    ranges: str | None = None,
    family: str = "bundled",
    **settings,
) -> pd.DataFrame:
    assert not at.exception, at.exception
    with Store.open(store_path) as store:
        result = load_specialists(store, SpecialistSettings(**settings))
    features = in_family(result, family).features
    features = features[features["sae"] == sae].reset_index(drop=True)
    by_hand = family_features(result, sae, family)
    assert features["is_specialist"].tolist() == by_hand["is_specialist"].tolist()
    assert (features["kind"] != "general").sum() == by_hand["is_specialist"].sum() + (
        features["kind"] == "dead"
    ).sum()
    summary = frequency_summary(features)
    correlation = frequency_specialization_correlation(features)
    with Store.open(store_path) as store:
        answers = assert_answers(at, store, sae, family, **settings)
        ranges_parsed = parse_rank_ranges(ranges or default_rank_ranges(D_SAE), D_SAE)
        assert_chance(at, store, features, ranges_parsed, family, **settings)
    chosen = SpecialistSettings(**settings).measure
    row = answers.set_index("measure").loc[chosen]
    conclusion = f"Under {MEASURES[chosen]}, {row['answer']}: rho = {row['rho']:+.2f}, p "
    assert any(conclusion in block.value for block in at.markdown)
    shown = {metric.label: metric.value for metric in at.metric}
    p_value = correlation["p_value"]
    assert shown == {
        "features": f"{D_SAE}",
        "dead": f"{summary['n_dead']}",
        "specialists": f"{summary['n_specialists']}",  # the share below, so the value fits
        "Spearman rho": f"{correlation['rho']:.3f}",
        "p-value": f"{p_value:.1e}" if p_value < 1e-3 else f"{p_value:.3f}",
    }
    (specialists,) = [metric for metric in at.metric if metric.label == "specialists"]
    assert specialists.delta == f"{summary['pct_specialists']:.1f}% of the live features"
    bands = rank_band_counts(
        features, parse_rank_ranges(ranges or default_rank_ranges(D_SAE), D_SAE)
    )
    open_tab(at, TABS[0])
    shares, counts = [frame.value for frame in at.dataframe if "n_features" in frame.value]
    assert all(column.startswith("% ") for column in shares.columns[2:])  # counts below
    shown_bands = counts.merge(shares, on=["band", "n_features"])[bands.columns]
    pd.testing.assert_frame_equal(shown_bands, bands, check_dtype=False)
    shown_replication = table_with(at, "n_replicated")
    cells = in_family(result, family).table
    cells = cells[(cells["sae"] == sae) & cells["discovered"]]
    for first, last in parse_rank_ranges(ranges or default_rank_ranges(D_SAE), D_SAE):
        ranks = features.set_index("feature")["freq_rank"]
        inside = cells[cells["feature"].map(ranks).between(first, last)]
        row = shown_replication.set_index("band").loc[f"{first}-{last}"]
        assert row["n_discovered"] == inside["feature"].nunique()
        assert row["n_replicated"] == inside.loc[inside["replicated"], "feature"].nunique()
    return bands


def test_default_view_is_the_deepest_sae(page, store_path) -> None:
    at = page.run()
    bands = assert_page_shows(at, store_path, "L2.resid_post")
    assert bands["band"].tolist() == ["1-25", "26-103", f"104-{D_SAE}"]
    assert bands["n_features"].tolist() == [25, 78, 25]
    assert not at.warning and at.query_params == {}


def test_rank_ranges_sae_and_thresholds_from_the_sidebar(page, store_path) -> None:
    at = page.run()
    at.text_input(key="url_ranks").set_value(f"1-10, 50-{D_SAE}").run()
    at.selectbox(key="url_sae").set_value("L0.resid_post").run()
    at.selectbox(key="url_measure").set_value("dominance").run()
    at.number_input(key="url_min_support").set_value(1).run()
    bands = assert_page_shows(
        at, store_path, "L0.resid_post", f"1-10, 50-{D_SAE}", measure="dominance", min_support=1
    )
    assert bands["n_features"].tolist() == [10, 79]
    assert at.query_params == {
        "ranks": f"1-10, 50-{D_SAE}",
        "sae": "L0.resid_post",
        "measure": "dominance",
        "min_support": "1",
    }
    at.radio(key="url_x").set_value("freq_rank").run()
    assert at.query_params["x"] == "freq_rank"
    assert_page_shows(
        at, store_path, "L0.resid_post", f"1-10, 50-{D_SAE}", measure="dominance", min_support=1
    )


def test_a_shared_link_opens_its_view(page, store_path) -> None:
    page.query_params.update(
        {"sae": "L1.resid_post", "ranks": f"1-64,65-{D_SAE}", "measure": "auroc"}
    )
    at = page.run()
    assert not at.warning
    assert_page_shows(at, store_path, "L1.resid_post", f"1-64,65-{D_SAE}", measure="auroc")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"ranks": "5-1"}, "Rank range 5-1 must satisfy"),
        ({"ranks": "1-999"}, "Rank range 1-999 must satisfy"),
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


def test_the_family_decides_the_numbers(page, store_path) -> None:
    at = page.run()
    bundled = table_with(at, "answer")
    assert at.selectbox(key="url_family").value == "bundled"
    at.selectbox(key="url_family").set_value("operation").run()
    assert_page_shows(at, store_path, "L2.resid_post", family="operation")
    assert at.query_params == {"family": "operation"}
    assert not table_with(at, "answer")["n_specialists"].equals(bundled["n_specialists"])


def test_bad_ranges_typed_in_the_sidebar_warn(page, store_path) -> None:
    at = page.run()
    at.text_input(key="url_ranks").set_value("ten to twenty").run()
    assert any("FIRST-LAST" in warning.value for warning in at.warning)
    assert_page_shows(at, store_path, "L2.resid_post")
