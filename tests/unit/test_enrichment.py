"""Token-enrichment taxonomy on a hand-built store whose right answers are planted.

60 texts of 12 tokens drawn (seeded) from a 40-token vocabulary: numbers, operators, words,
code, punctuation and filler words. SAE `s0` plants a specific-number feature (0: every "7"
and " 7"), a number-range feature (1: "12", "35", "48", " 100"), an operator feature (2), a
polysemantic feature (3: " cat", "(", "." alike), a feature firing everywhere (4: nothing
enriched), a word feature (5), a dead feature (6) and a broad feature on every even position
(7: more token ids than the store keeps). SAE `s1` plants a code feature (0), a punctuation
feature (1) and a feature with too little support (3: two "def"). Counts, chi-squared and
enrichment are checked against pandas group-bys of the planted arrays and scipy. The planted
tokens occur about 18 times each, so the tests use a minimum support of 3 (`PLANTED`) rather
than the default 20. The shuffle baseline is checked against real permutations of the planted
token labels.
"""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from explorer.analysis.enrichment import (
    LABELS,
    TaxonomySettings,
    chi_squared,
    compare_saes,
    label_distribution,
    label_features,
    load_taxonomy,
    shuffle_baseline,
    shuffled_feature_tokens,
    taxonomy_summary,
    token_enrichment,
    token_kind,
)
from explorer.errors import InputError
from explorer.store.reader import Store
from explorer.store.schema import FEATURE_TOKEN_TOP, SCHEMA_VERSION, SaeInfo, stored_schema_version
from explorer.store.writer import StoreWriter
from tests.planted import add_acts_with_stats, add_tokens

VOCAB = [
    "7", " 7", "12", "35", "48", " 100",  # numbers 0-5
    "+", "=", " *",  # operators 6-8
    " cat", " dog", " house", " the", " run",  # words 9-13
    "def", "(", ")", "my_var",  # code 14-17
    ".", ",",  # punctuation 18-19
    " lorem", " ipsum", " dolor", " sit", " amet", " consectetur", " adipiscing", " elit",
    " sed", " do", " eiusmod", " tempor", " incididunt", " ut", " labore", " et", " dolore",
    " magna", " aliqua", " enim",  # filler words 20-39
]  # fmt: skip
N_TEXTS, TEXT_TOKENS = 60, 12
SAES = [
    SaeInfo(sae="s0", hook_name="blocks.0.hook_resid_post", layer=0, d_in=8, d_sae=8),
    SaeInfo(sae="s1", hook_name="blocks.1.hook_resid_post", layer=1, d_in=8, d_sae=4),
]
PLANTED = TaxonomySettings(min_support=3)
PLANTED_LABELS = {
    ("s0", 0): "specific number",
    ("s0", 1): "number range",
    ("s0", 2): "operator",
    ("s0", 3): "polysemantic",
    ("s0", 4): "unlabelled",
    ("s0", 5): "word",
    ("s1", 0): "code",
    ("s1", 1): "punctuation",
    ("s1", 3): "unlabelled",
}


def make_tokens() -> pd.DataFrame:
    ids = np.random.default_rng(0).integers(0, len(VOCAB), size=N_TEXTS * TEXT_TOKENS)
    return pd.DataFrame(
        {
            "text_id": np.repeat(np.arange(N_TEXTS), TEXT_TOKENS),
            "pos": np.tile(np.arange(1, TEXT_TOKENS + 1), N_TEXTS),
            "token_id": ids,
            "token": [VOCAB[i] for i in ids],
        }
    )


def make_acts(tokens: pd.DataFrame) -> pd.DataFrame:
    """sae, feature, text_id, pos, value of the planted features (see the module docstring)."""
    on = tokens["token_id"].isin
    chosen = {
        ("s0", 0): on([0, 1]),
        ("s0", 1): on([2, 3, 4, 5]),
        ("s0", 2): on([6, 7, 8]),
        ("s0", 3): on([9, 15, 18]),
        ("s0", 4): pd.Series(True, index=tokens.index),
        ("s0", 5): on([10, 11, 13]),
        ("s0", 7): tokens["pos"] % 2 == 0,
        ("s1", 0): on([14, 15, 16, 17]),
        ("s1", 1): on([18, 19]),
        ("s1", 3): on([14]) & (on([14]).cumsum() <= 2),
    }
    parts = [
        tokens.loc[mask, ["text_id", "pos"]].assign(sae=sae, feature=feature, value=1.0 + feature)
        for (sae, feature), mask in chosen.items()
    ]
    return pd.concat(parts, ignore_index=True)[["sae", "feature", "text_id", "pos", "value"]]


