"""Specialist measures on a hand-built store whose right answers are planted.

Two SAEs over 80 texts in four categories (code, prose, and the arithmetic operations
addition and subtraction, whose texts carry `op:` and `num:` labels). SAE `s0` plants a code
specialist (0), a general feature (1), a value feature firing on the texts labelled
`num:100` (2), an operation feature firing on every addition text (3), an
operation + value feature firing on the subtraction texts labelled `num:7` (4), a dead
feature (5) and a code feature with too little support (6). SAE `s1` plants a prose
specialist (0) and a general feature (1). All texts share one source, so the four categories
form one family; the `num:` labels form the number family over the arithmetic texts. Every
number is checked against an independent computation (pandas, scipy) from the same arrays.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from explorer.analysis.specialists import (
    DEAD,
    MEASURE_INFO,
    MEASURES,
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
    cursor = Store.cursor

    class Recording:
        def __init__(self, inner) -> None:
            self.inner = inner

        def execute(self, sql, *params):
            queries.append(sql)
            return self.inner.execute(sql, *params)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    @contextmanager
    def recording(self):
        with cursor(self) as inner:
            yield Recording(inner)

    monkeypatch.setattr(Store, "cursor", recording)
    load_specialists(store, SpecialistSettings())
    assert any("feature_text" in sql for sql in queries)
    assert not [sql for sql in queries if re.search(r"\b(FROM|JOIN)\s+acts\b", sql)]


@pytest.mark.parametrize(("threshold", "relative"), [(0, True), (1.5, True), (-1, False)])
def test_a_bad_strong_threshold_is_refused(store: Store, threshold, relative) -> None:
    with pytest.raises(InputError, match="strong threshold"):
        store.category_counts(threshold, relative=relative)


# --- the measures ---------------------------------------------------------------------------


def cells_by_pandas(planted: Planted, sae: str, feature: int) -> pd.DataFrame:
    """k (active texts in the category), a (active texts), n, N per category of the one
    family of the planted corpus (all its texts), counted with pandas."""
    acts = text_activations(planted, sae, feature)
    categories = planted.texts.set_index("text_id")["category"]
    fires = acts > 0
    k = categories[fires[fires].index].value_counts().reindex(list(CATEGORIES), fill_value=0)
    n = categories.value_counts().reindex(list(CATEGORIES))
    return pd.DataFrame({"k": k, "a": int(fires.sum()), "n": n, "N": len(categories)})


def test_selectivity_and_fisher_equal_pandas_and_scipy(store: Store, planted: Planted) -> None:
    table = load_specialists(store, SpecialistSettings()).table
    family = table[table["family"] == "planted"]
    for sae, feature in alive_features(planted):
        expected = cells_by_pandas(planted, sae, feature)
        tested = expected[expected["k"] >= 5]
        rows = family[(family["sae"] == sae) & (family["feature"] == feature)]
        assert sorted(rows["category"]) == sorted(tested.index), (sae, feature)
        for row in rows.itertuples():
            k, a, n, big_n = tested.loc[row.category]
            base = n / big_n
            assert row.selectivity == pytest.approx((k / a - base) / (1 - base))
            assert row.lift == pytest.approx((k / a) / base)
            fisher = stats.fisher_exact([[k, a - k], [n - k, big_n - n - a + k]], "greater")
            assert row.p_value == pytest.approx(fisher.pvalue, rel=1e-9)


def test_gated_q_values_are_bh_over_every_tested_cell(store: Store) -> None:
    table = load_specialists(store, SpecialistSettings()).table
    passes = (table["selectivity"] >= 0.5) & (table["n_texts_active"] >= 5)
    gated = np.where(passes, table["p_value"], 1.0)
    np.testing.assert_allclose(table["q_value"], stats.false_discovery_control(gated))
    chosen = table[table["is_specialist"]]
    assert (chosen["q_value"] <= 0.05).all() and (chosen["selectivity"] >= 0.5).all()


def test_planted_features_get_their_kinds_under_the_default(store: Store) -> None:
    assert kinds(store) == {
        ("s0", 0): "category",
        ("s0", 1): "general",
        ("s0", 2): "value",
        ("s0", 3): "operation",
        ("s0", 4): "operation + value",
        ("s0", 5): DEAD,
        ("s0", 6): "general",  # fires on 2 code texts: below the minimum support of 5
        ("s0", 7): DEAD,
        ("s1", 0): "category",
        ("s1", 1): "general",
        ("s1", 2): DEAD,
        ("s1", 3): DEAD,
    }


def test_minimum_support_decides_the_thin_specialist(store: Store) -> None:
    # tested at a support of 2, but 2 of 20 code texts out of 80 is no evidence:
    # Fisher p = C(20, 2) / C(80, 2) = 0.06; dominance has no test and calls it
    assert kinds(store, min_support=2)[("s0", 6)] == "general"
    table = load_specialists(store, SpecialistSettings(min_support=2)).table
    thin = table[(table["sae"] == "s0") & (table["feature"] == 6)].set_index("category")
    assert thin.loc["code", "p_value"] == pytest.approx(190 / 3160)
    assert kinds(store, measure="dominance", min_support=2)[("s0", 6)] == "category"
    # the planted code specialist fires on 20 code texts: a support of 21 is too much
    assert kinds(store, min_support=21)[("s0", 0)] == "general"


def test_notebook_score_counts_strong_texts_inside_minus_outside(
    store: Store, planted: Planted
) -> None:
    settings = SpecialistSettings(measure="score", strong_threshold=0.6, min_support=1)
    table = load_specialists(store, settings).table
    table = table[table["family"] == "planted"]
    categories = planted.texts.set_index("text_id")["category"]
    for sae, feature in alive_features(planted):
        acts = text_activations(planted, sae, feature)
        strong = categories[acts.index[acts >= 0.6 * acts.max()]]
        rows = table[(table["sae"] == sae) & (table["feature"] == feature)]
        for row in rows.itertuples():
            inside = int((strong == row.category).sum())
            assert row.notebook_score == inside - (len(strong) - inside)
            assert row.score == row.notebook_score
    code = table[(table["sae"] == "s0") & (table["feature"] == 0)].set_index("category")
    assert code.loc["code", "notebook_score"] == 12  # 6 / n_tokens >= 0.6 x 1.5: 4..6 tokens


def test_dominance_shares_are_shares_of_the_firing_texts(store: Store) -> None:
    settings = SpecialistSettings(measure="dominance", min_support=1)
    table = load_specialists(store, settings).table
    code = table[(table["sae"] == "s0") & (table["feature"] == 0)].set_index("category")
    assert code.loc["code", "share"] == pytest.approx(20 / 22)
    assert code.loc["code", "max_other_share"] == pytest.approx(2 / 22)
    assert code.loc["prose", "max_other_share"] == pytest.approx(20 / 22)
    value = table[(table["sae"] == "s0") & (table["feature"] == 2)]
    value = value[value["family"] == "planted"].set_index("category")
    assert value.loc["addition", "share"] == value.loc["subtraction", "share"] == 0.5
    assert not value["is_specialist"].any()


def test_auroc_equals_mann_whitney_u_within_the_family(store: Store, planted: Planted) -> None:
    table = load_specialists(store, SpecialistSettings(measure="auroc", min_support=1)).table
    labelled = planted.texts.set_index("text_id")
    for family, universe in (
        ("planted", labelled.index),
        ("number", labelled.index[labelled["labels"].map(len) > 0]),
    ):
        rows = table[table["family"] == family]
        for sae, feature in alive_features(planted):
            acts = text_activations(planted, sae, feature)[universe]
            for row in rows[(rows["sae"] == sae) & (rows["feature"] == feature)].itertuples():
                if family == "planted":
                    inside = (labelled.loc[universe, "category"] == row.category).to_numpy()
                else:
                    inside = (
                        labelled.loc[universe, "labels"]
                        .map(lambda ls, c=row.category: c in ls)
                        .to_numpy()
                    )
                u = stats.mannwhitneyu(acts[inside], acts[~inside]).statistic
                expected = u / (inside.sum() * (~inside).sum())
                assert row.auroc == pytest.approx(expected, abs=1e-12), (family, row)
    best = table[table["is_specialist"]].set_index(["sae", "feature", "category"])
    assert best.loc[("s0", 0, "code"), "auroc"] == 1.0
    assert ("s0", 1, "code") not in best.index


@pytest.mark.parametrize("test", ["fisher", "chi2"])
def test_p_values_equal_scipy(store: Store, test) -> None:
    settings = SpecialistSettings(measure="enrichment", test=test, min_support=1)
    table = load_specialists(store, settings).table
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
    result = load_specialists(store, SpecialistSettings())
    planted = result.categories[result.categories["family"] == "planted"]
    table = result.table[result.table["family"] == "planted"]
    matrix = category_matrix(table, planted)
    counts = matrix.pivot(index="category", columns="sae", values="n_specialists")
    assert counts.to_dict() == {
        "s0": {"addition": 1, "code": 1, "prose": 0, "subtraction": 1},
        "s1": {"addition": 0, "code": 0, "prose": 1, "subtraction": 0},
    }
    best = matrix.set_index(["sae", "category"])
    assert best.loc[("s0", "code"), "best_feature"] == 0
    assert best.loc[("s0", "code"), "best_score"] == pytest.approx((20 / 22 - 0.25) / 0.75)
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


def test_every_measure_has_a_sentence_a_formula_and_a_methods_section() -> None:
    methods = (Path(__file__).resolve().parents[2] / "docs" / "methods.md").read_text()
    assert set(MEASURE_INFO) == set(MEASURES) == set(SpecialistSettings.choices()["measure"])
    for info in MEASURE_INFO.values():
        assert f'<a id="{info.anchor}"></a>' in methods
        assert info.formula in info.help and f"](methods#{info.anchor})" in info.help
    for anchor in ("families", "support", "fdr", "chance-baseline", "replication",
                   "replication-store", "token-confound", "operation-position",
                   "findings-export"):  # fmt: skip
        assert f'<a id="{anchor}"></a>' in methods


def test_bounds_live_on_the_settings() -> None:
    bounds = SpecialistSettings.bounds()
    assert bounds["fdr"] == (0.0001, 0.5)
    with pytest.raises(InputError, match=r"fdr must lie in \[0.0001, 0.5\]"):
        SpecialistSettings(fdr=0.6)
    defaults = SpecialistSettings()
    for name, (low, high) in bounds.items():
        value = getattr(defaults, name)
        assert (low is None or low <= value) and (high is None or value <= high), name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"measure": "best"}, "measure must be one of selectivity, score"),
        ({"contrast": "everything"}, "contrast must be one of family, corpus"),
        ({"strong_threshold": 1.5}, "strong_mode 'absolute'"),
        ({"strong_threshold": 0.0, "strong_mode": "absolute"}, "positive activation"),
        ({"share": 0.3, "other_share": 0.4}, "0 < other_share < share"),
        ({"min_support": 0}, "at least 1 text"),
        ({"min_support": 2.5}, "whole number"),
        ({"min_auroc": 0.4}, "0.5 \\(chance\\)"),
        ({"min_enrichment": 0.5}, "at least 1"),
        ({"min_selectivity": 1.5}, "min_selectivity must lie in"),
        ({"fdr": 1.0}, "between 0 and 1"),
        ({"fdr": float("nan")}, "finite number"),
        ({"permutations": 5}, "permutations must lie in"),
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
