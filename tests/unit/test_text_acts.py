"""Text activations: stored and live agree with each other and with a direct model + SAE run;
typed text is bounded; feature ids parse with clear messages; the feature logit lens equals
a direct matmul and the build's stored top tokens."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from explorer.analysis.logit_lens import feature_logits
from explorer.analysis.text_activations import parse_feature_ids, stored_text_activations
from explorer.errors import InputError
from explorer.live.text import encode_text
from explorer.sources.source import LoadedSource, load_source
from explorer.store.reader import Store
from tests.stores import PAYLOADS, build_payload_store

SAE = "L1.resid_post"


@pytest.fixture(scope="module")
def loaded(tiny_bundle_path):
    return load_source(f"demo:{tiny_bundle_path}")


@pytest.fixture(scope="module")
def store(tiny_bundle_path, tmp_path_factory):
    path = build_payload_store(tiny_bundle_path, tmp_path_factory.mktemp("text_acts"))
    with Store.open(path) as opened:
        yield opened


def direct_feature_acts(loaded, sae: str, text: str) -> torch.Tensor:
    handle = loaded.sae(sae)
    tokens = loaded.model.to_tokens(text)
    with torch.inference_mode():
        _, cache = loaded.model.run_with_cache(tokens, names_filter=[handle.hook_name])
        return handle.sae.encode(cache[handle.hook_name])[0, 1:]  # [pos - 1, d_sae], no BOS


def test_live_encoding_equals_the_store_and_a_direct_run(loaded, store):
    payload = store.texts("payload").iloc[0]
    assert payload["text"] == PAYLOADS[0]
    stored = stored_text_activations(store, int(payload["text_id"]), SAE)
    live = encode_text(loaded, SAE, payload["text"])
    assert live.tokens == stored.tokens
    assert len(live.tokens) == payload["n_tokens"]
    features = sorted(set(stored.acts["feature"]))
    np.testing.assert_allclose(live.values(features), stored.values(features), atol=1e-5)
    assert set(live.acts["feature"]) == set(features)
    direct = direct_feature_acts(loaded, SAE, payload["text"])
    np.testing.assert_allclose(live.values(range(128)), direct.numpy(), atol=1e-5)


def test_residual_hooks_run_hook_free_and_other_hooks_through_the_cache(loaded):
    text = "x = 1 + 2"
    live = encode_text(loaded, SAE, text)
    np.testing.assert_allclose(
        live.values(range(128)), direct_feature_acts(loaded, SAE, text).numpy(), atol=1e-5
    )
    handle = loaded.sae(SAE)
    mlp = replace(handle, name="mlp", hook_name=f"blocks.{handle.layer}.hook_mlp_out")
    other = LoadedSource(loaded.source, loaded.model, [mlp])
    on_mlp = encode_text(other, "mlp", text)
    np.testing.assert_allclose(
        on_mlp.values(range(128)), direct_feature_acts(other, "mlp", text).numpy(), atol=1e-5
    )
    assert not np.allclose(on_mlp.values(range(128)), live.values(range(128)))
    # no hook is left behind: only the permanent per-request dispatchers stay
    hooks = [h for point in loaded.model.hook_dict.values() for h in point.fwd_hooks]
    assert hooks and all(h.is_permanent for h in hooks)


def test_values_top_features_and_strongest_features_equal_pandas(store):
    text_id = int(store.texts("python_code")["text_id"].iloc[0])
    stored = stored_text_activations(store, text_id, SAE)
    acts = store.text_acts(text_id, SAE)
    matrix = stored.values([3, 5])
    for column, feature in enumerate([3, 5]):
        mine = acts[acts["feature"] == feature].set_index("pos")["value"]
        expected = mine.reindex(range(1, len(stored.tokens) + 1)).fillna(0)
        np.testing.assert_allclose(matrix[:, column], expected, rtol=1e-6)
    peaks = acts.groupby("feature")["value"].max().reset_index()
    peaks = peaks.sort_values(["value", "feature"], ascending=[False, True])
    assert stored.strongest_features(4) == peaks["feature"].head(4).tolist()
    top = stored.top_features(2)
    for pos, group in top.groupby("pos"):
        expected = acts[acts["pos"] == pos].sort_values(
            ["value", "feature"], ascending=[False, True]
        )
        assert group["feature"].tolist() == expected["feature"].head(2).tolist()
    table = stored.top_features_table(2)
    assert len(table) == len(stored.tokens)
    first = top[(top["pos"] == top["pos"].iloc[0]) & (top["rank"] == 1)].iloc[0]
    row = table[table["pos"] == first["pos"]].iloc[0]
    assert row["feature 1"] == int(first["feature"])
    assert row["value 1"] == pytest.approx(first["value"])


def test_scales_prefer_the_corpus_max_then_the_text_max(store):
    text_id = int(store.texts("python_code")["text_id"].iloc[0])
    stored = stored_text_activations(store, text_id, SAE)
    feature = stored.strongest_features(1)[0]
    text_max = float(stored.acts.loc[stored.acts["feature"] == feature, "value"].max())
    assert stored.scales([feature], {feature: 2.5}) == [2.5]
    assert stored.scales([feature], {}) == [pytest.approx(text_max)]
    silent = next(f for f in range(128) if f not in set(stored.acts["feature"]))
    assert stored.scales([silent], {silent: 0.0}) == [1.0]


def test_typed_text_is_bounded(loaded):
    with pytest.raises(InputError, match="empty"):
        encode_text(loaded, SAE, "   \n")
    with pytest.raises(InputError, match="at most 20"):
        encode_text(loaded, SAE, "a" * 21, max_chars=20)
    n_ctx = loaded.model.cfg.n_ctx
    with pytest.raises(InputError, match=f"at most {n_ctx - 1} after its BOS"):
        encode_text(loaded, SAE, "word " * n_ctx)
    with pytest.raises(Exception, match="No SAE named"):
        encode_text(loaded, "nope", "text")


def test_missing_stored_text_is_a_message(store):
    with pytest.raises(InputError, match="no text 999999"):
        stored_text_activations(store, 999999, SAE)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [("", []), ("3, 40 7", [3, 40, 7]), ("5,5, 6", [5, 6]), (" 127 ", [127])],
)
def test_feature_ids_parse(typed, expected):
    assert parse_feature_ids(typed, 128) == expected


@pytest.mark.parametrize(
    ("typed", "message"),
    [("abc", "'abc' is not one"), ("128", "out of range"), ("-1", "'-1' is out of range")],
)
def test_bad_feature_ids_give_messages(typed, message):
    with pytest.raises(InputError, match=message):
        parse_feature_ids(typed, 128)
    with pytest.raises(InputError, match="at most 2"):
        parse_feature_ids("1 2 3", 128, max_features=2)


def test_feature_logits_equal_a_direct_matmul_and_the_stored_top_tokens(loaded, store):
    handle = loaded.sae(SAE)
    feature = 5
    logits = feature_logits(loaded, SAE, feature)
    with torch.inference_mode():
        direction = handle.sae.W_dec[feature] * loaded.model.ln_final.w
        expected = (direction @ loaded.model.W_U).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    stored = store.logit_lens(SAE, feature)
    top = stored[stored["rank"] > 0]
    bottom = stored[stored["rank"] < 0]
    assert top["token_id"].tolist() == np.argsort(-logits, kind="stable")[: len(top)].tolist()
    assert bottom["token_id"].tolist() == np.argsort(logits, kind="stable")[: len(bottom)].tolist()
    np.testing.assert_allclose(top["logit"], logits[top["token_id"]], rtol=1e-5)
    with pytest.raises(InputError, match="out of range"):
        feature_logits(loaded, SAE, 128)
