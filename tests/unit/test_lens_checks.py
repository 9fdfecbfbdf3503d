"""Logit lens checks: reverse lookup against a direct torch `W_dec @ W_U`, the consistency
check on a hand-built store with planted answers, the random baseline and diverse selection.

The planted store has one SAE (`s0`, 4 features, d_model 8) over 5 texts of an 8-token
vocabulary, with the unembedding the identity, so a decoder row is its own logit vector.
Feature 0 fires on the token before every `five` and its decoder promotes `five` and `six`
(output-like); feature 1 fires on every `three` and promotes `three` and `four` (input-like);
feature 2 fires on every `one` and promotes `six` and `seven`, which never follow it
(neither); feature 3 never fires. Expected numbers are recomputed here with numpy from the
same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from explorer.analysis.lens_checks import (
    FEW,
    INPUT_LIKE,
    NEITHER,
    OUTPUT_LIKE,
    RANDOM_SERIES,
    SAE_SERIES,
    ConsistencySettings,
    consistency,
    consistency_summary,
    diverse_features,
    example_ranks,
    hit_rate_histogram,
    random_directions,
)
from explorer.analysis.logit_lens import (
    feature_logits,
    resolve_token,
    reverse_lookup,
    token_effects,
)
from explorer.errors import InputError, StoreError
from explorer.sources.source import load_source
from explorer.store.queries.lens import feature_ranking, lens_overview, top_examples_with_next
from explorer.store.reader import Store
from explorer.store.schema import SaeInfo
from explorer.store.writer import StoreWriter
from tests.planted import add_acts_with_stats, add_tokens

VOCAB = ["zero", " one", " two", " three", " four", " five", " six", " seven"]
TEXTS = [
    [1, 2, 3, 0, 4, 5, 1, 2],
    [3, 1, 2, 0, 5, 6, 3, 2],
    [2, 5, 3, 0, 1, 0, 7, 3],
    [1, 5, 0, 3, 2, 1, 2, 4],
    [0, 1, 2, 3, 1, 0, 4, 5],
]
DECODER = torch.tensor(
    [
        [0.0, 0.1, 0.2, 0.0, 0.3, 3.0, 2.0, -1.0],
        [0.1, 0.0, -0.1, 3.0, 2.0, 0.2, -0.5, 0.3],
        [0.2, 0.1, 0.0, -0.3, -0.2, 0.4, 3.0, 2.0],
        [1.0, -1.0, 0.5, 0.0, 0.25, -0.5, 0.0, 0.1],
    ]
)
LENS_K = 3
SAE = "s0"


@dataclass
class Planted:
    tokens: pd.DataFrame  # text_id, pos, token_id, token
    acts: pd.DataFrame  # feature, text_id, pos, value


def planted_rows() -> Planted:
    """Tokens (positions from 1, as after BOS) and the planted firing rules."""
    rows = [
        (text_id, pos, token_id, VOCAB[token_id])
        for text_id, ids in enumerate(TEXTS)
        for pos, token_id in enumerate(ids, start=1)
    ]
    tokens = pd.DataFrame(rows, columns=["text_id", "pos", "token_id", "token"])
    following = tokens.groupby("text_id")["token_id"].shift(-1)
    value = 1.0 + 0.01 * (tokens["text_id"] * 10 + tokens["pos"])
    fires = {0: following == 5, 1: tokens["token_id"] == 3, 2: tokens["token_id"] == 1}
    acts = pd.concat(
        [
            tokens.loc[mask, ["text_id", "pos"]].assign(feature=f, value=value[mask])
            for f, mask in fires.items()
        ],
        ignore_index=True,
    )
    return Planted(tokens=tokens, acts=acts)


def identity_unembed(directions: torch.Tensor) -> torch.Tensor:
    return directions.float() @ torch.eye(len(VOCAB))


def write_lens_store(path: Path, planted: Planted) -> None:
    """The planted store, with the decoder's logit lens (top and bottom LENS_K tokens)."""
    d_sae = DECODER.shape[0]
    with StoreWriter(path, meta={"source": "planted"}) as writer:
        writer.add_sae(
            SaeInfo(sae=SAE, hook_name="blocks.0.hook_resid_post", layer=0, d_in=8, d_sae=d_sae)
        )
        writer.add_texts(
            pd.DataFrame(
                {
                    "text_id": range(len(TEXTS)),
                    "category": "planted",
                    "source": "test",
                    "text": ["".join(VOCAB[i] for i in ids) for ids in TEXTS],
                }
            )
        )
        tokens = planted.tokens
        add_tokens(writer, tokens)
        acts = planted.acts
        add_acts_with_stats(writer, SAE, acts, d_sae)
        logits = identity_unembed(DECODER)
        top, bottom = logits.topk(LENS_K, dim=1), (-logits).topk(LENS_K, dim=1)
        writer.add_logit_lens(
            SAE,
            top_token_ids=top.indices.numpy(),
            top_logits=top.values.numpy(),
            bottom_token_ids=bottom.indices.numpy(),
            bottom_logits=-bottom.values.numpy(),
            vocab=VOCAB,
        )


