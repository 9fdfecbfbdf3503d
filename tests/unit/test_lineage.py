"""Feature lineage across SAEs on the planted store of `test_rankings`, plus one planted twin.

SAE `s1` gets feature 2, firing exactly where `s0`'s code specialist (feature 2) fires at three
times its value, so the two correlate at 1 over the tokens. Every correlation is checked
against `numpy.corrcoef` of the dense token x feature matrices built from the planted rows
(zeros included); decoder matches against a direct cosine matrix, with a planted pair of
identical decoder rows across two SAEs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from explorer.analysis.decoder_metrics import decoder_matches
from explorer.analysis.lineage import (
    MATCH_COLUMNS,
    LineageSettings,
    correlation_lineage,
    correlation_topk,
    depth_profile,
    feature_matches,
    top_k,
)
from explorer.errors import InputError
from explorer.store.reader import Store
from tests.unit.test_rankings import make_planted
from tests.unit.test_specialists import Planted, write_planted

TWIN = 2  # s1's feature planted as s0 feature 2 x 3


@pytest.fixture(scope="module")
def planted() -> Planted:
    base = make_planted()
    code = base.acts[(base.acts["sae"] == "s0") & (base.acts["feature"] == 2)]
    twin = code.assign(sae="s1", feature=TWIN, value=code["value"] * 3)
    return replace(base, acts=pd.concat([base.acts, twin], ignore_index=True))


@pytest.fixture(scope="module")
def store(planted: Planted, tmp_path_factory: pytest.TempPathFactory) -> Store:
    path: Path = tmp_path_factory.mktemp("lineage") / "planted.duckdb"
    write_planted(path, planted)
    with Store.open(path) as opened:
        yield opened


def dense(planted: Planted, sae: str, d_sae: int) -> np.ndarray:
    """[tokens, d_sae] activations of `sae` over every planted token (text_id, pos order)."""
    tokens = planted.tokens.sort_values(["text_id", "pos"]).reset_index(drop=True)
    index = pd.Series(tokens.index, index=pd.MultiIndex.from_frame(tokens[["text_id", "pos"]]))
    rows = planted.acts[planted.acts["sae"] == sae]
    matrix = np.zeros((len(tokens), d_sae))
    at = index.loc[list(zip(rows["text_id"], rows["pos"], strict=True))].to_numpy()
    matrix[at, rows["feature"].to_numpy()] = rows["value"].astype(np.float32)
    return matrix


def test_correlations_equal_numpy_over_every_token(store, planted) -> None:
    found = correlation_lineage(store, LineageSettings(k=4))
    assert list(found.columns) == MATCH_COLUMNS
    x0, x1 = dense(planted, "s0", 6), dense(planted, "s1", 4)
    for sae, queries, other, candidates in (("s0", x0, "s1", x1), ("s1", x1, "s0", x0)):
        rows = found[found["sae"] == sae]
        live = [f for f in range(queries.shape[1]) if queries[:, f].std() > 0]
        assert sorted(rows["feature"].unique()) == live  # dead and constant features drop out
        for feature in live:
            expected = np.array(
                [
                    np.corrcoef(queries[:, feature], candidates[:, c])[0, 1]
                    if candidates[:, c].std() > 0
                    else -np.inf
                    for c in range(candidates.shape[1])
                ]
            )
            mine = rows[rows["feature"] == feature].sort_values("rank")
            assert mine["other_sae"].eq(other).all()
            np.testing.assert_allclose(
                mine["similarity"], expected[mine["other_feature"]], atol=1e-9
            )
            assert mine["similarity"].iloc[0] == pytest.approx(expected.max(), abs=1e-9)


def test_planted_twin_correlates_at_one_and_is_the_best_match(store) -> None:
    found = correlation_lineage(store)
    best = found[(found["sae"] == "s0") & (found["feature"] == 2) & (found["rank"] == 1)]
    assert best["other_feature"].tolist() == [TWIN]
    assert best["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-9)
    back = found[(found["sae"] == "s1") & (found["feature"] == TWIN) & (found["rank"] == 1)]
    assert back[["other_feature", "similarity"]].to_numpy().tolist() == [[2, pytest.approx(1.0)]]


def test_feature_always_on_has_no_correlation(store) -> None:
    """s0 feature 1 fires at 0.5 on every token: constant, so Pearson's r is undefined."""
    found = correlation_lineage(store)
    assert not ((found["sae"] == "s0") & (found["feature"] == 1)).any()
    assert not ((found["other_sae"] == "s0") & (found["other_feature"] == 1)).any()


