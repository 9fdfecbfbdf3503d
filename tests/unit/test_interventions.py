"""Interventions on the tiny bundle: each mode against a direct torch computation, the no-op
settings, per-request hooks under threads, corpus batching against single texts, the ledger
round trip, and bad input."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import torch

from explorer.errors import InputError
from explorer.live.interventions import (
    Intervention,
    apply,
    changed_acts,
    corpus_effects,
    generate,
    parse_positions,
    specialization_test,
    text_effect,
)
from explorer.live.runs import (
    GenerationSettings,
    ledger_table,
    rerun,
    run_corpus,
    run_text,
    same_metrics,
)
from explorer.sources import request_hooks
from explorer.sources.source import load_source
from explorer.store.reader import Store

TEXT = "def add(a, b):\n    return a + b\n\nprint(add(2, 3)) # the sum of 2 and 3 is 5"
TEXTS = (
    "The total of 12 and 30 is 42.",
    "x = [1, 2, 3]\nfor item in x:\n    print(item)",
    "Bonjour, comment allez-vous aujourd'hui ?",
    TEXT,
)


@pytest.fixture(scope="module")
def loaded(tiny_bundle_path):
    return load_source(f"demo:{tiny_bundle_path}")


@pytest.fixture(scope="module")
def handle(loaded):
    return loaded.saes[-1]


@pytest.fixture(scope="module")
def hook_input(loaded, handle) -> torch.Tensor:
    """The activation at the last SAE's hook on TEXT, [1, pos, d_in], read with a cache."""
    tokens = loaded.model.to_tokens(TEXT)
    _, cache = loaded.model.run_with_cache(tokens, names_filter=[handle.hook_name])
    return cache[handle.hook_name]


def live_features(handle, x: torch.Tensor, n: int = 2) -> list[int]:
    """The n features with the most activation on x (so the tests change something)."""
    with torch.no_grad():
        totals = handle.sae.encode(x)[0, 1:].sum(0)
    return totals.topk(n).indices.tolist()


def test_zero_ablation_subtracts_the_features_decoder_contribution(handle, hook_input):
    feature = live_features(handle, hook_input, 1)[0]
    patch = apply(handle, Intervention(handle.name, (feature,), "zero"))
    with torch.no_grad():
        acts = handle.sae.encode(hook_input)  # [1, pos, d_sae]
        expected = hook_input - acts[..., feature, None] * handle.sae.W_dec[feature]
        expected[:, 0] = hook_input[:, 0]  # BOS is never changed
        patched = patch(hook_input)
    assert acts[0, 1:, feature].abs().sum() > 0
    torch.testing.assert_close(patched, expected, atol=1e-5, rtol=0)


def test_the_two_full_decodes_path_equals_the_decoder_rows_path(handle, hook_input, monkeypatch):
    feature, other = live_features(handle, hook_input, 2)
    swap = Intervention(handle.name, (feature, other), "swap", positions=(1, 2, 4))
    with torch.no_grad():
        by_rows = apply(handle, swap)(hook_input)
        # a layer-norm output normalization makes the decoder non-affine: two full decodes
        monkeypatch.setattr(handle.sae.cfg, "normalize_activations", "layer_norm")
        by_decodes = apply(handle, swap)(hook_input)
    assert not torch.equal(by_rows, hook_input)
    torch.testing.assert_close(by_decodes, by_rows, atol=1e-5, rtol=0)


def test_clamp_and_chosen_positions_change_only_those_positions(handle, hook_input):
    feature = live_features(handle, hook_input, 1)[0]
    intervention = Intervention(handle.name, (feature,), "clamp", 3.0, positions=(2, 5))
    with torch.no_grad():
        acts = handle.sae.encode(hook_input)
        patched = apply(handle, intervention)(hook_input)
        delta = (3.0 - acts[0, :, feature])[:, None] * handle.sae.W_dec[feature]  # [pos, d_in]
    changed = (patched - hook_input)[0].abs().sum(-1) > 0
    assert changed.nonzero().flatten().tolist() == [2, 5]
    torch.testing.assert_close((patched - hook_input)[0, [2, 5]], delta[[2, 5]], atol=1e-5, rtol=0)


