"""Extraction: sparse rows and statistics equal a direct per-text torch computation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from explorer.build.extract import BuildSettings, extract
from explorer.corpus import arithmetic_corpus, bundled_corpus, resolve_corpus
from explorer.errors import InputError
from explorer.sources.source import load_source
from explorer.tokenize import token_strings


class ListSink:
    def __init__(self) -> None:
        self.tokens: list[pd.DataFrame] = []
        self.acts: list[pd.DataFrame] = []

    def add_tokens(self, text_id, pos, token_id, token) -> None:
        self.tokens.append(
            pd.DataFrame({"text_id": text_id, "pos": pos, "token_id": token_id, "token": token})
        )

    def add_acts(self, sae, feature, text_id, pos, value, token_id=None) -> None:
        self.acts.append(
            pd.DataFrame(
                {
                    "sae": sae,
                    "feature": feature,
                    "text_id": text_id,
                    "pos": pos,
                    "value": value,
                    "token_id": token_id,
                }
            )
        )


@pytest.fixture(scope="module")
def loaded(tiny_bundle_path):
    return load_source(f"demo:{tiny_bundle_path}")


@pytest.fixture(scope="module")
def corpus():
    bundled = bundled_corpus().head(60)
    return bundled


@pytest.fixture(scope="module")
def extracted(loaded, corpus):
    sink = ListSink()
    result = extract(loaded, corpus, sink, BuildSettings(batch_size=7, topk=5))
    return result, pd.concat(sink.acts, ignore_index=True), pd.concat(sink.tokens)


def direct_acts(loaded, text: str, hook_name: str, sae) -> torch.Tensor:
    """Model then SAE encode on one unpadded text; BOS row dropped. [pos-1, d_sae]"""
    tokens = loaded.model.to_tokens(text, prepend_bos=True)[:, : loaded.model.cfg.n_ctx]
    with torch.inference_mode():
        _, cache = loaded.model.run_with_cache(tokens, names_filter=[hook_name])
        return sae.encode(cache[hook_name])[0, 1:]


def test_rows_equal_direct_encoding_per_text(loaded, corpus, extracted):
    _, acts, tokens = extracted
    rng = np.random.default_rng(0)
    for handle in loaded.saes:
        for text_id in rng.choice(len(corpus), size=6, replace=False):
            text = corpus.texts.loc[text_id, "text"]
            expected = direct_acts(loaded, text, handle.hook_name, handle.sae)
            rows = acts[(acts.sae == handle.name) & (acts.text_id == text_id)]
            got = torch.zeros_like(expected)
            got[rows.pos.to_numpy() - 1, rows.feature.to_numpy()] = torch.tensor(
                rows.value.to_numpy()
            )
            assert torch.equal(got != 0, expected != 0), (handle.name, text_id)
            assert torch.allclose(got, expected, atol=1e-4)
            text_tokens = tokens[tokens.text_id == text_id]
            assert sorted(text_tokens.pos) == list(range(1, expected.shape[0] + 1))


def test_bos_and_padding_never_become_rows(extracted):
    result, acts, tokens = extracted
    assert (acts.pos >= 1).all() and (tokens.pos >= 1).all()
    n_tokens = result.texts.set_index("text_id")["n_tokens"]
    assert (acts.pos.to_numpy() <= n_tokens.loc[acts.text_id].to_numpy()).all()
    assert len(tokens) == n_tokens.sum()
    assert (acts.value > 0).all()


def test_rows_carry_the_token_id_at_their_position(extracted):
    _, acts, tokens = extracted
    joined = acts.merge(tokens, on=["text_id", "pos"], suffixes=("", "_of_tokens"))
    assert len(joined) == len(acts)
    assert (joined.token_id == joined.token_id_of_tokens).all()


def test_feature_stats_equal_pandas_over_rows(extracted, corpus):
    result, acts, tokens = extracted
    for sae, stats in result.feature_stats.items():
        rows = acts[acts.sae == sae]
        by_feature = rows.groupby("feature")
        expected = pd.DataFrame(
            {
                "n_active_tokens": by_feature.size(),
                "n_active_texts": by_feature.text_id.nunique(),
                "mean_active": by_feature.value.mean(),
                "max": by_feature.value.max(),
            }
        )
        got = stats.set_index("feature").loc[expected.index]
        assert (got.n_active_tokens == expected.n_active_tokens).all()
        assert (got.n_active_texts == expected.n_active_texts).all()
        np.testing.assert_allclose(got.mean_active, expected.mean_active, rtol=1e-5)
        np.testing.assert_allclose(got["max"], expected["max"], rtol=1e-6)
        np.testing.assert_allclose(got.token_freq, expected.n_active_tokens / len(tokens))
        np.testing.assert_allclose(got.text_freq, expected.n_active_texts / len(corpus))
        silent = stats[~stats.feature.isin(expected.index)]
        assert (silent.n_active_tokens == 0).all()


def test_running_topk_equals_sorting_all_rows(extracted):
    result, acts, _ = extracted
    for sae, top in result.top_examples.items():
        rows = acts[acts.sae == sae].sort_values(["feature", "value"], ascending=[True, False])
        expected = rows.groupby("feature").head(5)
        merged = top.merge(expected, on=["feature", "text_id", "pos"], how="outer", indicator=True)
        ties = merged[merged._merge != "both"]
        # only exact ties at the cut-off may differ
        assert ties.empty or ties.value_x.fillna(ties.value_y).isin(expected.value).all()
        np.testing.assert_allclose(
            top.groupby("feature").value.max(), rows.groupby("feature").value.max()
        )


def test_logit_lens_equals_direct_matmul(loaded, extracted):
    result, _, _ = extracted
    handle = loaded.saes[-1]
    lens = result.logit_lens[handle.name]
    W = handle.sae.W_dec.detach() * loaded.model.ln_final.w.detach()
    logits = W @ loaded.model.W_U.detach()  # [d_sae, d_vocab]
    k = lens.top_logits.shape[1]
    assert lens.top_logits.shape == (handle.sae.cfg.d_sae, k)
    for feature in (0, 7, handle.sae.cfg.d_sae - 1):
        values, ids = logits[feature].sort(descending=True)
        np.testing.assert_allclose(lens.top_logits[feature], values[:k].numpy(), rtol=1e-5)
        assert lens.top_token_ids[feature].tolist() == ids[:k].tolist()
        np.testing.assert_allclose(
            lens.bottom_logits[feature], values.flip(0)[:k].numpy(), rtol=1e-5
        )
        assert lens.bottom_token_ids[feature].tolist() == ids.flip(0)[:k].tolist()


def test_quality_numbers_are_sane(extracted):
    result, _, _ = extracted
    for quality in result.quality.values():
        assert quality["l0"] == pytest.approx(8, abs=0.01)  # tiny preset: TopK k=8
        assert 0 < quality["explained_variance"] <= 1
        assert 0 <= quality["dead_fraction"] <= 1


def test_compute_only_run_matches_rows_written(loaded, corpus, extracted):
    result, acts, _ = extracted
    compute_only = extract(loaded, corpus, None, BuildSettings(batch_size=16, topk=5))
    for sae, stats in compute_only.feature_stats.items():
        assert stats.n_active_tokens.sum() == (acts.sae == sae).sum() == result.n_rows[sae]


def test_hooks_subset_and_unknown_hook(loaded):
    corpus = arithmetic_corpus(n_texts=10)
    first = loaded.saes[0]
    result = extract(loaded, corpus, None, BuildSettings(hooks=(first.hook_name,)))
    assert [h.name for h in result.saes] == [first.name]
    with pytest.raises(InputError, match="Unknown hook"):
        extract(loaded, corpus, None, BuildSettings(hooks=("blocks.99.hook_resid_post",)))


@pytest.mark.parametrize("settings", [BuildSettings(batch_size=0), BuildSettings(max_texts=0)])
def test_bad_settings_are_refused(loaded, settings):
    with pytest.raises(InputError):
        extract(loaded, arithmetic_corpus(n_texts=5), None, settings)


MULTI_BYTE = ("Voilà une idée très simple: ça marche", "über Straße 🙂 ok", "日本語のテキスト")


@pytest.mark.parametrize("text", [*MULTI_BYTE, "plain ascii"])
def test_token_strings_join_to_the_text_without_replacement_characters(loaded, text):
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    strings = token_strings(loaded.tokenizer, ids)
    assert len(strings) == len(ids)
    assert "".join(strings) == text
    assert "\ufffd" not in "".join(strings)
    if text == "plain ascii":  # nothing to mend: the tokens' own strings
        assert strings == [loaded.tokenizer.decode([i]) for i in ids]


def test_stored_token_strings_join_to_each_text(loaded, tmp_path):
    path = tmp_path / "multi_byte.jsonl"
    path.write_text(
        "".join(json.dumps({"text": t, "category": "x"}) + "\n" for t in MULTI_BYTE), "utf-8"
    )
    sink = ListSink()
    extract(loaded, resolve_corpus(str(path)), sink, BuildSettings(batch_size=2))
    tokens = pd.concat(sink.tokens).sort_values(["text_id", "pos"])
    joined = tokens.groupby("text_id")["token"].agg("".join)
    assert joined.to_dict() == dict(enumerate(MULTI_BYTE))