def test_correlation_chunks_give_the_same_answer() -> None:
    from scipy import sparse

    rng = np.random.default_rng(0)
    a = sparse.random(200, 37, density=0.1, random_state=rng, format="csc")
    b = sparse.random(200, 23, density=0.2, random_state=rng, format="csc")
    whole = correlation_topk(a, b, 5, chunk=1024)
    pieces = correlation_topk(a, b, 5, chunk=4)
    np.testing.assert_allclose(whole[0], pieces[0])
    np.testing.assert_array_equal(whole[1], pieces[1])
    expected = np.corrcoef(a.toarray().T, b.toarray().T)[:37, 37:]
    np.testing.assert_allclose(whole[0][:, 0], expected.max(axis=1), atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_top_k_is_the_stable_sorts_first_k_ties_included(seed: int) -> None:
    """Small integer scores tie often, also at the k-th place and across -inf (constant
    candidates), and whole rows are -inf (constant queries): the partition must pick what a
    full stable sort picks."""
    rng = np.random.default_rng(seed)
    for _ in range(60):
        rows, columns, k = (
            int(rng.integers(1, 30)),
            int(rng.integers(1, 50)),
            int(rng.integers(1, 12)),
        )
        scores = rng.integers(-3, 4, (rows, columns)).astype(float)
        scores[rng.random((rows, columns)) < 0.2] = -np.inf
        scores[rng.integers(0, rows)] = -np.inf
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(top_k(scores, k), expected)


def test_identical_decoder_rows_match_at_cosine_one() -> None:
    generator = torch.Generator().manual_seed(1)
    first = torch.randn(40, 16, generator=generator)
    second = torch.randn(30, 16, generator=generator)
    second[11] = 2.5 * first[7]  # the same direction, another norm
    found = decoder_matches({"a": first, "b": second, "wide": torch.randn(5, 8)})
    assert set(found["other_sae"]) == {"a", "b"}  # "wide" reads another width
    best = found[(found["sae"] == "a") & (found["feature"] == 7) & (found["rank"] == 1)]
    assert best["other_feature"].tolist() == [11]
    assert best["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-6)
    unit = torch.nn.functional.normalize
    cosines = (unit(first.double(), dim=1) @ unit(second.double(), dim=1).T).numpy()
    top = found[(found["sae"] == "a") & (found["rank"] == 1)].sort_values("feature")
    np.testing.assert_allclose(top["similarity"], cosines.max(axis=1), atol=1e-6)


def test_feature_matches_and_depth_profile(store) -> None:
    found = correlation_lineage(store)
    mine = feature_matches(found, "s0", 2, k=2)
    assert list(mine.columns) == ["sae", "feature", "rank", "similarity"]
    assert mine["rank"].max() <= 2 and mine["sae"].eq("s1").all()
    cosine = pd.DataFrame({"sae": ["s1"], "feature": [3], "rank": [1], "similarity": [0.4]})
    profile = depth_profile(
        store.saes(), {"decoder cosine": cosine, "activation correlation": mine}
    )
    assert profile[["sae", "layer", "measure", "feature"]].to_numpy().tolist() == [
        ["s1", 1, "activation correlation", TWIN],
        ["s1", 1, "decoder cosine", 3],
    ]


def test_k_out_of_range_is_refused() -> None:
    with pytest.raises(InputError, match="k must be from 1 to 50"):
        LineageSettings(k=0)
