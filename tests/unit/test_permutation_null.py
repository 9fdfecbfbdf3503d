"""The batched permutation null against the plain loop it replaces, on a planted store.

The reference below is the loop `permutation_null` ran before it was batched: one
permutation at a time, one `rng.permutation` per family, each shuffled labelling through
`family_cells` and `score_cells` (the observed table's own path). The batched null must draw
the same permutations and call exactly the same specialists, for every measure and seed.

The planted store: 150 texts, three prose categories of 25 texts (source `bundled`) and
three arithmetic operations of 25 (labelled `op:<operation>` and with two or three `num:`
labels each, so the number family is multi-label); 40 features of one SAE, most firing on a
seeded random share of the texts (from 5% to 60%), some on one category more often, so the
shuffles call specialists under every measure.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from explorer.analysis import controls
from explorer.analysis.controls import load_chance_baseline
from explorer.analysis.families import category_families
from explorer.analysis.specialists import (
    CELL_KEYS,
    SpecialistSettings,
    family_cells,
    gated_q_values,
    passing_q_values,
    prepare_family,
    read_activations,
    score_cells,
    scored_activations,
)
from explorer.store.reader import Store
from tests.planted import two_family_texts, write_one_sae_store

PROSE = ("chat", "code", "prose")
OPERATIONS = ("addition", "division", "subtraction")
PER_CATEGORY = 25
N_TOKENS = 4
D_SAE = 40
SEED = 11
HIT_KEYS = ["perm", "sae", "feature", "family", "category"]
LOOSE = {  # thresholds low enough that shuffled labels give specialists under every measure
    "permutations": 20, "min_support": 3, "fdr": 0.5, "min_selectivity": 0.2,
    "min_auroc": 0.6, "min_enrichment": 1.3, "min_score": 1,
}  # fmt: skip


def planted_texts(rng: np.random.Generator) -> pd.DataFrame:
    def labels(operation: str) -> list[str]:
        numbers = rng.choice(8, size=rng.integers(2, 4), replace=False)
        return [f"op:{operation}", *(f"num:{n}" for n in sorted(numbers))]

    return two_family_texts(PROSE, OPERATIONS, PER_CATEGORY, labels)


def planted_tokens(texts: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"text_id": t, "pos": p, "token_id": 100 + (3 * t + p) % 40, "token": f"w{p}"}
            for t in texts["text_id"]
            for p in range(1, N_TOKENS + 1)
        ]
    )


def planted_acts(texts: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Feature f fires on each text with a seeded chance (5% to 60%), raised for one
    category (f % 6) in half the features; values vary so ranks and strong texts differ."""
    categories = np.asarray([*PROSE, *OPERATIONS])
    rows = []
    for feature in range(D_SAE):
        chance = np.full(len(texts), 0.05 + 0.55 * rng.random())
        if feature % 2:
            chance[texts["category"].to_numpy() == categories[feature % 6]] = 0.9
        fires = rng.random(len(texts)) < chance
        for text_id in texts["text_id"][fires]:
            for pos in rng.choice(np.arange(1, N_TOKENS + 1), size=2, replace=False):
                rows.append((feature, int(text_id), int(pos), float(rng.gamma(2.0, 1.0))))
    return pd.DataFrame(rows, columns=["feature", "text_id", "pos", "value"])


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(SEED)
    texts = planted_texts(rng)
    path = tmp_path_factory.mktemp("null") / "planted.duckdb"
    return write_one_sae_store(
        path, texts, planted_tokens(texts), planted_acts(texts, rng), d_sae=D_SAE
    )


def reference_null(store: Store, settings: SpecialistSettings) -> pd.DataFrame:
    """The plain loop: sae, feature, family, category, perm of every specialist of every
    permutation, one permutation and one family at a time through the observed path."""
    acts = read_activations(store)
    families = category_families(acts.texts, settings.contrast)
    scored_on = scored_activations(store, acts, families, settings)
    prepared = [
        prepare_family(scored_on.get(family.name, acts), family, settings) for family in families
    ]
    rng = np.random.default_rng(settings.seed)
    hits = []
    for perm in range(settings.permutations):
        cells = []
        for family in prepared:
            shuffled = family.membership[rng.permutation(family.membership.shape[0])]
            cells.append(
                family_cells(replace(family, membership=shuffled), acts.features, settings)
            )
        table = score_cells(pd.concat(cells, ignore_index=True), settings)
        hits.append(table.loc[table["is_specialist"], CELL_KEYS].assign(perm=perm))
    return pd.concat(hits, ignore_index=True)


def sorted_hits(hits: pd.DataFrame) -> pd.DataFrame:
    rows = hits[HIT_KEYS].astype({"sae": str, "family": str, "category": str})
    return rows.astype({"perm": np.int64, "feature": np.int64}).sort_values(
        HIT_KEYS, ignore_index=True
    )


MEASURES = ["selectivity", "score", "dominance", "auroc", "enrichment"]


@pytest.mark.parametrize("seed", [0, 5])
@pytest.mark.parametrize("measure", MEASURES)
def test_the_batched_null_calls_the_plain_loops_specialists(
    store_path: Path, measure: str, seed: int
) -> None:
    settings = SpecialistSettings(measure=measure, seed=seed, **LOOSE)
    with Store.open(store_path) as store:
        expected = sorted_hits(reference_null(store, settings))
        baseline = load_chance_baseline(store, settings)
    assert len(expected) > 0  # the shuffles call specialists, so the comparison means something
    assert expected["perm"].nunique() > 1
    pd.testing.assert_frame_equal(sorted_hits(baseline.hits), expected)
    assert baseline.permutations == 20
    assert set(baseline.categories["family"]) == {"bundled", "number", "operation"}


@pytest.mark.parametrize("dense_from", [0.0, 2.0])
@pytest.mark.parametrize("measure", ["score", "dominance", "selectivity"])
def test_batches_blocks_and_both_products_give_the_same_null(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, measure: str, dense_from: float
) -> None:
    """Batches of 6 permutations (the last one short), blocks of a few features, and the
    sparse (DENSE_FROM above 1) or dense (0) product: the same specialists as the loop."""
    settings = SpecialistSettings(measure=measure, seed=3, **LOOSE)
    monkeypatch.setattr(controls, "NULL_BATCH", 6)
    monkeypatch.setattr(controls, "NULL_BLOCK_ENTRIES", 6 * 12 * 7)
    monkeypatch.setattr(controls, "DENSE_FROM", dense_from)
    with Store.open(store_path) as store:
        expected = sorted_hits(reference_null(store, settings))
        baseline = load_chance_baseline(store, settings)
    assert len(expected) > 0
    pd.testing.assert_frame_equal(sorted_hits(baseline.hits), expected)


def test_passing_q_values_are_the_gated_q_values_of_the_passing_cells() -> None:
    rng = np.random.default_rng(0)
    p_value = np.round(rng.random(400) ** 3, 3)  # ties, and some p of exactly 0 and 1
    p_value[:10] = 1.0
    passes = rng.random(400) < 0.3
    gated = gated_q_values(p_value, passes)
    np.testing.assert_array_equal(passing_q_values(p_value[passes], 400), gated[passes])