def test_scale_one_and_steering_zero_change_nothing(loaded, handle, hook_input):
    feature = live_features(handle, hook_input, 1)[0]
    for intervention in (
        Intervention(handle.name, (feature,), "scale", 1.0),
        Intervention(handle.name, (feature,), "steer", 0.0),
    ):
        with torch.no_grad():
            torch.testing.assert_close(
                apply(handle, intervention)(hook_input), hook_input, atol=1e-6, rtol=0
            )
        effect = text_effect(loaded, intervention, TEXT)
        assert np.abs(effect.delta_loss).max() < 1e-5
        assert effect.kl.max() < 1e-6


def test_swapping_twice_restores_the_activations_and_once_exchanges_contributions(
    handle, hook_input
):
    first, second = live_features(handle, hook_input, 2)
    swap = Intervention(handle.name, (first, second), "swap")
    with torch.no_grad():
        acts = handle.sae.encode(hook_input)
        mask = torch.ones(acts.shape[1], dtype=torch.bool)
        once = changed_acts(acts, swap, mask)
        torch.testing.assert_close(changed_acts(once, swap, mask), acts, atol=0, rtol=0)
        assert torch.equal(once[..., first], acts[..., second])
        patched = apply(handle, swap)(hook_input)
        w = handle.sae.W_dec
        a, b = acts[..., first, None], acts[..., second, None]
        expected = hook_input + (b - a) * w[first] + (a - b) * w[second]
        expected[:, 0] = hook_input[:, 0]
    torch.testing.assert_close(patched, expected, atol=1e-5, rtol=0)


def test_steering_adds_the_decoder_direction(handle, hook_input):
    feature = live_features(handle, hook_input, 1)[0]
    with torch.no_grad():
        patched = apply(handle, Intervention(handle.name, (feature,), "steer", 4.0))(hook_input)
        expected = hook_input + 4.0 * handle.sae.W_dec[feature]
        expected[:, 0] = hook_input[:, 0]
    torch.testing.assert_close(patched, expected, atol=1e-5, rtol=0)


def test_text_effect_matches_a_direct_forward_with_the_patched_activation(loaded, handle):
    tokens = loaded.model.to_tokens(TEXT)
    _, cache = loaded.model.run_with_cache(tokens, names_filter=[handle.hook_name])
    feature = live_features(handle, cache[handle.hook_name], 1)[0]
    intervention = Intervention(handle.name, (feature,), "scale", 5.0)
    effect = text_effect(loaded, intervention, TEXT)
    with torch.no_grad():
        replacement = apply(handle, intervention)(cache[handle.hook_name])
        patched_logits = loaded.model.run_with_hooks(
            tokens, fwd_hooks=[(handle.hook_name, lambda value, hook: replacement)]
        )
        clean_logits = loaded.model(tokens)
    lp, clean_lp = patched_logits[0].log_softmax(-1), clean_logits[0].log_softmax(-1)
    target = tokens[0, 1:]
    expected_loss = -lp[:-1].gather(-1, target[:, None])[:, 0]
    np.testing.assert_allclose(effect.patched_loss, expected_loss.numpy(), atol=1e-5)
    expected_kl = (clean_lp.exp() * (clean_lp - lp)).sum(-1)[1:]
    np.testing.assert_allclose(effect.kl, expected_kl.clamp(min=0).numpy(), atol=1e-5)
    assert effect.top_next["clean_prob"].iloc[0] == pytest.approx(
        float(clean_lp[-1].exp().max()), abs=1e-6
    )
    assert len(effect.tokens) == tokens.shape[1] - 1
    assert effect.feature_after[:, 0] == pytest.approx(effect.feature_before[:, 0] * 5.0, abs=1e-5)


