"""Specialist measures on a hand-built store whose right answers are planted.

Two SAEs over 80 texts in four categories (code, prose, and the arithmetic operations
addition and subtraction, whose texts carry `op:` and `num:` labels). SAE `s0` plants a code
specialist (0), a general feature (1), a value feature firing on the texts labelled
`num:100` (2), an operation feature firing on every addition text (3), an
operation + value feature firing on the subtraction texts labelled `num:7` (4), a dead
feature (5) and a code feature with too little support (6). SAE `s1` plants a prose
specialist (0) and a general feature (1). Every number is checked against an independent
computation (pandas, scipy) from the same arrays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from explorer.analysis.specialists import (
    DEAD,
    SpecialistSettings,
    benjamini_hochberg,
    category_matrix,
    layer_progression,
    load_specialists,
    top_specialists,
)
from explorer.errors import InputError
from explorer.store.reader import Store
from explorer.store.schema import LABEL_TOP, SaeInfo
from explorer.store.writer import StoreWriter
from tests.planted import add_acts_with_stats, add_tokens, tokens_of

CATEGORIES = ("code", "prose", "addition", "subtraction")
TEXTS_PER_CATEGORY = 20


@dataclass
class Planted:
    """What the writer gets: texts, tokens and the nonzero activations of both SAEs."""

    saes: list[SaeInfo]
    texts: pd.DataFrame  # text_id, category, source, text, labels, n_tokens
    tokens: pd.DataFrame  # text_id, pos, token_id, token
    acts: pd.DataFrame  # sae, feature, text_id, pos, value


def arithmetic_labels(category: str, index: int, text_id: int) -> list[str]:
    """op:<category>, two numbers of its own, num:100 on the first six texts of each
    operation, num:7 on subtraction texts 10-17."""
    if category not in ("addition", "subtraction"):
        return []
    labels = [f"op:{category}", f"num:{1000 + text_id}", f"num:{2000 + text_id}"]
    if index < 6:
        labels.append("num:100")
    if category == "subtraction" and 10 <= index < 18:
        labels.append("num:7")
    return labels


def make_planted(**overrides) -> Planted:
    rows = []
    for c, category in enumerate(CATEGORIES):
        for index in range(TEXTS_PER_CATEGORY):
            text_id = c * TEXTS_PER_CATEGORY + index
            rows.append(
                {
                    "text_id": text_id,
                    "category": category,
                    "source": "planted",
                    "text": f"{category} text {index}",
                    "labels": arithmetic_labels(category, index, text_id),
                    "n_tokens": 4 + text_id % 5,
                    "index": index,
                }
            )
    texts = pd.DataFrame(rows)
    tokens = tokens_of(texts)
    acts: list[tuple[str, int, int, int, float]] = []

    def fire(sae: str, feature: int, chosen: pd.DataFrame, value, n_positions: int = 1) -> None:
        for text_id in chosen["text_id"]:
            for pos in range(1, n_positions + 1):
                acts.append((sae, feature, int(text_id), pos, float(value(int(text_id)))))

    is_ = texts["category"].eq
    fire("s0", 0, texts[is_("code")], lambda t: 3.0, n_positions=2)
    fire("s0", 0, texts[is_("prose")].head(2), lambda t: 0.05)
    fire("s0", 1, texts, lambda t: 1.0 + 0.5 * (t % 3))
    fire("s0", 2, texts[texts["labels"].map(lambda ls: "num:100" in ls)], lambda t: 1.5)
    fire("s0", 3, texts[is_("addition")], lambda t: 2.0)
    fire("s0", 4, texts[texts["labels"].map(lambda ls: "num:7" in ls)], lambda t: 1.0)
    fire("s0", 6, texts[is_("code")].head(2), lambda t: 1.0)
    fire("s1", 0, texts[is_("prose")], lambda t: 0.5 + 0.1 * (t % 4), n_positions=3)
    fire("s1", 1, texts, lambda t: 0.2 + 0.1 * (t % 7))
    planted = Planted(
        saes=[
            SaeInfo(sae="s0", hook_name="blocks.0.hook_resid_post", layer=0, d_in=8, d_sae=8),
            SaeInfo(sae="s1", hook_name="blocks.1.hook_resid_post", layer=1, d_in=8, d_sae=4),
        ],
        texts=texts,
        tokens=tokens,
        acts=pd.DataFrame(acts, columns=["sae", "feature", "text_id", "pos", "value"]),
    )
    return replace(planted, **overrides)


def write_planted(path: Path, planted: Planted) -> None:
    with StoreWriter(path, meta={"source": "planted"}) as writer:
        for info in planted.saes:
            writer.add_sae(info)
        writer.add_texts(planted.texts[["text_id", "category", "source", "text", "labels"]])
        add_tokens(writer, planted.tokens)
        for info in planted.saes:
            rows = planted.acts[planted.acts["sae"] == info.sae]
            add_acts_with_stats(writer, info.sae, rows, info.d_sae)


@pytest.fixture(scope="module")
def planted() -> Planted:
    return make_planted()


@pytest.fixture(scope="module")
def store(planted: Planted, tmp_path_factory: pytest.TempPathFactory) -> Store:
    path = tmp_path_factory.mktemp("planted") / "planted.duckdb"
    write_planted(path, planted)
    with Store.open(path) as opened:
        yield opened


def text_activations(planted: Planted, sae: str, feature: int) -> pd.Series:
    """Every text's activation (sum over its tokens / n_tokens, 0 where it does not fire)."""
    rows = planted.acts[(planted.acts["sae"] == sae) & (planted.acts["feature"] == feature)]
    stored = rows["value"].astype(np.float32).astype(np.float64)  # the store keeps float32
    sums = stored.groupby(rows["text_id"]).sum().reindex(planted.texts["text_id"], fill_value=0)
    n_tokens = planted.texts.set_index("text_id")["n_tokens"]
    return (sums / n_tokens).astype(np.float32)