@pytest.fixture(scope="module")
def planted() -> Planted:
    return planted_rows()


@pytest.fixture(scope="module")
def store(planted: Planted, tmp_path_factory: pytest.TempPathFactory) -> Store:
    path = tmp_path_factory.mktemp("lens") / "lens.duckdb"
    write_lens_store(path, planted)
    with Store.open(path) as opened:
        yield opened


def expected_examples(planted: Planted) -> pd.DataFrame:
    """Each activation with its token and the next one (NaN at a text's end), by feature and
    value (all fit in the stored top examples)."""
    tokens = planted.tokens.assign(
        next_token_id=planted.tokens.groupby("text_id")["token_id"].shift(-1)
    )
    merged = planted.acts.merge(tokens, on=["text_id", "pos"])
    return merged.sort_values(["feature", "value"], ascending=[True, False], ignore_index=True)


def rank_in(row: np.ndarray, token_id: float) -> float:
    """1 + the vocabulary tokens with a strictly larger logit; NaN without a token."""
    return np.nan if np.isnan(token_id) else 1.0 + float((row > row[int(token_id)]).sum())


# --- store reads ---------------------------------------------------------------------------


def test_top_examples_carry_the_activating_and_the_next_token(store, planted) -> None:
    examples = top_examples_with_next(store, SAE)
    expected = expected_examples(planted)
    assert examples["feature"].tolist() == expected["feature"].tolist()
    assert examples["text_id"].tolist() == expected["text_id"].tolist()
    assert examples["pos"].tolist() == expected["pos"].tolist()
    assert examples["token_id"].tolist() == expected["token_id"].tolist()
    np.testing.assert_array_equal(
        examples["next_token_id"].to_numpy(dtype=float),
        expected["next_token_id"].to_numpy(dtype=float),
    )
    at_end = examples[examples["next_token_id"].isna()]
    assert len(at_end) == 1 and at_end.iloc[0][["feature", "text_id", "pos"]].tolist() == [1, 2, 8]
    assert examples.groupby("feature")["rank"].apply(list).to_dict() == {
        f: list(range(1, n + 1)) for f, n in expected.groupby("feature").size().items()
    }


def test_lens_overview_lists_the_stored_tokens_per_feature(store) -> None:
    store.save_label(SAE, 0, "old name")
    store.save_label(SAE, 0, "predicts five")
    overview = lens_overview(store, SAE, 2).set_index("feature")
    logits = identity_unembed(DECODER).numpy()
    for feature in range(DECODER.shape[0]):
        order = np.argsort(-logits[feature], kind="stable")
        assert list(overview.loc[feature, "promoted"]) == [VOCAB[i] for i in order[:2]]
        assert list(overview.loc[feature, "suppressed"]) == [VOCAB[i] for i in order[::-1][:2]]
        assert overview.loc[feature, "max_logit"] == pytest.approx(logits[feature].max())
        assert overview.loc[feature, "min_logit"] == pytest.approx(logits[feature].min())
    assert overview.loc[0, "label"] == "predicts five"
    assert overview["label"].iloc[1:].isna().all()
    assert overview.loc[3, "max_act"] == 0
    with pytest.raises(InputError, match="from 1 to 20"):
        lens_overview(store, SAE, 21)
    with pytest.raises(StoreError, match="Unknown SAE"):
        lens_overview(store, "nope", 5)


