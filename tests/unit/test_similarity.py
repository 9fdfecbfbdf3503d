"""Decoder cosine neighbours equal a direct torch computation (full cosine matrix + topk)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from explorer.analysis.similarity import cosine_topk, decoder_neighbours
from explorer.errors import InputError


def direct_neighbours(query: torch.Tensor, candidates: torch.Tensor, k: int, exclude: int | None):
    cosines = F.normalize(query[None].double(), dim=1) @ F.normalize(candidates.double(), dim=1).T
    cosines = cosines[0]
    if exclude is not None:
        cosines[exclude] = -float("inf")
    values, indices = cosines.topk(k)
    return values, indices


@pytest.fixture(scope="module")
def decoders() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "a": torch.randn(300, 16, generator=generator),
        "b": torch.randn(170, 16, generator=generator),
        "wide": torch.randn(50, 24, generator=generator),
    }


@pytest.mark.parametrize("chunk", [7, 64, 8192])
def test_neighbours_in_the_same_and_other_saes_equal_direct_cosines(decoders, chunk):
    features = [0, 17, 299]
    found = decoder_neighbours(decoders, "a", features, k=12, chunk=chunk)
    assert set(found["sae"]) == {"a", "b"}  # "wide" has another d_in
    for query in features:
        for sae, exclude in (("a", query), ("b", None)):
            rows = found[(found["query"] == query) & (found["sae"] == sae)]
            values, indices = direct_neighbours(decoders["a"][query], decoders[sae], 12, exclude)
            assert rows["feature"].tolist() == indices.tolist()
            torch.testing.assert_close(
                torch.tensor(rows["cosine"].to_numpy()), values, atol=1e-5, rtol=0
            )
            assert rows["rank"].tolist() == list(range(1, 13))
        assert (
            query
            not in found[(found["sae"] == "a") & (found["query"] == query)]["feature"].tolist()
        )


def test_own_sae_comes_first_then_the_others_in_order(decoders):
    found = decoder_neighbours(decoders, "b", [3], k=2)
    assert found["sae"].tolist() == ["b", "b", "a", "a"]


def test_equal_cosines_keep_the_lower_index_first():
    candidates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    values, indices = cosine_topk(torch.tensor([[3.0, 0.0]]), candidates, k=4, chunk=2)
    assert indices.tolist() == [[0, 2, 3, 1]]
    torch.testing.assert_close(values, torch.tensor([[1.0, 1.0, 1.0, 0.0]]))


def test_k_larger_than_the_sae_returns_every_other_feature(decoders):
    small = {"s": decoders["a"][:5]}
    found = decoder_neighbours(small, "s", [2], k=50)
    assert sorted(found["feature"]) == [0, 1, 3, 4]


def test_real_bundle_decoders_match_direct_cosines(tiny_bundle):
    decoders = {hook: sae.W_dec.detach() for hook, sae in tiny_bundle.saes.items()}
    first = next(iter(decoders))
    found = decoder_neighbours(decoders, first, [5], k=5, chunk=32)
    for sae, W_dec in decoders.items():
        rows = found[found["sae"] == sae]
        values, indices = direct_neighbours(
            W_dec[5] if sae == first else decoders[first][5], W_dec, 5, 5 if sae == first else None
        )
        assert rows["feature"].tolist() == indices.tolist()
        torch.testing.assert_close(
            torch.tensor(rows["cosine"].to_numpy()), values, atol=1e-5, rtol=0
        )


def test_bad_requests_raise_input_errors(decoders):
    with pytest.raises(InputError, match="Unknown SAE"):
        decoder_neighbours(decoders, "nope", [0])
    with pytest.raises(InputError, match="0 to 299"):
        decoder_neighbours(decoders, "a", [300])
    with pytest.raises(InputError, match="0 to 299"):
        decoder_neighbours(decoders, "a", [-1])
    with pytest.raises(InputError, match="k must be"):
        decoder_neighbours(decoders, "a", [0], k=0)