def alive_features(planted: Planted) -> list[tuple[str, int]]:
    return sorted(set(zip(planted.acts["sae"], planted.acts["feature"], strict=True)))


def kinds(store: Store, **settings) -> dict[tuple[str, int], str]:
    features = load_specialists(store, SpecialistSettings(**settings)).features
    return features.set_index(["sae", "feature"])["kind"].to_dict()


# --- what the store precomputes -------------------------------------------------------------


def test_feature_text_holds_each_texts_activation(store: Store, planted: Planted) -> None:
    for sae, feature in alive_features(planted):
        expected = text_activations(planted, sae, feature)
        expected = expected[expected > 0]
        stored = store.feature_texts(sae, feature)
        assert stored["act"].is_monotonic_decreasing
        by_text = stored.set_index("text_id").sort_index()
        assert by_text.index.tolist() == expected.index.tolist()
        np.testing.assert_allclose(by_text["act"], expected.to_numpy(), rtol=1e-6)
        categories = planted.texts.set_index("text_id")["category"]
        assert stored["category"].tolist() == categories[stored["text_id"]].tolist()


def test_feature_labels_count_the_texts_per_label(store: Store, planted: Planted) -> None:
    labelled = planted.texts[["text_id", "labels"]].explode("labels").dropna()
    fired = planted.acts[["sae", "feature", "text_id"]].drop_duplicates()
    every = (
        fired.merge(labelled, on="text_id")
        .groupby(["sae", "feature", "labels"])
        .size()
        .rename("n_texts_active")
        .reset_index()
        .rename(columns={"labels": "label"})
    )
    every["family"] = every["label"].str.split(":").str[0]
    every = every.sort_values(
        ["sae", "feature", "family", "n_texts_active", "label"],
        ascending=[True, True, True, False, True],
    )
    every["rank"] = every.groupby(["sae", "feature", "family"]).cumcount() + 1
    expected = every[every["rank"] <= LABEL_TOP].drop(columns="family")
    stored = store.feature_labels()
    pd.testing.assert_frame_equal(
        stored,
        expected.sort_values(["sae", "feature", "label"], ignore_index=True),
        check_dtype=False,
    )
    assert len(every) > len(stored)  # the rarer values were left out
    top = stored[(stored["sae"] == "s0") & (stored["feature"] == 2) & (stored["rank"] == 1)]
    assert top["label"].tolist() == ["num:100", "op:addition"]
    assert top["n_texts_active"].tolist() == [12, 6]
    values = store.feature_labels("num:")
    assert len(values) == expected["label"].str.startswith("num:").sum()
    assert store.feature_labels("no-such-prefix").empty
    with pytest.raises(InputError):
        store.feature_labels("x" * 101)