def test_feature_rankings_order_best_first(store, planted) -> None:
    by_logit = feature_ranking(store, SAE, "max_logit", 4)
    logits = identity_unembed(DECODER).numpy().max(axis=1)
    expected = sorted(range(4), key=lambda f: (-logits[f], f))
    assert by_logit["feature"].tolist() == expected
    np.testing.assert_allclose(by_logit["score"], logits[expected], rtol=1e-6)
    by_freq = feature_ranking(store, SAE, "token_freq", 4)
    counts = planted.acts.groupby("feature").size()
    assert by_freq["feature"].tolist() == sorted(counts.index, key=lambda f: (-counts[f], f))
    assert feature_ranking(store, SAE, "max_act", 2)["feature"].tolist() == (
        planted.acts.groupby("feature")["value"]
        .max()
        .sort_values(ascending=False)
        .index[:2]
        .tolist()
    )
    with pytest.raises(InputError, match="one of"):
        feature_ranking(store, SAE, "loudness", 2)


# --- consistency ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3])
def test_hit_rates_and_ranks_equal_a_direct_count(store, planted, k) -> None:
    examples = top_examples_with_next(store, SAE)
    table = consistency(
        examples, DECODER, identity_unembed, ConsistencySettings(k=k, min_examples=1)
    )
    assert table["feature"].tolist() == [0, 1, 2]
    logits = identity_unembed(DECODER).numpy()
    baseline = identity_unembed(random_directions(DECODER, 0)).numpy()
    for feature, rows in expected_examples(planted).groupby("feature"):
        row = table.set_index("feature").loc[feature]
        next_ranks = np.array([rank_in(logits[feature], t) for t in rows["next_token_id"]])
        input_ranks = np.array([rank_in(logits[feature], float(t)) for t in rows["token_id"]])
        random_ranks = np.array([rank_in(baseline[feature], t) for t in rows["next_token_id"]])
        present = ~np.isnan(next_ranks)
        assert row["n_examples"] == len(rows) and row["n_next"] == present.sum()
        assert row["hit_rate"] == pytest.approx(np.mean(next_ranks[present] <= k))
        assert row["mean_next_rank"] == pytest.approx(next_ranks[present].mean())
        assert row["input_hit_rate"] == pytest.approx(np.mean(input_ranks <= k))
        assert row["mean_input_rank"] == pytest.approx(input_ranks.mean())
        assert row["random_hit_rate"] == pytest.approx(np.mean(random_ranks[present] <= k))
        assert row["random_mean_rank"] == pytest.approx(random_ranks[present].mean())


def test_planted_features_get_their_kinds(store) -> None:
    examples = top_examples_with_next(store, SAE)
    table = consistency(
        examples, DECODER, identity_unembed, ConsistencySettings(k=2, min_examples=2)
    )
    by_feature = table.set_index("feature")
    assert by_feature["kind"].to_dict() == {0: OUTPUT_LIKE, 1: INPUT_LIKE, 2: NEITHER}
    assert by_feature.loc[0, "hit_rate"] == 1.0 and by_feature.loc[0, "input_hit_rate"] == 0.0
    assert by_feature.loc[1, "input_hit_rate"] == 1.0 and by_feature.loc[1, "hit_rate"] == 0.0
    assert by_feature.loc[2, "hit_rate"] == 0.0 and by_feature.loc[2, "input_hit_rate"] == 0.0
    strict = consistency(
        examples, DECODER, identity_unembed, ConsistencySettings(k=2, min_examples=6)
    )
    few = strict.set_index("feature")["kind"]
    n_next = by_feature["n_next"]
    assert few.to_dict() == {
        f: FEW if n_next[f] < 6 else table.set_index("feature").loc[f, "kind"] for f in few.index
    }
    summary = consistency_summary(table)
    assert summary["n_features"] == 3
    assert summary["mean_hit_rate"] == pytest.approx(table["hit_rate"].mean())
    assert summary[OUTPUT_LIKE] == 1 and summary[INPUT_LIKE] == 1 and summary[NEITHER] == 1
    assert summary["share_beating_random"] == pytest.approx(
        np.mean(table["hit_rate"] > table["random_hit_rate"])
    )


