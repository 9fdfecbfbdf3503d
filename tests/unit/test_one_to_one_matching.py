"""One-to-one (Hungarian) matching of decoder directions, its summary beside the best match,
the bound on the features it takes, and the field's metrics of two stores side by side.

Planted decoders give the answers by construction (a permuted copy matches at cosine 1, an
orthogonal pair at 0, a duplicated row shows why one-to-one is lower than the best match);
the assignment is checked against brute force over every permutation (or injection) of
small random decoders, and the summaries against numpy over the same cosines.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from explorer.analysis.decoder_metrics import (
    MAX_ONE_TO_ONE,
    one_to_one_features,
    one_to_one_matching,
    sae_matching,
)
from explorer.analysis.field_metrics import (
    FIELD_METRICS,
    description_medians,
    field_metrics_table,
    matching_comparison,
    share_column,
    stores_side_by_side,
)
from explorer.errors import InputError
from tests.unit.test_compare import QUALITY


def unit_rows(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def brute_force_best_sum(cosines: np.ndarray) -> float:
    """The largest sum of cosines over every injection of the rows into the columns."""
    n_rows, n_columns = cosines.shape
    return max(
        sum(cosines[row, column] for row, column in enumerate(columns))
        for columns in itertools.permutations(range(n_columns), n_rows)
    )


def test_a_permuted_copy_matches_one_to_one_at_cosine_one() -> None:
    generator = torch.Generator().manual_seed(0)
    decoder = torch.randn(12, 8, generator=generator)
    permutation = torch.randperm(12, generator=generator)
    scaled = decoder[permutation] * torch.rand(12, 1, generator=generator).add(0.5)  # norms
    pairs = one_to_one_matching(decoder, scaled)
    assert pairs["feature_a"].tolist() == list(range(12))
    inverse = torch.argsort(permutation)  # row i of `decoder` is row inverse[i] of `scaled`
    assert pairs["feature_b"].tolist() == inverse.tolist()
    assert pairs["cosine"].to_numpy() == pytest.approx(1.0, abs=1e-6)
    assert sae_matching(decoder, scaled)["max_cosine"].mean() == pytest.approx(1.0, abs=1e-6)


def test_an_orthogonal_pair_matches_at_zero() -> None:
    basis = torch.eye(10)
    pairs = one_to_one_matching(basis[:5], basis[5:])
    assert len(pairs) == 5 and pairs["feature_b"].nunique() == 5
    assert pairs["cosine"].to_numpy() == pytest.approx(0.0, abs=1e-7)
    assert sae_matching(basis[:5], basis[5:])["max_cosine"].to_numpy() == pytest.approx(0.0)


def test_a_duplicated_row_is_matched_once_one_to_one_but_twice_by_best_match() -> None:
    """a = (e0, e0, e1): both copies of e0 have e0 of b as their best match (mean max cosine
    1), but one-to-one gives e0 to one copy and the other gets b's remaining row, orthogonal
    to it (mean 2/3)."""
    basis = torch.eye(4)
    decoder_a = basis[[0, 0, 1]]
    decoder_b = basis[[0, 1, 2]]
    matching = sae_matching(decoder_a, decoder_b)
    assert matching["best_match"].tolist() == [0, 0, 1]
    assert matching["max_cosine"].mean() == pytest.approx(1.0)
    pairs = one_to_one_matching(decoder_a, decoder_b)
    assert sorted(pairs["feature_b"]) == [0, 1, 2]
    assert pairs["cosine"].mean() == pytest.approx(2 / 3)
    assert pairs["best_cosine"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    table = matching_comparison(matching, pairs).set_index("measure")
    assert table.loc["best match (max cosine)", "mean_cosine"] == pytest.approx(1.0)
    assert table.loc["one-to-one (Hungarian)", "mean_cosine"] == pytest.approx(2 / 3)
    assert table.loc["one-to-one (Hungarian)", share_column(0.9)] == pytest.approx(2 / 3)


@pytest.mark.parametrize(("n_a", "n_b", "seed"), [(5, 5, 0), (5, 5, 1), (5, 5, 2), (4, 6, 3)])
def test_the_assignment_is_the_best_over_every_permutation(n_a, n_b, seed) -> None:
    generator = np.random.default_rng(seed)
    decoder_a = generator.standard_normal((n_a, 3))
    decoder_b = generator.standard_normal((n_b, 3))
    cosines = unit_rows(decoder_a) @ unit_rows(decoder_b).T
    pairs = one_to_one_matching(torch.tensor(decoder_a), torch.tensor(decoder_b))
    assert len(pairs) == min(n_a, n_b)
    assert pairs["feature_a"].is_unique and pairs["feature_b"].is_unique
    direct = cosines[pairs["feature_a"], pairs["feature_b"]]
    assert pairs["cosine"].to_numpy() == pytest.approx(direct, abs=1e-6)
    assert pairs["cosine"].sum() == pytest.approx(brute_force_best_sum(cosines), abs=1e-5)
    assert pairs["best_cosine"].to_numpy() == pytest.approx(
        cosines.max(axis=1)[pairs["feature_a"]], abs=1e-6
    )


def test_features_named_are_the_only_ones_matched() -> None:
    generator = np.random.default_rng(4)
    decoder_a = generator.standard_normal((9, 4))
    decoder_b = generator.standard_normal((7, 4))
    features_a, features_b = [1, 4, 6, 8], [0, 2, 3, 5, 6]
    pairs = one_to_one_matching(
        torch.tensor(decoder_a), torch.tensor(decoder_b), features_a, features_b
    )
    assert sorted(pairs["feature_a"]) == features_a
    assert set(pairs["feature_b"]) <= set(features_b)
    cosines = unit_rows(decoder_a[features_a]) @ unit_rows(decoder_b[features_b]).T
    assert pairs["cosine"].sum() == pytest.approx(brute_force_best_sum(cosines), abs=1e-5)


def test_the_bound_takes_the_most_frequent_features() -> None:
    frequency = pd.DataFrame({"feature": range(6), "freq_rank": [4, 1, 6, 2, 5, 3]})
    assert one_to_one_features(frequency, limit=6) == [0, 1, 2, 3, 4, 5]
    assert one_to_one_features(frequency, limit=3) == [1, 3, 5]  # ranks 1, 2 and 3
    with pytest.raises(InputError, match=f"at most {MAX_ONE_TO_ONE:,} features"):
        one_to_one_matching(torch.zeros(MAX_ONE_TO_ONE + 1, 2), torch.ones(3, 2))


def test_matching_saes_of_different_widths_is_refused() -> None:
    with pytest.raises(InputError, match="different widths"):
        one_to_one_matching(torch.ones(3, 4), torch.ones(3, 5))


def test_the_comparison_on_a_subset_adds_the_best_match_among_the_same_features() -> None:
    matching = pd.DataFrame({"max_cosine": [0.95, 0.8, 0.6, 0.3]})
    pairs = pd.DataFrame({"cosine": [0.9, 0.5], "best_cosine": [0.95, 0.75]})
    table = matching_comparison(matching, pairs, subset=True)
    assert table["measure"].tolist() == [
        "best match (max cosine)",
        "best match, the one-to-one's features",
        "one-to-one (Hungarian)",
    ]
    assert table["pairs"].tolist() == [4, 2, 2]
    assert table["mean_cosine"].tolist() == pytest.approx([0.6625, 0.85, 0.7])
    assert table["median_cosine"].tolist() == pytest.approx([0.7, 0.85, 0.7])
    assert table[share_column(0.7)].tolist() == pytest.approx([0.5, 1.0, 0.5])
    assert table[share_column(0.9)].tolist() == pytest.approx([0.25, 0.5, 0.5])


def test_description_medians_take_the_scored_features_only() -> None:
    described = pd.DataFrame(
        {
            "scored": [True, True, True, False, None],
            "f1": [0.2, 0.9, 0.5, 0.99, np.nan],
            "balanced_accuracy": [0.6, 0.7, 0.95, 0.99, np.nan],
        }
    )
    medians = description_medians({"s0": described, "s1": described.iloc[3:]})
    assert medians["sae"].tolist() == ["s0", "s1"]
    assert medians["description_f1_median"].iloc[0] == pytest.approx(0.5)
    assert medians["description_balanced_accuracy_median"].iloc[0] == pytest.approx(0.7)
    assert medians.iloc[1, 1:].isna().all()  # no scored feature


def two_store_tables() -> dict[str, pd.DataFrame]:
    saes = pd.DataFrame(
        [{"sae": sae, "layer": layer, **QUALITY[sae]} for layer, sae in enumerate(["s0", "s1"])]
    )
    probing = pd.DataFrame(
        {"sae": ["s0", "s0", "s1", "s1"], "k": [1, 1, 1, 1], "accuracy": [0.6, 0.8, 0.9, 1.0]}
    )
    medians = pd.DataFrame(
        {
            "sae": ["s0", "s1"],
            "description_f1_median": [0.3, 0.4],
            "description_balanced_accuracy_median": [0.7, 0.8],
        }
    )
    other = saes.iloc[:1].assign(l0=[99.0])
    return {
        "A: one.duckdb": field_metrics_table(saes, probing, descriptions=medians),
        "B: two.duckdb": field_metrics_table(other, probing[probing["sae"] == "s0"]),
    }


def test_two_stores_side_by_side_name_each_column_by_store_and_sae() -> None:
    tables = two_store_tables()
    shown = stores_side_by_side(tables).set_index("metric")
    assert list(shown.columns) == [
        "A: one.duckdb · s0",
        "A: one.duckdb · s1",
        "B: two.duckdb · s0",
    ]
    assert shown.loc[FIELD_METRICS["l0"]].tolist() == [3.5, 1.5, 99.0]
    assert shown.loc[FIELD_METRICS["probe_k1"]].tolist() == pytest.approx([0.7, 0.95, 0.7])
    f1 = shown.loc[FIELD_METRICS["description_f1_median"]]
    assert f1.iloc[:2].tolist() == [0.3, 0.4] and np.isnan(f1.iloc[2])  # B has none
