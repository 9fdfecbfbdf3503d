"""The controls of the specialist findings on a planted store whose answers are known.

180 texts: four prose categories of the source `bundled` (code, prose, chat, maths; 30 texts
each) and two arithmetic operations of the source `arithmetic` (addition, subtraction; 30
each, labelled `op:<operation>`). Every text's tokens are ordinary word ids that vary with
the text, except that each code text starts with the token `def`, which no other text has.
One SAE plants:

- 0, a rare concept specialist: fires on 24 of the 30 code texts, on their varied word
  tokens, and nowhere else;
- 1, a frequent general feature: fires on every text;
- 2, a random feature: fires on a seeded random quarter of the texts;
- 3, a one-token detector: fires on `def` only (so on every code text);
- 4, a feature of code and of arithmetic: a perfect code specialist within the prose family,
  not against the whole corpus;
- 5, an operation specialist: fires on the addition texts.

Each number is checked against what the plant implies or an independent computation (pandas,
scipy) from the same arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from explorer.analysis.controls import findings, load_chance_baseline, observed_vs_chance
from explorer.analysis.families import category_families
from explorer.analysis.specialists import (
    SpecialistSettings,
    category_matrix,
    discovery_half,
    load_specialists,
    read_activations,
)
from explorer.cli import main
from explorer.store.reader import Store
from tests.planted import two_family_texts, write_one_sae_store

PROSE = ("chat", "code", "maths", "prose")
OPERATIONS = ("addition", "subtraction")
PER_CATEGORY = 30
N_TOKENS = 6
DEF_TOKEN = 500
RANDOM_SEED = 7


def planted_texts() -> pd.DataFrame:
    return two_family_texts(PROSE, OPERATIONS, PER_CATEGORY)


def planted_tokens(texts: pd.DataFrame) -> pd.DataFrame:
    """Word ids 100..149 varying with (text, position); `def` at position 1 of code texts."""
    rows = []
    for text_id, category in zip(texts["text_id"], texts["category"], strict=True):
        for pos in range(1, N_TOKENS + 1):
            token_id = (
                DEF_TOKEN if category == "code" and pos == 1 else 100 + (7 * text_id + pos) % 50
            )
            rows.append(
                {"text_id": text_id, "pos": pos, "token_id": token_id, "token": f"w{token_id}"}
            )
    return pd.DataFrame(rows)


def planted_acts(texts: pd.DataFrame) -> pd.DataFrame:
    rows = []
    is_ = texts["category"].eq

    def fire(feature: int, chosen: pd.Series, positions: range, value: float = 1.0) -> None:
        for text_id in texts.loc[chosen, "text_id"]:
            rows.extend(
                (feature, int(text_id), pos, value + 0.01 * (text_id % 5)) for pos in positions
            )

    fire(0, is_("code") & (texts["index"] < 24), range(2, 5))
    fire(1, texts["text_id"] >= 0, range(1, 3))
    random = np.random.default_rng(RANDOM_SEED).random(len(texts)) < 0.25
    fire(2, pd.Series(random, index=texts.index), range(3, 4))
    fire(3, is_("code"), range(1, 2))
    fire(4, is_("code") | texts["source"].eq("arithmetic"), range(5, 6))
    fire(5, is_("addition"), range(2, 4))
    return pd.DataFrame(rows, columns=["feature", "text_id", "pos", "value"])


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = planted_texts()
    path = tmp_path_factory.mktemp("controls") / "planted.duckdb"
    return write_one_sae_store(path, texts, planted_tokens(texts), planted_acts(texts))


SETTINGS = SpecialistSettings(permutations=100)


@pytest.fixture(scope="module")
def result(store_path: Path):
    with Store.open(store_path) as store:
        return load_specialists(store, SETTINGS)


@pytest.fixture(scope="module")
def baseline(store_path: Path):
    with Store.open(store_path) as store:
        return load_chance_baseline(store, SETTINGS)


def cell(table: pd.DataFrame, feature: int, category: str) -> pd.Series:
    rows = table[(table["feature"] == feature) & (table["category"] == category)]
    assert len(rows) == 1, (feature, category)
    return rows.iloc[0]


def test_families_contrast_within_their_universe() -> None:
    texts = planted_texts()
    families = {family.name: family for family in category_families(texts)}
    assert set(families) == {"bundled", "operation"}
    assert families["bundled"].categories == sorted(PROSE)
    assert len(families["bundled"].universe) == 4 * PER_CATEGORY
    assert families["operation"].kind == "operation"
    assert len(families["operation"].universe) == 2 * PER_CATEGORY
    whole = {family.name: family for family in category_families(texts, "corpus")}
    assert len(whole["bundled"].universe) == len(texts)
    sizes = np.asarray(whole["bundled"].membership.sum(axis=0)).ravel()
    assert sizes.tolist() == [PER_CATEGORY] * 4


def test_the_rare_specialist_is_found_and_replicates(result) -> None:
    row = cell(result.table, 0, "code")
    assert row["is_specialist"] and row["selectivity"] == 1.0
    assert row["n_texts_active"] == 24 and row["n_active"] == 24
    fisher = stats.fisher_exact([[24, 0], [6, 90]], alternative="greater").pvalue
    assert row["p_value"] == pytest.approx(fisher, rel=1e-9)
    assert row["discovered"] and row["replicated"]
    assert not row["token_explained"]  # it fires on varied words, not on one token


def test_the_frequent_general_feature_is_no_specialist(result) -> None:
    rows = result.table[result.table["feature"] == 1]
    assert len(rows) == 6  # tested in every category: it fires on all 30 texts of each
    assert not rows["is_specialist"].any()
    assert rows["selectivity"].abs().max() == pytest.approx(0.0, abs=1e-12)
    features = result.features.set_index("feature")
    assert features.loc[1, "kind"] == "general"


def test_the_random_feature_is_not_significant_and_sits_at_chance(result, baseline) -> None:
    rows = result.table[result.table["feature"] == 2]
    assert not rows["is_specialist"].any()
    assert (rows["q_value"] > 0.05).all()
    chance = baseline.cell_chance()
    random_cells = chance[chance["feature"] == 2]
    assert random_cells["chance"].sum() <= 0.1
    # its chance of being called anywhere is small, and the planted cells are never called
    # by chance: shuffled labels break the plant
    planted = chance[(chance["feature"] == 0)]
    assert planted["chance"].sum() <= 0.05


def test_observed_specialists_beat_the_null_only_where_planted(result, baseline) -> None:
    matrix = observed_vs_chance(category_matrix(result.table, result.categories), baseline)
    by_category = matrix.set_index("category")
    assert by_category.loc["code", "n_specialists"] == 3  # features 0, 3 and 4
    assert by_category.loc["code", "beats_chance"]
    assert (
        by_category.loc["addition", "n_specialists"] == 1
        and by_category.loc["addition", "beats_chance"]
    )
    for category in ("chat", "maths", "prose", "subtraction"):
        assert by_category.loc[category, "n_specialists"] == 0
        assert not by_category.loc[category, "beats_chance"]
    # the null's counts: recomputed from the raw hits with numpy
    hits = baseline.hits[baseline.hits["category"] == "code"]
    per_perm = np.bincount(hits["perm"], minlength=SETTINGS.permutations)
    assert by_category.loc["code", "chance_mean"] == pytest.approx(per_perm.mean())
    assert by_category.loc["code", "chance_p95"] == pytest.approx(np.quantile(per_perm, 0.95))
    b = (per_perm >= 3).sum()
    assert by_category.loc["code", "chance_p"] == pytest.approx((b + 1) / (len(per_perm) + 1))


def test_the_null_is_seeded(store_path: Path, baseline) -> None:
    with Store.open(store_path) as store:
        again = load_chance_baseline(store, SETTINGS)
        other = load_chance_baseline(store, SpecialistSettings(permutations=100, seed=1))
    pd.testing.assert_frame_equal(again.hits, baseline.hits)
    assert baseline.permutations == 100
    assert not other.hits.equals(baseline.hits) or baseline.hits.empty


def test_the_null_by_frequency_band(baseline) -> None:
    bands = pd.DataFrame({"sae": "s0", "feature": range(6), "band": ["rare"] * 3 + ["common"] * 3})
    observed = pd.Series({"rare": 2, "common": 0})
    by_band = baseline.by_band(bands, observed).set_index("band")
    hits = baseline.hits.drop_duplicates(["sae", "feature", "perm"])
    rare = np.bincount(hits.loc[hits["feature"] < 3, "perm"], minlength=100)
    assert by_band.loc["rare", "chance_mean"] == pytest.approx(rare.mean())
    assert by_band.loc["rare", "chance_p95"] == pytest.approx(np.quantile(rare, 0.95))
    assert by_band.loc["rare", "chance_p"] == pytest.approx(((rare >= 2).sum() + 1) / 101)
    assert by_band.loc["rare", "beats_chance"]
    assert by_band.loc["common", "chance_p"] == 1.0 and not by_band.loc["common", "beats_chance"]
    assert "chance_p" not in baseline.by_band(bands).columns


def test_the_token_detector_is_flagged(result) -> None:
    row = cell(result.table, 3, "code")
    assert row["is_specialist"] and row["token"] == f"w{DEF_TOKEN}"
    assert row["token_share"] == 1.0
    # `def` is in exactly the code texts: its presence separates them perfectly
    assert row["token_auroc"] == 1.0 and row["auroc"] == 1.0
    assert row["token_explained"]


def test_token_auroc_equals_scipy_mann_whitney(result) -> None:
    texts = planted_texts()
    tokens = planted_tokens(texts)
    chosen = result.table[result.table["is_specialist"] & result.table["token_share"].notna()]
    assert len(chosen) >= 4
    for row in chosen.itertuples():
        token_id = int(row.token[1:])
        occurrences = tokens[tokens["token_id"] == token_id].groupby("text_id").size()
        frequency = occurrences.reindex(texts["text_id"], fill_value=0).to_numpy() / N_TOKENS
        universe = texts["source"] == ("arithmetic" if row.family == "operation" else "bundled")
        inside = (texts["category"] == row.category)[universe].to_numpy()
        score = frequency[universe.to_numpy()]
        u = stats.mannwhitneyu(score[inside], score[~inside]).statistic
        assert row.token_auroc == pytest.approx(u / (inside.sum() * (~inside).sum()))


def test_the_family_contrast_decides_the_code_and_arithmetic_feature(store_path: Path) -> None:
    with Store.open(store_path) as store:
        within = load_specialists(store, SpecialistSettings())
        whole = load_specialists(store, SpecialistSettings(contrast="corpus"))
    assert cell(within.table, 4, "code")["is_specialist"]
    against_corpus = cell(whole.table, 4, "code")
    assert against_corpus["selectivity"] == pytest.approx((30 / 90 - 30 / 180) / (1 - 30 / 180))
    assert not against_corpus["is_specialist"]


def test_the_operation_specialist(result) -> None:
    row = cell(result.table, 5, "addition")
    assert row["family"] == "operation" and row["is_specialist"]
    assert result.features.set_index("feature").loc[5, "kind"] == "operation"


def test_the_split_is_fixed_and_about_even_per_category() -> None:
    texts = planted_texts()
    half = discovery_half(texts["text_id"])
    assert np.array_equal(half, discovery_half(texts["text_id"].to_numpy()))
    per_category = pd.Series(half).groupby(texts["category"]).sum()
    assert per_category.between(9, 21).all(), per_category.to_dict()
    assert 0.4 < half.mean() < 0.6


def test_replication_rates_count_the_discovery_findings(result) -> None:
    rates = result.replication.set_index("category")
    table = result.table
    found = table[table["discovered"]]
    expected = found.groupby("category")["replicated"].agg(["size", "sum"])
    for category, row in expected.iterrows():
        assert rates.loc[category, "discovered"] == row["size"]
        assert rates.loc[category, "replicated"] == row["sum"]
    assert rates.loc["code", "replication_rate"] == 1.0


def test_findings_export_writes_every_tested_cell(store_path: Path, tmp_path: Path, result) -> None:
    out = tmp_path / "findings.csv"
    assert main(["specialists", str(store_path), "--out", str(out), "--permutations", "20"]) == 0
    written = pd.read_csv(out)
    required = [
        "sae", "layer", "feature", "category", "family", "measure", "score", "support",
        "auroc", "q_value", "chance", "replicated", "token_explained", "is_specialist",
    ]  # fmt: skip
    assert written.columns[: len(required)].tolist() == required
    assert len(written) == len(result.table)
    assert set(written["measure"]) == {"selectivity"}
    chosen = written[written["is_specialist"]]
    assert set(zip(chosen["feature"], chosen["category"], strict=True)) == {
        (0, "code"), (3, "code"), (4, "code"), (5, "addition"),
    }  # fmt: skip
    assert main(["specialists", str(store_path), "--out", str(out)]) == 2  # exists, no --force
    assert (
        main(
            [
                "specialists",
                str(store_path),
                "--out",
                str(out),
                "--force",
                "--measure",
                "auroc",
                "--permutations",
                "20",
            ]
        )  # fmt: skip
        == 0
    )
    assert set(pd.read_csv(out)["measure"]) == {"auroc"}


def test_findings_frame_has_the_chance_of_each_cell(result, baseline) -> None:
    rows = findings(result.table, baseline, "selectivity")
    chance = baseline.cell_chance().set_index(["feature", "category"])["chance"]
    for row in rows.itertuples():
        assert row.chance == chance.get((row.feature, row.category), 0.0)


def test_read_activations_matches_the_planted_text_activations(store_path: Path) -> None:
    texts = planted_texts()
    acts = planted_acts(texts)
    sums = (
        acts.assign(value=acts["value"].astype(np.float32))
        .groupby(["feature", "text_id"])["value"]
        .sum()
    )
    with Store.open(store_path) as store:
        read = read_activations(store)
    matrix = read.matrix.tocoo()
    features = read.features["feature"].to_numpy()[matrix.row]
    text_ids = read.texts["text_id"].to_numpy()[matrix.col]
    got = pd.Series(matrix.data, index=pd.MultiIndex.from_arrays([features, text_ids]))
    expected = (sums / N_TOKENS).astype(np.float32)
    np.testing.assert_allclose(
        got.sort_index().to_numpy(), expected.sort_index().to_numpy(), rtol=1e-6
    )


def test_nothing_tested_gives_empty_tables_not_errors(store_path: Path) -> None:
    settings = SpecialistSettings(min_support=1000, permutations=20)
    with Store.open(store_path) as store:
        result = load_specialists(store, settings)
        baseline = load_chance_baseline(store, settings)
    assert result.table.empty and not result.features["is_specialist"].any()
    assert set(result.features["kind"]) == {"general", "dead"}
    assert observed_vs_chance(category_matrix(result.table, result.categories), baseline).empty
    with Store.open(store_path) as store:
        saes = store.saes()
    matrix = category_matrix(result.table, result.categories, saes)
    assert len(matrix) == len(result.categories)  # one SAE: every category, none tested
    matrix = observed_vs_chance(matrix, baseline)
    assert (matrix["n_specialists"] == 0).all() and not matrix["beats_chance"].any()
    assert findings(result.table, baseline, "selectivity").empty
    assert result.replication.empty