def test_one_features_examples_with_their_ranks(store, planted) -> None:
    examples = top_examples_with_next(store, SAE)
    ranked = example_ranks(examples, DECODER, identity_unembed, 1, 2)
    logits = identity_unembed(DECODER).numpy()[1]
    expected = expected_examples(planted).query("feature == 1")
    np.testing.assert_array_equal(
        ranked["input_rank"], [rank_in(logits, float(t)) for t in expected["token_id"]]
    )
    np.testing.assert_array_equal(
        ranked["next_rank"], [rank_in(logits, t) for t in expected["next_token_id"]]
    )
    assert ranked["next_hit"].tolist() == [r <= 2 for r in ranked["next_rank"]]
    assert example_ranks(examples, DECODER, identity_unembed, 3, 2).empty
    with pytest.raises(InputError, match="out of range"):
        example_ranks(examples, DECODER, identity_unembed, 9, 2)


def test_random_baseline_is_deterministic_for_a_seed(store) -> None:
    first, again, other = (random_directions(DECODER, seed) for seed in (7, 7, 8))
    assert torch.equal(first, again) and not torch.allclose(first, other)
    np.testing.assert_allclose(
        torch.linalg.vector_norm(first, dim=1), torch.linalg.vector_norm(DECODER, dim=1), rtol=1e-6
    )
    examples = top_examples_with_next(store, SAE)
    runs = [
        consistency(examples, DECODER, identity_unembed, ConsistencySettings(k=3, seed=seed))
        for seed in (7, 7)
    ]
    pd.testing.assert_frame_equal(runs[0], runs[1])


def test_hit_rate_histogram_puts_both_series_in_the_same_bins() -> None:
    table = pd.DataFrame(
        {
            "n_next": [3, 3, 3, 3, 0],
            "hit_rate": [0.0, 1.0, 0.5, 1.0, np.nan],
            "random_hit_rate": [0.0, 0.0, 0.25, 0.0, np.nan],
        }
    )
    histogram = hit_rate_histogram(table, bins=4)
    sae = histogram[histogram["series"] == SAE_SERIES]
    random = histogram[histogram["series"] == RANDOM_SERIES]
    assert sae["count"].tolist() == [1, 0, 1, 2]
    assert random["count"].tolist() == [3, 1, 0, 0]
    np.testing.assert_allclose(sae["fraction"], [0.25, 0, 0.25, 0.5])
    np.testing.assert_allclose(sae["low"], [0, 0.25, 0.5, 0.75])
    assert (sae["high"].to_numpy() == random["high"].to_numpy()).all()


# --- reverse lookup ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(tiny_bundle_path):
    return load_source(f"demo:{tiny_bundle_path}")