@pytest.mark.parametrize(("threshold", "relative"), [(0.5, True), (0.9, True), (0.3, False)])
def test_strong_counts_follow_the_threshold(
    store: Store, planted: Planted, threshold: float, relative: bool
) -> None:
    counts = store.category_counts(threshold, relative=relative)
    categories = planted.texts.set_index("text_id")["category"]
    for sae, feature in alive_features(planted):
        acts = text_activations(planted, sae, feature)
        level = np.float32(threshold) * acts.max() if relative else threshold
        strong = categories[acts.index[acts >= level]].value_counts()
        rows = counts[(counts["sae"] == sae) & (counts["feature"] == feature)]
        got = rows.set_index("category")["n_strong"]
        assert got.to_dict() == strong.reindex(got.index, fill_value=0).to_dict(), (sae, feature)
        assert rows["max_text_act"].iloc[0] == pytest.approx(acts.max(), rel=1e-6)


def test_frequency_table_lists_every_feature_with_its_largest_text_activation(
    store: Store, planted: Planted
) -> None:
    table = store.frequency_table()
    assert table[["sae", "feature"]].values.tolist() == [
        [info.sae, feature] for info in planted.saes for feature in range(info.d_sae)
    ]
    for row in table.itertuples():
        acts = text_activations(planted, row.sae, row.feature)
        assert row.max_text_act == pytest.approx(float(acts.max()), rel=1e-7)
        assert row.n_active_texts == (acts > 0).sum()