def test_threads_with_different_interventions_each_get_their_own_result(loaded, handle):
    first, second = 3, 7
    settings = [
        Intervention(handle.name, (first,), "steer", 8.0),
        Intervention(handle.name, (second,), "clamp", 6.0),
        Intervention(handle.name, (first, second), "swap"),
        Intervention(handle.name, (first,), "scale", 1.0),
    ] * 4
    texts = [TEXTS[i % len(TEXTS)] for i in range(len(settings))]
    alone = [text_effect(loaded, s, t).patched_loss for s, t in zip(settings, texts, strict=True)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = [
            pool.submit(text_effect, loaded, s, t) for s, t in zip(settings, texts, strict=True)
        ]
        together = [run.result().patched_loss for run in runs]
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_request_hook_is_invisible_to_another_threads_forward(loaded, handle):
    tokens = loaded.model.to_tokens(TEXT)
    clean = loaded.model(tokens)
    inside, release = threading.Event(), threading.Event()

    def blocking_patch(x: torch.Tensor) -> torch.Tensor:
        inside.set()
        release.wait(30)
        return x * 0

    def hooked_forward() -> torch.Tensor:
        with request_hooks.using({handle.hook_name: blocking_patch}):
            return loaded.model(tokens)

    with ThreadPoolExecutor(max_workers=1) as pool:
        hooked = pool.submit(hooked_forward)
        assert inside.wait(30)  # the other thread is inside its hooked forward now
        meanwhile = loaded.model(tokens)
        release.set()
        assert not torch.allclose(hooked.result(), clean)
    torch.testing.assert_close(meanwhile, clean, atol=0, rtol=0)


def test_corpus_effects_in_padded_batches_equal_each_text_alone(loaded, handle):
    texts = pd.DataFrame(
        {"text_id": range(len(TEXTS)), "category": ["a", "b", "b", "c"], "text": TEXTS}
    )
    feature = 5
    settings = [
        Intervention(handle.name, (feature,), "steer", 6.0),
        Intervention(handle.name, (feature,), "scale", 1.0),
    ]
    effects = corpus_effects(loaded, texts, settings, batch_size=3)
    assert len(effects) == 2 * len(TEXTS)
    for row in effects[effects["setting"] == 0].itertuples():
        alone = text_effect(loaded, settings[0], TEXTS[row.text_id])
        assert row.clean_loss == pytest.approx(float(alone.clean_loss.mean()), abs=1e-5)
        assert row.patched_loss == pytest.approx(float(alone.patched_loss.mean()), abs=1e-5)
        assert row.n_tokens == len(alone.tokens)
    assert effects.loc[effects["setting"] == 1, "delta_loss"].abs().max() < 1e-5


def test_specialization_test_finds_the_hurt_category():
    rng = np.random.default_rng(0)
    effects = pd.DataFrame(
        {
            "setting": 0,
            "category": ["target"] * 20 + ["other"] * 60,
            "delta_loss": np.r_[0.5 + 0.1 * rng.standard_normal(20), np.zeros(60)],
        }
    )
    hurt = specialization_test(effects, "target")
    assert hurt["difference"] == pytest.approx(effects["delta_loss"][:20].mean())
    assert hurt["p_value"] < 1e-6 and hurt["n_in"] == 20 and hurt["n_out"] == 60
    assert specialization_test(effects, "other")["p_value"] > 0.5
    with pytest.raises(InputError, match="two texts"):
        specialization_test(effects, "missing")


def test_generation_is_seeded_and_steering_changes_it(loaded, handle):
    greedy = generate(loaded, "The total of", None, max_new_tokens=8)
    assert greedy == generate(loaded, "The total of", None, max_new_tokens=8)
    sampled = [
        generate(loaded, "The total of", None, max_new_tokens=8, sampling="sample", seed=s)
        for s in (1, 1, 2)
    ]
    assert sampled[0] == sampled[1]
    steer = Intervention(handle.name, (live_features_of(loaded, handle),), "steer", 50.0)
    assert generate(loaded, "The total of", steer, max_new_tokens=8) != greedy


def live_features_of(loaded, handle) -> int:
    tokens = loaded.model.to_tokens(TEXT)
    _, cache = loaded.model.run_with_cache(tokens, names_filter=[handle.hook_name])
    return live_features(handle, cache[handle.hook_name], 1)[0]


def test_bad_input_gets_a_message(loaded, handle):
    d_sae = handle.sae.cfg.d_sae
    with pytest.raises(InputError, match="out of range"):
        text_effect(loaded, Intervention(handle.name, (d_sae,), "zero"), TEXT)
    with pytest.raises(InputError, match="empty"):
        text_effect(loaded, Intervention(handle.name, (1,), "zero"), "   ")
    with pytest.raises(InputError, match="reads at most"):
        text_effect(loaded, Intervention(handle.name, (1,), "zero"), "word " * 400)
    with pytest.raises(InputError, match="past the text"):
        text_effect(loaded, Intervention(handle.name, (1,), "zero", positions=(500,)), TEXT)
    with pytest.raises(InputError, match="exactly two"):
        Intervention(handle.name, (1,), "swap")
    with pytest.raises(InputError, match="between"):
        Intervention(handle.name, (1,), "scale", float("nan"))
    with pytest.raises(InputError, match="at least one"):
        Intervention(handle.name, (), "zero")
    with pytest.raises(InputError, match="Unknown mode"):
        Intervention(handle.name, (1,), "explode")
    with pytest.raises(InputError, match="position"):
        parse_positions("0, 2")
    assert parse_positions(" 3, 5 3 ") == (3, 5) and parse_positions("") is None
    with pytest.raises(InputError, match="Generate 1 to"):
        generate(loaded, TEXT, None, max_new_tokens=0)


@pytest.mark.slow
def test_ledger_entries_rerun_to_the_same_numbers(loaded, handle, tiny_bundle_path, tmp_path):
    from explorer.build.single import build_store

    path = tmp_path / "ledger.duckdb"
    build_store(f"demo:{tiny_bundle_path}", "bundled", path)
    intervention = Intervention(handle.name, (2, 9), "swap", positions=(1, 3))
    with Store.open(path) as store:
        text_run = run_text(loaded, intervention, TEXT, GenerationSettings(6, "sample", 4))
        text_id = store.save_intervention(handle.name, text_run.settings(), text_run.metrics())
        corpus_run = run_corpus(
            loaded, store.texts(), Intervention(handle.name, (4,), "zero"),
            target="python_code", scales=(0.0, 1.0),
        )  # fmt: skip
        corpus_id = store.save_intervention(
            handle.name, corpus_run.settings(), corpus_run.metrics()
        )
        ledger = store.interventions()
        assert Intervention.from_json(text_run.settings()["intervention"]) == intervention
        for entry_id in (text_id, corpus_id):
            entry = ledger[ledger["id"] == entry_id].iloc[0]
            recorded = json.loads(entry["metrics"])
            assert same_metrics(rerun(loaded, store, json.loads(entry["settings"])), recorded)
        listing = ledger_table(ledger)
    assert listing["id"].tolist() == [corpus_id, text_id]
    assert listing["kind"].tolist() == ["corpus", "text"]
    assert listing["feature"].tolist() == [4, 2]
    dose = corpus_run.dose_response()
    scale_one = dose[dose["scale"] == 1.0]["mean_delta_loss"]
    assert scale_one.abs().max() < 1e-5
    zero = corpus_run.summary[corpus_run.summary["setting"] == 0].set_index("category")
    zero_dose = dose[dose["scale"] == 0.0].set_index("category")
    pd.testing.assert_series_equal(
        zero["mean_delta_loss"], zero_dose["mean_delta_loss"], check_names=False, atol=1e-6
    )
    assert not same_metrics({"a": 1.0}, {"a": 1.1}) and same_metrics({"a": [1.0]}, {"a": [1.0]})