def test_reverse_lookup_equals_a_direct_w_dec_w_u(loaded) -> None:
    handle = loaded.saes[-1]
    model = loaded.model
    direct = (
        handle.sae.W_dec.detach() * model.ln_final.w.detach()
    ) @ model.W_U.detach()  # [d_sae, d_vocab]
    token_id = int(direct.abs().sum(dim=0).argmax())
    column = direct[:, token_id]
    lookup = reverse_lookup(loaded, handle.name, token_id, n=7)
    promotes = lookup[lookup["direction"] == "promotes"]
    suppresses = lookup[lookup["direction"] == "suppresses"]
    top, bottom = column.topk(7), (-column).topk(7)
    assert promotes["feature"].tolist() == top.indices.tolist()
    assert suppresses["feature"].tolist() == bottom.indices.tolist()
    np.testing.assert_allclose(promotes["logit"], top.values.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(suppresses["logit"], -bottom.values.numpy(), rtol=1e-5, atol=1e-6)
    assert promotes["rank"].tolist() == list(range(1, 8))
    np.testing.assert_allclose(
        token_effects(model, handle.sae.W_dec, token_id).numpy(),
        column.numpy(),
        rtol=1e-5,
        atol=1e-6,
    )
    feature = int(top.indices[0])
    assert feature_logits(loaded, handle.name, feature)[token_id] == pytest.approx(
        float(top.values[0]), rel=1e-5
    )
    with pytest.raises(InputError, match="1 to 500"):
        reverse_lookup(loaded, handle.name, token_id, n=0)
    with pytest.raises(InputError, match="out of range"):
        reverse_lookup(loaded, handle.name, model.cfg.d_vocab, n=3)


def test_tokens_resolve_from_text_or_id(loaded) -> None:
    tokenizer, d_vocab = loaded.tokenizer, loaded.model.cfg.d_vocab
    token_id = next(i for i in range(d_vocab) if len(tokenizer.decode([i]).strip()) >= 3)
    text = tokenizer.decode([token_id])
    by_text = resolve_token(tokenizer, d_vocab, text, "text")
    assert by_text == resolve_token(tokenizer, d_vocab, f" {token_id} ", "id")
    assert by_text.token_id == tokenizer(text, add_special_tokens=False)["input_ids"][0]
    assert by_text.token == text
    several = f"{text}, {text}."
    n_pieces = len(tokenizer(several, add_special_tokens=False)["input_ids"])
    assert n_pieces > 1
    with pytest.raises(InputError, match=f"is {n_pieces} tokens"):
        resolve_token(tokenizer, d_vocab, several, "text")
    with pytest.raises(InputError, match="at most 100 characters"):
        resolve_token(tokenizer, d_vocab, text * 101, "text")
    with pytest.raises(InputError, match="empty"):
        resolve_token(tokenizer, d_vocab, "", "text")
    for bad in (str(d_vocab), "-1", "abc", ""):
        with pytest.raises(InputError, match=f"0 to {d_vocab - 1}"):
            resolve_token(tokenizer, d_vocab, bad, "id")


# --- diverse selection ---------------------------------------------------------------------


def test_diverse_selection_is_greedy_and_below_the_threshold() -> None:
    generator = torch.Generator().manual_seed(3)
    base = torch.randn(12, 16, generator=generator)
    near = base[:6] + 0.3 * torch.randn(6, 16, generator=generator)  # close to rows 0..5
    decoder = torch.cat([base, near])  # [18, 16]
    candidates = [12, 0, 13, 7, 1, 14, 2, 3, 15, 16, 4, 5, 17, 6, 8, 9, 10, 11]
    threshold = 0.7
    selection = diverse_features(decoder, candidates, threshold)
    unit = torch.nn.functional.normalize(decoder, dim=1)
    cosines = (unit @ unit.T).numpy()
    assert selection["feature"].tolist() == candidates
    assert selection["position"].tolist() == list(range(1, len(candidates) + 1))
    chosen = selection.loc[selection["chosen"], "feature"].to_numpy()
    pairwise = cosines[np.ix_(chosen, chosen)]
    assert (pairwise[~np.eye(len(chosen), dtype=bool)] < threshold).all()
    for row in selection.itertuples():
        before = [f for f in chosen if candidates.index(f) < row.position - 1]
        if not before:
            assert row.chosen and np.isnan(row.max_cosine) and row.closest == -1
            continue
        expected = max(cosines[row.feature, f] for f in before)
        assert row.max_cosine == pytest.approx(expected, abs=1e-6)
        assert row.closest == before[int(np.argmax([cosines[row.feature, f] for f in before]))]
        assert row.chosen == (expected < threshold)
    assert 0 < len(chosen) < len(candidates)
    assert diverse_features(decoder, candidates, 1.0)["chosen"].all()
    with pytest.raises(InputError, match="once"):
        diverse_features(decoder, [1, 1], threshold)
    with pytest.raises(InputError, match=r"\(0, 1\]"):
        diverse_features(decoder, [1], 0.0)
