"""The field's SAE metrics: k-sparse probing on the planted store of `test_rankings` (s0
feature 2 fires on every code text and nowhere else, s1 feature 0 on every prose text),
redundancy and cross-SAE matching of planted decoders, and the per-SAE table.

Probing is checked against the planted answer (a specialist separates its category at k = 1)
and its parts against independent computations: the feature order against pandas means of
the planted text activations, the probe's fit against statsmodels' weighted logistic GLM,
balanced accuracy against counts. Decoder measures against a direct cosine matrix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import torch
from scipy import sparse

from explorer.analysis.decoder_metrics import match_heatmap, redundancy, sae_matching
from explorer.analysis.field_metrics import (
    MATCH_THRESHOLD,
    ProbingSettings,
    balanced_accuracy,
    feature_order,
    field_metrics_table,
    fit_probe,
    match_summary,
    probing_by_category,
    probing_split,
    sparse_probing,
)
from explorer.errors import InputError
from explorer.store.reader import Store
from tests.unit.test_compare import QUALITY
from tests.unit.test_rankings import make_planted
from tests.unit.test_specialists import Planted, text_activations, write_planted


@pytest.fixture(scope="module")
def planted() -> Planted:
    return make_planted()


@pytest.fixture(scope="module")
def store(planted: Planted, tmp_path_factory: pytest.TempPathFactory) -> Store:
    path: Path = tmp_path_factory.mktemp("field") / "planted.duckdb"
    write_planted(path, planted)
    with Store.open(path) as opened:
        yield opened


@pytest.fixture(scope="module")
def probing(store) -> pd.DataFrame:
    return sparse_probing(store)


def test_planted_specialists_probe_their_category_perfectly_at_k1(probing) -> None:
    for sae, category, feature in (("s0", "code", 2), ("s1", "prose", 0)):
        row = probing[(probing["sae"] == sae) & (probing["category"] == category)]
        k1 = row[row["k"] == 1].iloc[0]
        assert k1["features"] == [feature]
        assert k1["accuracy"] == 1.0 and k1["train_accuracy"] == 1.0
    assert set(probing["k"]) == {1, 2, 5}
    assert probing["accuracy"].between(0, 1).all()


@pytest.mark.parametrize("selection", ["standardized", "mean_difference"])
def test_feature_order_follows_the_difference_on_the_training_half(planted, selection) -> None:
    texts = planted.texts.sort_values("text_id").reset_index(drop=True)
    train = probing_split(texts["category"])
    activations = pd.DataFrame(
        {f: text_activations(planted, "s0", f).to_numpy() for f in range(6)}
    ).astype(np.float64)
    x = sparse.csr_matrix(activations.to_numpy())
    for category in ("code", "prose", "maths"):
        y = (texts["category"] == category).to_numpy()[train]
        inside, outside = activations[train][y], activations[train][~y]
        difference = (inside.mean() - outside.mean()).abs()
        if selection == "standardized":  # population variances, pooled with equal weights
            pooled = np.sqrt((inside.var(ddof=0) + outside.var(ddof=0)) / 2)
            difference = (difference / pooled).where(pooled > 1e-12, 0.0)
        order = feature_order(x[train], y, selection)
        assert sorted(order) == list(range(6))
        assert np.all(np.diff(difference.to_numpy()[order]) <= 1e-9)  # by the oracle's values
    assert feature_order(x[train], texts["category"].eq("code").to_numpy()[train])[0] == 2


def test_split_alternates_within_each_category() -> None:
    categories = pd.Series(["a", "b", "a", "a", "b", "c"])
    assert probing_split(categories).tolist() == [True, True, False, True, False, True]


def test_probe_fit_equals_statsmodels_weighted_logistic_regression() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = x @ [1.0, -2.0, 0.5] + rng.logistic(size=300) > 1.0  # overlapping classes
    weights, bias = fit_probe(x, y, l2=0.0)
    class_weight = np.where(y, 0.5 / y.sum(), 0.5 / (~y).sum()) * len(y)
    family = sm.families.Binomial()
    glm = sm.GLM(y.astype(float), sm.add_constant(x), family=family, var_weights=class_weight)
    glm = glm.fit()
    np.testing.assert_allclose(weights, glm.params[1:], rtol=1e-4, atol=1e-4)
    assert bias == pytest.approx(glm.params[0], abs=1e-4)


def test_balanced_accuracy_counts_each_class_alike() -> None:
    y = np.array([True, True, False, False, False, False])
    predicted = np.array([True, False, False, False, False, True])
    assert balanced_accuracy(y, predicted) == pytest.approx(0.5 * (1 / 2 + 3 / 4))


def test_probing_by_category_names_the_best_sae(probing) -> None:
    table = probing_by_category(probing, 1)
    assert list(table.columns[:3]) == ["category", "s0", "s1"]  # SAEs by layer
    code = table.set_index("category").loc["code"]
    assert code["best_sae"] == "s0" and code["best_accuracy"] == 1.0
    assert table.set_index("category").loc["prose", "best_sae"] == "s1"


def test_orthogonal_decoder_has_no_redundancy() -> None:
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(2)))
    table = redundancy({"ortho": q * 3.0})
    np.testing.assert_allclose(table["max_cosine"], 0.0, atol=1e-6)
    summary = match_summary(table, "max_cosine").iloc[0]
    assert summary["mean_max_cosine"] == pytest.approx(0.0, abs=1e-6)
    assert summary["share_max_cosine_above"] == 0.0


def test_duplicated_decoder_rows_are_redundant_at_one() -> None:
    decoder = torch.randn(20, 8, generator=torch.Generator().manual_seed(3))
    decoder[13] = decoder[4] * 0.5
    table = redundancy({"dup": decoder}).set_index("feature")
    assert table.loc[4, "nearest"] == 13 and table.loc[13, "nearest"] == 4
    assert table.loc[[4, 13], "max_cosine"].tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    unit = torch.nn.functional.normalize(decoder.double(), dim=1)
    cosines = (unit @ unit.T).fill_diagonal_(-2).numpy()
    np.testing.assert_allclose(table["max_cosine"], cosines.max(axis=1), atol=1e-6)


def test_matching_a_permuted_copy_is_fully_consistent() -> None:
    generator = torch.Generator().manual_seed(4)
    first = torch.randn(50, 16, generator=generator)
    permutation = torch.randperm(50, generator=generator)
    second = first[permutation] * 2
    matching = sae_matching(first, second)
    assert matching["max_cosine"].to_numpy() == pytest.approx(np.ones(50), abs=1e-6)
    np.testing.assert_array_equal(permutation.numpy()[matching["best_match"]], np.arange(50))
    summary = match_summary(matching.assign(sae="a"), "max_cosine").iloc[0]
    assert summary["mean_max_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert summary["share_max_cosine_above"] == 1.0 >= MATCH_THRESHOLD


def test_match_heatmap_holds_direct_cosines() -> None:
    generator = torch.Generator().manual_seed(5)
    first, second = torch.randn(30, 8, generator=generator), torch.randn(40, 8, generator=generator)
    matching = sae_matching(first, second)
    heat = match_heatmap(first, second, [3, 0, 7], matching)
    best = matching.set_index("feature").loc[[3, 0, 7], "best_match"]
    assert list(dict.fromkeys(heat["feature_b"])) == list(dict.fromkeys(best))
    unit = torch.nn.functional.normalize
    cosines = (unit(first.double(), dim=1) @ unit(second.double(), dim=1).T).numpy()
    expected = cosines[heat["feature_a"], heat["feature_b"]]
    np.testing.assert_allclose(heat["cosine"], expected, atol=1e-6)


def test_matching_saes_of_different_widths_is_refused() -> None:
    with pytest.raises(InputError, match="different widths"):
        sae_matching(torch.randn(4, 8), torch.randn(4, 6))


def test_field_metrics_table_joins_quality_probing_and_redundancy(store, probing) -> None:
    decoders = {"s0": torch.eye(6, 8), "s1": torch.randn(4, 8)}
    table = field_metrics_table(store.saes(), probing, redundancy(decoders))
    assert table["sae"].tolist() == ["s0", "s1"]  # by layer
    assert table.set_index("sae").loc["s0", "mean_max_cosine"] == pytest.approx(0.0, abs=1e-6)
    means = probing[probing["k"] == 2].groupby("sae")["accuracy"].mean()
    assert table.set_index("sae")["probe_k2"].to_dict() == pytest.approx(means.to_dict())
    assert "quality_texts" not in table and "ce_loss_recovered" in table
    assert set(QUALITY["s0"]) - {"quality_texts"} <= set(table.columns)


def test_bad_probing_settings_are_refused() -> None:
    with pytest.raises(InputError, match="Each k"):
        ProbingSettings(ks=(0,))
    with pytest.raises(InputError, match="selection"):
        ProbingSettings(selection="t-test")
    with pytest.raises(InputError, match="pooling"):
        ProbingSettings(pooling="median")