def test_the_measures_never_read_acts(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    queries: list[str] = []
    read = Store._df

    def recording(self, sql, params=()):
        queries.append(sql)
        return read(self, sql, params)

    monkeypatch.setattr(Store, "_df", recording)
    load_specialists(store, SpecialistSettings())
    assert len(queries) == 4
    assert not [sql for sql in queries if re.search(r"\b(FROM|JOIN)\s+acts\b", sql)]


@pytest.mark.parametrize(("threshold", "relative"), [(0, True), (1.5, True), (-1, False)])
def test_a_bad_strong_threshold_is_refused(store: Store, threshold, relative) -> None:
    with pytest.raises(InputError, match="strong threshold"):
        store.category_counts(threshold, relative=relative)


# --- the measures ---------------------------------------------------------------------------


@pytest.mark.parametrize("measure", ["score", "dominance"])
def test_planted_features_get_their_kinds(store: Store, measure: str) -> None:
    assert kinds(store, measure=measure) == {
        ("s0", 0): "category",
        ("s0", 1): "general",
        ("s0", 2): "value",
        ("s0", 3): "operation",
        ("s0", 4): "operation + value",
        ("s0", 5): DEAD,
        ("s0", 6): "general",
        ("s0", 7): DEAD,
        ("s1", 0): "category",
        ("s1", 1): "general",
        ("s1", 2): DEAD,
        ("s1", 3): DEAD,
    }


def test_minimum_support_decides_the_thin_specialist(store: Store) -> None:
    assert kinds(store, measure="dominance", min_support=3)[("s0", 6)] == "general"
    assert kinds(store, measure="dominance", min_support=2)[("s0", 6)] == "category"
    # the planted code specialist fires on 20 code texts: a support of 21 is too much
    assert kinds(store, measure="dominance", min_support=21)[("s0", 0)] == "general"


def test_notebook_score_counts_strong_texts_inside_minus_outside(
    store: Store, planted: Planted
) -> None:
    settings = SpecialistSettings(measure="score", strong_threshold=0.6)
    table = load_specialists(store, settings).table
    categories = planted.texts.set_index("text_id")["category"]
    for sae, feature in alive_features(planted):
        acts = text_activations(planted, sae, feature)
        strong = categories[acts.index[acts >= np.float32(0.6) * acts.max()]]
        rows = table[(table["sae"] == sae) & (table["feature"] == feature)]
        for row in rows.itertuples():
            inside = int((strong == row.category).sum())
            assert row.notebook_score == inside - (len(strong) - inside)
            assert row.score == row.notebook_score
    # code texts: 6 / n_tokens, n_tokens 4..8, so 0.6 x 1.5 keeps those of 4..6 tokens
    code = table[(table["sae"] == "s0") & (table["feature"] == 0)].set_index("category")
    assert code.loc["code", "notebook_score"] == 12
    table = load_specialists(store, SpecialistSettings(measure="score")).table
    code = table[(table["sae"] == "s0") & (table["feature"] == 0)].set_index("category")
    assert code.loc["code", "notebook_score"] == TEXTS_PER_CATEGORY
    assert code.loc["prose", "notebook_score"] == -TEXTS_PER_CATEGORY


def test_dominance_shares_are_shares_of_the_firing_texts(store: Store) -> None:
    table = load_specialists(store, SpecialistSettings(measure="dominance")).table
    code = table[(table["sae"] == "s0") & (table["feature"] == 0)].set_index("category")
    assert code.loc["code", "share"] == pytest.approx(20 / 22)
    assert code.loc["code", "max_other_share"] == pytest.approx(2 / 22)
    assert code.loc["prose", "max_other_share"] == pytest.approx(20 / 22)
    value = table[(table["sae"] == "s0") & (table["feature"] == 2)].set_index("category")
    assert value.loc["addition", "share"] == value.loc["subtraction", "share"] == 0.5
    assert not value["is_specialist"].any()


def test_value_dominance_finds_the_planted_values(store: Store) -> None:
    features = load_specialists(store, SpecialistSettings()).features.set_index(["sae", "feature"])
    assert features.loc[("s0", 2), "value_label"] == "num:100"
    assert features.loc[("s0", 2), "value_share"] == 1.0
    assert features.loc[("s0", 2), "value_other_share"] == pytest.approx(1 / 12)
    assert features.loc[("s0", 4), "value_label"] == "num:7"
    assert features.loc[("s0", 4), "value_other_share"] == pytest.approx(1 / 8)
    # the operation feature sees num:100 in 6 of its 20 texts: no value specialist
    assert features.loc[("s0", 3), "value_share"] == pytest.approx(6 / 20)
    assert not features.loc[("s0", 3), "is_value_specialist"]
    stricter = load_specialists(store, SpecialistSettings(value_other_share=0.1)).features
    assert stricter.set_index(["sae", "feature"]).loc[("s0", 4), "kind"] == "operation"


def test_auroc_equals_mann_whitney_u(store: Store, planted: Planted) -> None:
    table = load_specialists(store, SpecialistSettings(measure="auroc")).table
    categories = planted.texts.set_index("text_id")["category"]
    for sae, feature in alive_features(planted):
        acts = text_activations(planted, sae, feature)
        for row in table[(table["sae"] == sae) & (table["feature"] == feature)].itertuples():
            inside = (categories[acts.index] == row.category).to_numpy()
            u = stats.mannwhitneyu(acts[inside], acts[~inside]).statistic
            assert row.auroc == pytest.approx(u / (inside.sum() * (~inside).sum()), abs=1e-12)
    best = table[table["is_specialist"]].set_index(["sae", "feature", "category"])
    assert best.loc[("s0", 0, "code"), "auroc"] == 1.0
    assert ("s0", 1, "code") not in best.index


@pytest.mark.parametrize("test", ["fisher", "chi2"])
def test_p_values_equal_scipy_and_q_values_are_bh(store: Store, planted: Planted, test) -> None:
    table = load_specialists(store, SpecialistSettings(measure="enrichment", test=test)).table
    for row in table.itertuples():
        a = row.n_texts_active
        b = row.n_active - a
        c = row.n_texts - a
        d = row.n_total - row.n_texts - b
        if test == "fisher":
            expected = stats.fisher_exact([[a, b], [c, d]], alternative="greater").pvalue
        elif min(a + b, c + d) == 0:
            expected = 1.0
        else:
            expected = stats.chi2_contingency([[a, b], [c, d]], correction=False).pvalue
        assert row.p_value == pytest.approx(expected, rel=1e-9, abs=1e-300)
        enrichment = ((a + 0.5) / (row.n_texts + 1)) / ((b + 0.5) / (row.n_total - row.n_texts + 1))
        assert row.enrichment == pytest.approx(enrichment)
    np.testing.assert_allclose(
        table["q_value"], stats.false_discovery_control(table["p_value"], method="bh")
    )
    specialists = table[table["is_specialist"]]
    assert (specialists["q_value"] <= 0.05).all() and (specialists["enrichment"] >= 2).all()
    assert {("s0", 0, "code"), ("s0", 3, "addition"), ("s1", 0, "prose")} <= set(
        zip(specialists["sae"], specialists["feature"], specialists["category"], strict=True)
    )


def test_benjamini_hochberg_equals_scipy() -> None:
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(size=500), rng.uniform(0, 1e-4, size=50), [1.0, 1.0, 0.0]])
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p))
    assert benjamini_hochberg(np.array([])).size == 0


