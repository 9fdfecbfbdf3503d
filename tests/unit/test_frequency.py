"""Frequency vs specialization: rank ranges, bands, correlation, histogram and rankings; the
answer under every measure (against a full run of the specialists under each, on the planted
store of `test_rankings`), its wording, and the chance per rank range against a planted null.

The features table is built by hand (the shape `classify_features` returns) with a known
layout: 40 features of one SAE whose frequency falls with the rank, the rarest ones
specialised, four dead; each number is checked against a direct count or scipy.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from explorer.analysis.controls import ChanceBaseline
from explorer.analysis.frequency import (
    answers_by_measure,
    conclusion,
    decade_band_chance,
    default_rank_ranges,
    features_under_measure,
    frequency_band,
    frequency_histogram,
    frequency_specialization_correlation,
    frequency_summary,
    kind_by_frequency_band,
    most_frequent_coverage,
    parse_rank_ranges,
    rank_band_chance,
    rank_band_counts,
    seed_rank_ranges,
    strongest_features,
)
from explorer.analysis.specialists import DEAD, MEASURES, SpecialistSettings, load_specialists
from explorer.errors import InputError
from explorer.store.reader import Store

N_FEATURES = 40


def make_features(**overrides) -> pd.DataFrame:
    """Ranks 1..40: token_freq 0.3 / rank^1.5; ranks 37-40 dead; kinds by rank: 1-20
    general, 21-26 operation, 27-30 value, 31-33 operation + value, 34-36 category."""
    rank = np.arange(1, N_FEATURES + 1)
    token_freq = np.where(rank <= 36, 0.3 / rank**1.5, 0.0)
    kind = np.select(
        [rank <= 20, rank <= 26, rank <= 30, rank <= 33, rank <= 36],
        ["general", "operation", "value", "operation + value", "category"],
        default=DEAD,
    )
    alive = token_freq > 0
    specialist = np.isin(kind, ["operation", "operation + value", "category"])
    features = pd.DataFrame(
        {
            "sae": "s0",
            "layer": 0,
            "feature": (rank * 7) % N_FEATURES,  # ids unrelated to ranks
            "freq_rank": rank,
            "token_freq": token_freq,
            "n_active_tokens": (token_freq * 10_000).astype(int),
            "text_freq": np.minimum(token_freq * 5, 1.0),
            "max": np.where(alive, 1.0 + (rank % 9), 0.0),
            "mean_active": np.where(alive, 0.5, 0.0),
            "best_score": np.where(alive, rank / 10.0, np.nan),
            "best_category": np.where(alive, "addition", None),
            "is_specialist": specialist,
            "specialist_category": np.where(specialist, "addition", None),
            "kind": kind,
        }
    )
    return features.assign(**overrides)


def test_rank_ranges_parse_and_refuse_with_a_hint() -> None:
    assert parse_rank_ranges("50-200, 400-512", 512) == [(50, 200), (400, 512)]
    assert parse_rank_ranges(" 7 ;1-3", 10) == [(7, 7), (1, 3)]
    for text, message in [
        ("", "at least one"),
        ("5-", "FIRST-LAST"),
        ("a-b", "FIRST-LAST"),
        ("20-10", "first <= last"),
        ("1-600", "<= 512"),
        ("0-5", "1 <= first"),
        (",".join(["1-2"] * 13), "at most 12"),
    ]:
        with pytest.raises(InputError, match=message):
            parse_rank_ranges(text, 512)
    assert default_rank_ranges(512) == "1-102, 103-410, 411-512"
    assert parse_rank_ranges(default_rank_ranges(2), 2) == [(1, 2)]


def test_rank_band_counts_count_kinds_per_range() -> None:
    features = make_features()
    table = rank_band_counts(features, [(1, 20), (21, 40), (25, 34)]).set_index("band")
    assert table.loc["1-20", "n_features"] == 20 and table.loc["1-20", "general"] == 20
    second = table.loc["21-40"]
    assert [second[k] for k in ["operation", "value", "operation + value", "category", DEAD]] == [
        6,
        4,
        3,
        3,
        4,
    ]
    assert second["% value"] == pytest.approx(100 * 4 / 20)
    overlap = table.loc["25-34"]  # ranks 25-26 operation, 27-30 value, 31-33 op+value, 34
    assert overlap[["operation", "value", "operation + value", "category"]].tolist() == [2, 4, 3, 1]
    shares = table[[c for c in table.columns if c.startswith("% ")]]
    np.testing.assert_allclose(shares.sum(axis=1), 100.0)
    assert list(table.columns[:5]) == [
        "n_features",
        "general",
        "operation",
        "value",
        "operation + value",
    ]


def test_kinds_per_frequency_decade() -> None:
    features = make_features()
    by_band = kind_by_frequency_band(features)
    bands = frequency_band(features["token_freq"])
    expected = pd.crosstab(bands, features["kind"]).stack()
    got = by_band.set_index(["band", "kind"])["n_features"]
    assert got.to_dict() == expected[expected > 0].to_dict()
    assert by_band.groupby("band")["pct"].sum().round(9).eq(100).all()
    assert by_band["band_low"].is_monotonic_increasing
    assert bands.iloc[0] == "1e-01 - 1e+00" and bands.iloc[-1] == DEAD


def test_spearman_correlation_equals_a_rank_correlation() -> None:
    features = make_features()
    result = frequency_specialization_correlation(features)
    alive = features[features["token_freq"] > 0]
    x = stats.rankdata(alive["token_freq"])
    y = stats.rankdata(alive["best_score"])
    assert result["n"] == 36
    assert result["rho"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert result["rho"] == pytest.approx(-1.0)  # the score grows as frequency falls
    assert result["p_value"] < 1e-10
    few = frequency_specialization_correlation(features.head(2))
    assert few["n"] == 2 and np.isnan(few["rho"])


def test_density_histogram_counts_every_feature_and_the_dead() -> None:
    features = make_features()
    histogram = frequency_histogram(features, n_bins=8)
    assert histogram.iloc[0].to_dict() == {"bin": DEAD, "low": 0.0, "high": 0.0, "n_features": 4}
    assert histogram["n_features"].sum() == N_FEATURES
    alive = histogram.iloc[1:]
    assert len(alive) == 8
    assert alive["low"].iloc[0] == pytest.approx(features["token_freq"][:36].min())
    assert alive["high"].iloc[-1] == pytest.approx(features["token_freq"].max())
    logs = np.log10(features["token_freq"][:36])
    bins = np.minimum(np.floor((logs - logs.min()) / (logs.max() - logs.min()) * 8), 7)
    expected = np.bincount(bins.astype(int), minlength=8)
    assert alive["n_features"].tolist() == expected.tolist()
    with pytest.raises(InputError):
        frequency_histogram(features, n_bins=0)


def test_summary_statistics() -> None:
    summary = frequency_summary(make_features())
    assert summary["n_features"] == N_FEATURES
    assert summary["n_dead"] == 4 and summary["n_alive"] == 36
    assert summary["n_specialists"] == 16  # every kind but general and dead
    assert summary["pct_specialists"] == pytest.approx(100 * 16 / 36)
    assert summary["median_rank_specialists"] == np.median(np.arange(21, 37))
    assert summary["median_rank_general"] == np.median(np.arange(1, 21))
    assert summary["median_token_freq"] == pytest.approx(np.median(0.3 / np.arange(1, 37) ** 1.5))


def test_strongest_features_and_coverage_of_the_most_frequent() -> None:
    features = pd.concat(
        [make_features(), make_features(sae="s1", layer=1, max=np.arange(N_FEATURES) / 10)],
        ignore_index=True,
    )
    strongest = strongest_features(features, per_sae=3)
    assert strongest.groupby("sae").size().to_dict() == {"s0": 3, "s1": 3}
    s0 = features[(features["sae"] == "s0") & (features["max"] > 0)]
    expected = s0.sort_values(["max", "feature"], ascending=[False, True]).head(3)["feature"]
    assert strongest[strongest["sae"] == "s0"]["feature"].tolist() == expected.tolist()
    assert strongest[strongest["sae"] == "s1"]["max"].tolist() == [3.9, 3.8, 3.7]

    top_feature = int(features.loc[features["freq_rank"] == 1, "feature"].iloc[0])
    table = pd.DataFrame(
        {
            "sae": ["s0", "s0", "s1", "s1", "s0"],
            "feature": [top_feature, top_feature, top_feature, top_feature, 99],
            "category": ["code", "prose", "code", "prose", "code"],
            "n_texts": [10, 20, 10, 20, 10],
            "n_texts_active": [10, 5, 2, 20, 1],
        }
    )
    coverage = most_frequent_coverage(features, table)
    assert coverage[["sae", "feature", "code", "prose"]].values.tolist() == [
        ["s0", top_feature, 1.0, 0.25],
        ["s1", top_feature, 0.2, 1.0],
    ]


# --- the answer under every measure ---------------------------------------------------------


def test_seed_rank_ranges_are_the_notebooks_top_200_and_bottom_112() -> None:
    assert seed_rank_ranges(1024) == [(1, 200), (913, 1024)]
    assert seed_rank_ranges(16384) == [(1, 200), (16273, 16384)]
    assert seed_rank_ranges(128) == [(1, 128), (17, 128)]  # cut to a small SAE


@pytest.mark.parametrize(
    ("rho", "p_value", "words"),
    [
        (-0.44, 1e-40, "rarer features score as more specialised: rho = -0.44, p = 1.0e-40"),
        (0.57, 1e-80, "more frequent features score as more specialised: rho = +0.57"),
        (-0.44, 0.2, "no monotone relation between frequency and score: rho = -0.44, p = 0.200"),
        # scipy's p underflows to 0.0 over tens of thousands of features: never "p = 0"
        (-0.31, 0.0, "rarer features score as more specialised: rho = -0.31, p < 1e-300."),
        (float("nan"), float("nan"), "too few scored features to tell"),
    ],
)
def test_the_conclusion_is_worded_from_the_numbers_and_names_its_measure(
    rho: float, p_value: float, words: str
) -> None:
    sentence = conclusion("auroc", rho, p_value)
    assert sentence.startswith(f"Under {MEASURES['auroc']}, ") and words in sentence


def test_rank_band_chance_counts_live_specialists_against_the_null() -> None:
    features = make_features()
    live = features[features["token_freq"] > 0]
    ranks = live.set_index("freq_rank")["feature"]
    # the null calls rank 30's feature in every one of 10 permutations and rank 35's in 3
    hits = pd.DataFrame(
        {
            "sae": "s0",
            "feature": [ranks[30]] * 10 + [ranks[35]] * 3,
            "family": "f",
            "category": "addition",
            "perm": list(range(10)) + [0, 1, 2],
        }
    )
    null = ChanceBaseline(
        hits,
        10,
        pd.DataFrame({"sae": ["s0"], "layer": [0]}),
        pd.DataFrame({"family": ["f"], "category": ["addition"]}),
    )
    table = rank_band_chance(features, [(1, 20), (21, 40), (29, 36)], null.by_band)
    assert table["band"].tolist() == ["1-20", "21-40", "29-36"]
    assert table["n_live"].tolist() == [20, 16, 8]  # ranks 37-40 are dead
    specialists = features.loc[features["is_specialist"], "freq_rank"]
    assert table["n_specialists"].tolist() == [
        int(specialists.between(1, 20).sum()),
        int(specialists.between(21, 40).sum()),
        int(specialists.between(29, 36).sum()),
    ]
    per_perm = np.array([2, 2, 2] + [1] * 7)  # features of 21-40 called in each permutation
    assert table["chance_mean"].tolist() == pytest.approx([0.0, per_perm.mean(), per_perm.mean()])
    assert table["chance_p95"].tolist() == pytest.approx(
        [0.0, np.quantile(per_perm, 0.95), np.quantile(per_perm, 0.95)]
    )
    assert table["beats_chance"].tolist() == [False, True, True]


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    from tests.unit.test_rankings import make_planted
    from tests.unit.test_specialists import write_planted

    path = tmp_path_factory.mktemp("frequency") / "planted.duckdb"
    write_planted(path, make_planted())
    with Store.open(path) as store:
        yield store


@pytest.mark.parametrize("measure", list(MEASURES))
def test_each_measure_from_one_table_equals_a_full_run_under_it(
    planted_store: Store, measure: str
) -> None:
    settings = SpecialistSettings(min_support=3)
    base = load_specialists(planted_store, settings)
    under = features_under_measure(base.table, base.features, settings, measure)
    full = load_specialists(planted_store, replace(settings, measure=measure)).features
    merged = under.merge(full, on=["sae", "feature"], suffixes=("", "_full"))
    assert len(merged) == len(full)
    pd.testing.assert_series_equal(
        merged["best_score"], merged["best_score_full"], check_names=False
    )
    assert merged["is_specialist"].tolist() == merged["is_specialist_full"].tolist()
    sae = full["sae"].iloc[0]
    answers = answers_by_measure(
        base.table, base.features[base.features["sae"] == sae], settings, d_sae=8
    ).set_index("measure")
    expected = frequency_specialization_correlation(full[full["sae"] == sae])
    assert answers.at[measure, "rho"] == pytest.approx(expected["rho"], nan_ok=True)
    assert answers.at[measure, "n_specialists"] == int(
        full.loc[full["sae"] == sae, "is_specialist"].sum()
    )


def test_decade_band_chance_counts_live_features_per_decade_rarest_first() -> None:
    features = make_features()
    live = features[features["token_freq"] > 0]
    decade = np.floor(np.log10(live["token_freq"])).astype(int)
    # a null that calls the most frequent live feature in half of 4 permutations
    top = live.loc[live["freq_rank"] == 1, "feature"].iloc[0]
    hits = pd.DataFrame(
        {"sae": "s0", "feature": [top, top], "family": "f", "category": "a", "perm": [0, 1]}
    )
    null = ChanceBaseline(
        hits,
        4,
        pd.DataFrame({"sae": ["s0"], "layer": [0]}),
        pd.DataFrame({"family": ["f"], "category": ["a"]}),
    )
    table = decade_band_chance(features, null.by_band)
    expected = sorted(decade.unique())
    assert table["band"].tolist() == [f"1e{d:+03d} - 1e{d + 1:+03d}" for d in expected]
    assert table["band_low"].tolist() == pytest.approx([10.0**d for d in expected])
    assert table["n_live"].tolist() == [int((decade == d).sum()) for d in expected]
    assert table["n_specialists"].tolist() == [
        int(live.loc[decade == d, "is_specialist"].sum()) for d in expected
    ]
    top_band = table.iloc[-1]
    assert (top_band["chance_mean"], top_band["chance_p95"]) == pytest.approx(
        (0.5, np.quantile([1, 1, 0, 0], 0.95))
    )
    assert table["chance_mean"].iloc[:-1].eq(0).all()


def test_band_replication_counts_features_found_on_both_halves() -> None:
    """Per rank range: the features with a discovery-half specialist cell, and how many of
    them have one of those cells found again on the replication half (counted by hand)."""
    from explorer.analysis.frequency import band_replication

    features = pd.DataFrame({"sae": "s", "feature": [0, 1, 2, 3, 4], "freq_rank": [1, 2, 3, 4, 5]})
    table = pd.DataFrame(
        {
            "sae": "s",
            "feature": [0, 0, 1, 2, 4, 9],
            "category": ["a", "b", "a", "a", "b", "a"],
            "discovered": [True, True, True, False, True, True],
            "replicated": [False, True, False, False, False, True],
        }
    )
    bands = band_replication(table, features, [(1, 3), (4, 5), (1, 5)])
    assert bands["band"].tolist() == ["1-3", "4-5", "1-5"]
    assert bands["n_discovered"].tolist() == [2, 1, 3]  # features 0, 1 | 4 | 0, 1, 4
    assert bands["n_replicated"].tolist() == [1, 0, 1]  # feature 0 (its cell b)
    assert bands["replication_pct"].round(3).tolist() == [50.0, 0.0, 33.333]
    empty = band_replication(table, features, [(3, 3)])
    assert empty["n_discovered"].tolist() == [0] and np.isnan(empty["replication_pct"].iloc[0])