def write_store(path: Path, tokens: pd.DataFrame, acts: pd.DataFrame) -> None:
    with StoreWriter(path, meta={"source": "planted"}) as writer:
        for info in SAES:
            writer.add_sae(info)
        writer.add_texts(
            pd.DataFrame(
                {
                    "text_id": np.arange(N_TEXTS),
                    "category": "planted",
                    "source": "planted",
                    "text": [f"text {t}" for t in range(N_TEXTS)],
                }
            )
        )
        add_tokens(writer, tokens)
        for info in SAES:
            rows = acts[acts["sae"] == info.sae]
            add_acts_with_stats(writer, info.sae, rows, info.d_sae)


@pytest.fixture(scope="module")
def tokens() -> pd.DataFrame:
    return make_tokens()


@pytest.fixture(scope="module")
def acts(tokens: pd.DataFrame) -> pd.DataFrame:
    return make_acts(tokens)


@pytest.fixture(scope="module")
def store_path(tokens, acts, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("enrichment") / "planted.duckdb"
    write_store(path, tokens, acts)
    return path


@pytest.fixture(scope="module")
def store(store_path: Path) -> Store:
    with Store.open(store_path) as opened:
        yield opened


def planted_counts(tokens: pd.DataFrame, acts: pd.DataFrame) -> pd.DataFrame:
    """sae, feature, token_id, a (n_active), n_feature, n_token of every planted pair."""
    joined = acts.merge(tokens, on=["text_id", "pos"])
    pairs = joined.groupby(["sae", "feature", "token_id"]).size().rename("n_active").reset_index()
    n_feature = acts.groupby(["sae", "feature"]).size().rename("n_feature").reset_index()
    n_token = tokens.groupby("token_id").size().rename("n_token").reset_index()
    return pairs.merge(n_feature, on=["sae", "feature"]).merge(n_token, on="token_id")


def labels_of(store: Store, **settings) -> dict[tuple[str, int], str]:
    found = {}
    for info in SAES:
        table = load_taxonomy(store, info.sae, TaxonomySettings(**({"min_support": 3} | settings)))
        found |= {
            (info.sae, f): label for f, label in zip(table["feature"], table["label"], strict=True)
        }
    return found


# --- what the store precomputes -------------------------------------------------------------


def test_feature_token_rows_equal_a_group_by_of_the_stored_acts_and_tokens(
    store: Store, tmp_path: Path
) -> None:
    stored_acts = pd.read_parquet(store.export("acts", tmp_path / "acts.parquet"))
    stored_tokens = pd.read_parquet(store.export("tokens", tmp_path / "tokens.parquet"))
    joined = stored_acts.merge(stored_tokens, on=["text_id", "pos"])
    counts = joined.groupby(["sae", "feature", "token_id"]).size().rename("n_active").reset_index()
    expected = (
        counts.sort_values(["sae", "feature", "n_active", "token_id"], ascending=[1, 1, 0, 1])
        .groupby(["sae", "feature"])
        .head(FEATURE_TOKEN_TOP)
        .reset_index(drop=True)
    )
    n_token = stored_tokens.groupby("token_id").size()
    n_feature = stored_acts.groupby(["sae", "feature"]).size()
    for info in SAES:
        stored = store.feature_tokens(info.sae)
        mine = expected[expected["sae"] == info.sae].reset_index(drop=True)
        pd.testing.assert_frame_equal(
            stored[["feature", "token_id", "n_active"]],
            mine[["feature", "token_id", "n_active"]],
            check_dtype=False,
        )
        assert stored["n_token"].tolist() == n_token[stored["token_id"]].tolist()
        keys = list(zip([info.sae] * len(stored), stored["feature"], strict=True))
        assert stored["n_feature"].tolist() == n_feature[keys].tolist()
        assert stored["token"].tolist() == [VOCAB[i] for i in stored["token_id"]]
    # the broad feature fires on every token id; only the most frequent are kept
    broad = counts[(counts["sae"] == "s0") & (counts["feature"] == 7)]
    assert len(broad) > FEATURE_TOKEN_TOP
    assert (store.feature_tokens("s0")["feature"] == 7).sum() == FEATURE_TOKEN_TOP


def test_token_counts_count_the_rows_of_tokens(store: Store, tokens: pd.DataFrame) -> None:
    stored = store.token_counts()
    expected = tokens.groupby("token_id").size()
    assert stored["token_id"].tolist() == expected.index.tolist()
    assert stored["n"].tolist() == expected.tolist()
    assert stored["token"].tolist() == [VOCAB[i] for i in expected.index]
    assert stored["n"].sum() == N_TEXTS * TEXT_TOKENS
    assert store.table_counts()["token_counts"] == len(expected)


def test_stored_schema_version_tells_old_stores_from_other_files(
    store_path: Path, tmp_path: Path
) -> None:
    assert stored_schema_version(store_path) == SCHEMA_VERSION
    old = tmp_path / "old.duckdb"
    old.write_bytes(store_path.read_bytes())
    with duckdb.connect(str(old)) as con:
        con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    assert stored_schema_version(old) == "2"
    text = tmp_path / "notes.txt"
    text.write_text("not a store")
    assert stored_schema_version(text) is None
    assert stored_schema_version(tmp_path / "missing.duckdb") is None
    assert stored_schema_version(tmp_path) is None


# --- statistics -----------------------------------------------------------------------------


def test_chi_squared_and_enrichment_match_scipy_and_the_formula(
    store: Store, tokens: pd.DataFrame, acts: pd.DataFrame
) -> None:
    n_total = len(tokens)
    planted = planted_counts(tokens, acts).set_index(["sae", "feature", "token_id"])
    checked = 0
    for info in SAES:
        enriched = token_enrichment(store.feature_tokens(info.sae), n_total, PLANTED)
        for row in enriched.itertuples():
            a, n_f, n_t = planted.loc[(info.sae, row.feature, row.token_id)]
            assert (row.n_active, row.n_feature, row.n_token) == (a, n_f, n_t)
            assert row.enrichment == pytest.approx((a / n_f) / (n_t / n_total), rel=1e-12)
            if n_f == n_total:  # the feature fires everywhere: no 2 x 2 test
                assert (row.chi2, row.p_value) == (0.0, 1.0)
                continue
            table = [[a, n_f - a], [n_t - a, n_total - n_f - n_t + a]]
            statistic, p_value, _, _ = stats.chi2_contingency(table, correction=False)
            assert row.chi2 == pytest.approx(statistic, rel=1e-9)
            assert row.p_value == pytest.approx(p_value, rel=1e-6, abs=1e-300)
            assert row.significant == (p_value < 0.01 and a >= 3 and a / n_f > n_t / n_total)
            checked += 1
    assert checked > 50


def test_chi_squared_of_a_table_without_an_empty_margin_matches_erfc() -> None:
    statistic, p_value = chi_squared(np.array([30]), np.array([50]), np.array([40]), 1000)
    a, b, c, d = 30, 20, 10, 940
    expected = 1000 * (a * d - b * c) ** 2 / ((a + b) * (c + d) * (a + c) * (b + d))
    assert statistic[0] == pytest.approx(expected, rel=1e-12)
    assert p_value[0] == pytest.approx(math.erfc(math.sqrt(expected / 2)), rel=1e-9)


# --- labels and rates -----------------------------------------------------------------------


def test_planted_features_get_their_labels(store: Store) -> None:
    found = labels_of(store)
    assert {key: found[key] for key in PLANTED_LABELS} == PLANTED_LABELS
    assert ("s0", 6) not in found  # dead
    assert labels_of(store, min_support=2)[("s1", 3)] == "code"


def test_top_tokens_are_the_most_active_significant_tokens(
    store: Store, tokens: pd.DataFrame, acts: pd.DataFrame
) -> None:
    table = load_taxonomy(store, "s0", PLANTED).set_index("feature")
    planted = planted_counts(tokens, acts)
    numbers = planted[(planted["sae"] == "s0") & (planted["feature"] == 1)]
    numbers = numbers.sort_values(["n_active", "token_id"], ascending=[False, True])
    n_total = len(tokens)
    expected = ", ".join(
        f"{VOCAB[t]!r} ×{(a / f) / (n / n_total):.1f}"
        for t, a, f, n in numbers[["token_id", "n_active", "n_feature", "n_token"]].itertuples(
            index=False
        )
    )
    assert table.at[1, "top_tokens"] == expected
    assert table.at[1, "top_kinds"] == "number"
    assert table.at[3, "top_kinds"] == ", ".join(
        token_kind(VOCAB[t])
        for t in planted[(planted["sae"] == "s0") & (planted["feature"] == 3)].sort_values(
            ["n_active", "token_id"], ascending=[False, True]
        )["token_id"]
    )
    assert table.at[4, "top_tokens"] == "" and math.isnan(table.at[4, "max_enrichment"])


def test_monosemantic_is_the_labels_of_one_kind_in_headline_and_chart(
    store: Store, tokens: pd.DataFrame, acts: pd.DataFrame
) -> None:
    n_total = len(tokens)
    n_poly = (acts[(acts["sae"] == "s0")]["feature"] == 3).sum()
    poly_enrichment = n_total / n_poly  # each of its tokens: a = n_t
    table = load_taxonomy(store, "s0", PLANTED).set_index("feature")
    # a strong enrichment does not make the polysemantic feature monosemantic
    assert table.at[3, "max_enrichment"] == pytest.approx(poly_enrichment, rel=1e-12)
    assert poly_enrichment >= 5
    live = sorted(acts.loc[acts["sae"] == "s0", "feature"].unique())
    assert table.index.sort_values().tolist() == live
    monosemantic = table["monosemantic"]
    assert monosemantic[[0, 1, 2, 5]].all()
    assert not monosemantic[[3, 4, 7]].any()
    summary = taxonomy_summary(table.reset_index())
    assert summary["n_features"] == len(live)
    assert summary["n_monosemantic"] == 4
    assert summary["monosemantic_rate"] == pytest.approx(4 / len(live))
    assert summary["number_share"] == pytest.approx(2 / len(live))
    assert summary["max_enrichment"] == pytest.approx(table["max_enrichment"].max())
    distribution = label_distribution(table.reset_index())
    counted = distribution.loc[distribution["monosemantic"], "n_features"].sum()
    assert counted == summary["n_monosemantic"]
    assert summary["n_polysemantic"] + summary["n_unlabelled"] + counted == len(live)


def test_enrichment_never_passes_its_ceiling(store: Store, tokens: pd.DataFrame) -> None:
    n_total = len(tokens)
    n_token = tokens["token_id"].value_counts()
    for sae in ("s0", "s1"):
        table = load_taxonomy(store, sae, PLANTED).dropna(subset=["max_enrichment"])
        token_ids = [VOCAB.index(t) for t in table["max_token"]]
        expected = n_total / n_token.loc[token_ids].to_numpy()
        np.testing.assert_allclose(table["ceiling"], expected, rtol=1e-12)
        assert (table["max_enrichment"] <= table["ceiling"] * (1 + 1e-12)).all()
        assert (table["max_enrichment"] <= n_total / table["n_active_tokens"] * (1 + 1e-12)).all()
    # the polysemantic feature fires on every occurrence of its tokens: at each ceiling
    s0 = load_taxonomy(store, "s0", PLANTED).set_index("feature")
    assert s0.at[3, "max_enrichment"] == pytest.approx(
        s0.at[3, "ceiling"]
        * n_token.loc[VOCAB.index(s0.at[3, "max_token"])]
        / s0.at[3, "n_active_tokens"]
    )


def test_default_minimum_support_is_twenty_active_tokens(store: Store) -> None:
    assert TaxonomySettings().min_support == 20
    enriched = token_enrichment(store.feature_tokens("s0"), 720, TaxonomySettings())
    assert enriched["significant"].any()
    assert (enriched.loc[enriched["significant"], "n_active"] >= 20).all()
    assert not enriched.loc[enriched["n_active"] < 20, "significant"].any()


def test_compare_saes_summarises_every_sae(store: Store) -> None:
    settings = PLANTED
    compared = compare_saes(store, settings).set_index("sae")
    assert compared.index.tolist() == ["s0", "s1"]
    assert compared["layer"].tolist() == [0, 1]
    for sae in ("s0", "s1"):
        expected = taxonomy_summary(load_taxonomy(store, sae, settings))
        assert compared.loc[sae, list(expected)].to_dict() == pytest.approx(expected)
    assert compared.at["s1", "n_features"] == 3
    assert compared.at["s1", "number_share"] == 0


def test_label_distribution_counts_every_label(store: Store) -> None:
    table = load_taxonomy(store, "s0", PLANTED)
    distribution = label_distribution(table)
    assert distribution["label"].tolist() == list(LABELS)
    counts = dict(zip(distribution["label"], distribution["n_features"], strict=True))
    assert counts["specific number"] == 1 and counts["polysemantic"] == 1
    assert distribution["n_features"].sum() == len(table)
    assert distribution["share"].sum() == pytest.approx(1.0)


# --- shuffle baseline -----------------------------------------------------------------------


def permuted_counts(tokens: pd.DataFrame, acts: pd.DataFrame, sae: str, seed: int) -> pd.Series:
    """n_active per (feature, token_id) of `sae` after a real permutation of the corpus's
    token labels across its token positions."""
    permuted = tokens.assign(
        token_id=np.random.default_rng(seed).permutation(tokens["token_id"].to_numpy())
    )
    joined = acts[acts["sae"] == sae].merge(permuted, on=["text_id", "pos"])
    return joined.groupby(["feature", "token_id"]).size()


def test_shuffled_counts_have_the_distribution_of_a_real_permutation(
    store: Store, tokens: pd.DataFrame, acts: pd.DataFrame
) -> None:
    observed = store.feature_tokens("s0")
    counts = store.token_counts()
    n_total, n_feature, token = len(tokens), 39, 1  # feature 0 and " 7" (19 in the corpus)
    assert observed.groupby("feature")["n_feature"].first()[0] == n_feature
    n_token = int((tokens["token_id"] == token).sum())
    draws, permutations = [], []
    for seed in range(300):
        shuffled = shuffled_feature_tokens(observed, counts, seed, keep=len(VOCAB))
        one = shuffled[(shuffled["feature"] == 0) & (shuffled["token_id"] == token)]
        draws.append(int(one["n_active"].sum()))
        permutations.append(int(permuted_counts(tokens, acts, "s0", seed).get((0, token), 0)))
    expected = stats.hypergeom(n_total, n_token, n_feature)
    for sample in (draws, permutations):
        assert np.mean(sample) == pytest.approx(expected.mean(), abs=4 * expected.std() / 17)
        # the share of zeros, the most likely count, within 4 standard errors
        p0 = expected.pmf(0)
        zeros = np.mean(np.array(sample) == 0)
        assert zeros == pytest.approx(p0, abs=4 * (p0 * (1 - p0) / 300) ** 0.5)


def test_shuffled_counts_keep_each_feature_size_and_the_store_truncation(
    store: Store, tokens: pd.DataFrame
) -> None:
    observed = store.feature_tokens("s0")
    counts = store.token_counts()
    sizes = observed.groupby("feature")["n_feature"].first()
    full = shuffled_feature_tokens(observed, counts, seed=1, keep=len(VOCAB))
    assert full.groupby("feature")["n_active"].sum().to_dict() == sizes.to_dict()
    n_token = tokens["token_id"].value_counts()
    assert (full["n_active"] <= full["token_id"].map(n_token)).all()
    assert (full["n_token"] == full["token_id"].map(n_token)).all()
    kept = shuffled_feature_tokens(observed, counts, seed=1, keep=5)
    expected = (
        full.sort_values(["feature", "n_active", "token_id"], ascending=[True, False, True])
        .groupby("feature")
        .head(5)
        .reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(kept, expected)
    again = shuffled_feature_tokens(observed, counts, seed=1, keep=5)
    pd.testing.assert_frame_equal(kept, again)
    other = shuffled_feature_tokens(observed, counts, seed=2, keep=5)
    assert not kept.equals(other)


def test_planted_token_features_beat_the_shuffle_baseline(store: Store) -> None:
    settings = TaxonomySettings(min_support=10)
    baseline = shuffle_baseline(store, "s0", settings, shuffles=10).set_index("measure")
    observed = taxonomy_summary(load_taxonomy(store, "s0", settings))
    assert baseline["observed"].to_dict() == pytest.approx(
        {key: float(value) for key, value in observed.items()}, nan_ok=True
    )
    assert baseline.at["n_monosemantic", "observed"] == 4
    assert baseline.at["n_features", "shuffled_mean"] == observed["n_features"]
    # shuffled token labels: a feature's tokens are a random draw, so at most a stray one
    assert baseline.at["n_monosemantic", "shuffled_max"] <= 1
    assert baseline.at["median_max_enrichment", "observed"] > 15
    assert baseline.at["max_enrichment", "shuffled_max"] < 2


def test_a_small_support_labels_shuffled_features(store: Store) -> None:
    """With a support of 3 the chi-squared of small counts makes chance tokens significant:
    the shuffled corpus gets monosemantic features, fewer as the support grows."""
    chance = [
        shuffle_baseline(store, "s0", TaxonomySettings(min_support=support), shuffles=10)
        .set_index("measure")
        .at["n_monosemantic", "shuffled_mean"]
        for support in (3, 5, 10)
    ]
    assert chance[0] >= 1 and chance[0] > chance[1] > chance[2]
    with pytest.raises(InputError):
        shuffle_baseline(store, "s0", PLANTED, shuffles=0)


@pytest.mark.parametrize(
    ("tokens", "weights", "label"),
    [
        (["5", " 5", "6"], [10, 8, 2], "specific number"),
        (["5", "6", "70"], [10, 8, 2], "number range"),
        (["5", " cat"], [60, 40], "polysemantic"),
        (["5", " cat"], [80, 20], "specific number"),
        (["+", "=", " cat"], [5, 5, 2], "operator"),
        ([" cat", "(", "."], [1, 1, 1], "polysemantic"),
        (["\n", "�"], [4, 4], "other"),
    ],
)
def test_label_rules(tokens: list[str], weights: list[int], label: str) -> None:
    top = pd.DataFrame(
        {
            "feature": 0,
            "token": tokens,
            "kind": [token_kind(t) for t in tokens],
            "n_active": weights,
        }
    )
    assert label_features(top).to_dict() == {0: label}


@pytest.mark.parametrize(
    ("token", "kind"),
    [
        ("7", "number"), (" 100", "number"), ("3.5", "number"), ("1,000", "number"),
        ("+", "operator"), (" =", "operator"), ("x", "operator"), ("÷", "operator"),
        ("**", "operator"), ("def", "code"), ("(", "code"), ("my_var", "code"),
        ("camelCase", "code"), ("x1", "code"), ("+=", "code"), (" {", "code"),
        (".", "punctuation"), (",", "punctuation"), ("…", "punctuation"),
        (" the", "word"), ("é", "word"), ("don't", "word"),
        (" ", "other"), ("\n", "other"), ("�", "other"), ("🙂", "other"), ("", "other"),
    ],
)  # fmt: skip
def test_token_kinds(token: str, kind: str) -> None:
    assert token_kind(token) == kind


@pytest.mark.parametrize(
    "settings",
    [
        {"min_support": 0},
        {"min_support": 1.5},
        {"min_support": True},
        {"p_threshold": 0.0},
        {"p_threshold": 0.9},
        {"p_threshold": math.nan},
    ],
)
def test_bad_settings_are_refused(settings: dict) -> None:
    with pytest.raises(InputError):
        TaxonomySettings(**settings)