def test_category_matrix_and_layer_progression(store: Store) -> None:
    table = load_specialists(store, SpecialistSettings(measure="dominance")).table
    matrix = category_matrix(table)
    counts = matrix.pivot(index="category", columns="sae", values="n_specialists")
    assert counts.to_dict() == {
        "s0": {"addition": 1, "code": 1, "prose": 0, "subtraction": 1},
        "s1": {"addition": 0, "code": 0, "prose": 1, "subtraction": 0},
    }
    best = matrix.set_index(["sae", "category"])
    assert best.loc[("s0", "code"), "best_feature"] == 0
    assert best.loc[("s0", "code"), "best_score"] == pytest.approx(20 / 22)
    assert best.loc[("s0", "addition"), "best_feature"] == 3
    progression = layer_progression(matrix)
    assert progression[["sae", "categories_with_specialists", "n_categories"]].values.tolist() == [
        ["s0", 3, 4],
        ["s1", 1, 4],
    ]
    top = top_specialists(table, per_category=1)
    assert top[["category", "sae", "feature"]].values.tolist() == [
        ["addition", "s0", 3],
        ["code", "s0", 0],
        ["prose", "s1", 0],
        ["subtraction", "s0", 4],
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"measure": "best"}, "measure must be one of score, dominance"),
        ({"strong_threshold": 1.5}, "strong_mode 'absolute'"),
        ({"strong_threshold": 0.0, "strong_mode": "absolute"}, "positive activation"),
        ({"share": 0.3, "other_share": 0.4}, "0 < other_share < share"),
        ({"value_other_share": 0.0}, "0 < value_other_share < value_share"),
        ({"min_support": 0}, "at least 1 text"),
        ({"min_support": 2.5}, "whole number"),
        ({"min_auroc": 0.4}, "0.5 \\(chance\\)"),
        ({"min_enrichment": 0.5}, "at least 1"),
        ({"fdr": 1.0}, "between 0 and 1"),
        ({"fdr": float("nan")}, "finite number"),
        ({"test": "t-test"}, "fisher, chi2"),
    ],
)
def test_invalid_settings_say_what_to_choose(overrides, message) -> None:
    with pytest.raises(InputError, match=message):
        SpecialistSettings(**overrides)


def test_top_specialists_needs_a_positive_count(store: Store) -> None:
    table = load_specialists(store, SpecialistSettings()).table
    with pytest.raises(InputError, match="at least 1"):
        top_specialists(table, per_category=0)
