"""SAE quality: spliced forwards equal hooked forwards; CE loss recovered, KL divergence and the
L2 ratio from first principles; the category-stratified sample on planted categories; a built
store's quality columns against a text-by-text `run_with_hooks` over that sample."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from explorer.build.extract import BuildSettings, quality_sample
from explorer.build.quality import (
    DENSE_FREQ,
    SpliceLosses,
    ce_losses,
    dense_fraction,
    recovered,
    sae_quality,
    spliced_logits,
    stratified_sample,
)
from explorer.build.single import build_store
from explorer.corpus import resolve_corpus
from explorer.sources.source import load_source
from explorer.store.reader import Store

TEXTS = ["def add(a, b):\n    return a + b", "20*3=60 | 60+5=65", "Guten Morgen, wie geht's?"]


@pytest.fixture(scope="module")
def loaded(tiny_bundle_path):
    return load_source(f"demo:{tiny_bundle_path}")


@pytest.fixture(scope="module")
def batch(loaded):
    tokens = loaded.model.to_tokens(TEXTS)  # right-padded with BOS
    lengths = torch.tensor([len(loaded.model.to_tokens(text)[0]) for text in TEXTS])
    positions = torch.arange(tokens.shape[1])
    real = (positions[None] < lengths[:, None]) & (positions[None] > 0)
    return tokens, real


def hooked_loss(model, tokens, real, hook_name, replacement) -> float:
    logits = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, lambda v, hook: replacement)])
    log_probs = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    mask = real[:, 1:]
    return float(-(log_probs * mask).sum() / mask.sum())


@torch.inference_mode()
def test_resumed_forward_equals_the_hooked_forward(loaded, batch):
    tokens, _ = batch
    logits, cache = loaded.model.run_with_cache(tokens)
    for handle in loaded.saes:
        acts = cache[handle.hook_name]
        assert torch.equal(spliced_logits(loaded.model, tokens, handle.hook_name, acts), logits)
        recon = handle.sae.decode(handle.sae.encode(acts))
        hooked = loaded.model.run_with_hooks(
            tokens, fwd_hooks=[(handle.hook_name, lambda v, hook, r=recon: r)]
        )
        spliced = spliced_logits(loaded.model, tokens, handle.hook_name, recon)
        assert torch.allclose(spliced, hooked, atol=1e-5)


@torch.inference_mode()
def test_ce_losses_equal_hooked_losses_at_real_tokens(loaded, batch):
    tokens, real = batch
    saes = {handle.hook_name: handle.sae for handle in loaded.saes}
    losses = ce_losses(loaded.model, saes, tokens, real)
    _, cache = loaded.model.run_with_cache(tokens)
    for hook_name, sae in saes.items():
        acts = cache[hook_name]
        recon = torch.where(real[..., None], sae.decode(sae.encode(acts)), acts)
        zeroed = torch.where(real[..., None], torch.zeros_like(acts), acts)
        measured = losses[hook_name]
        clean, with_sae, zero = measured.clean_loss, measured.sae_loss, measured.zero_loss
        assert clean == pytest.approx(hooked_loss(loaded.model, tokens, real, hook_name, acts))
        assert with_sae == pytest.approx(
            hooked_loss(loaded.model, tokens, real, hook_name, recon), rel=1e-5
        )
        assert zero == pytest.approx(
            hooked_loss(loaded.model, tokens, real, hook_name, zeroed), rel=1e-5
        )
        assert recovered(clean, with_sae, zero) == pytest.approx((zero - with_sae) / (zero - clean))
        assert measured.ce_loss_recovered == recovered(clean, with_sae, zero)
        # KL(clean || with the SAE) at the predicting positions, from the hooked logits
        clean_lp = loaded.model(tokens)[:, :-1].double().log_softmax(-1)
        sae_lp = (
            loaded.model.run_with_hooks(
                tokens, fwd_hooks=[(hook_name, lambda v, hook, r=recon: r)]
            )[:, :-1]
            .double()
            .log_softmax(-1)
        )
        kl = torch.nn.functional.kl_div(sae_lp, clean_lp, log_target=True, reduction="none")
        mask = real[:, 1:]
        assert measured.kl_divergence == pytest.approx(
            float(kl.sum(-1)[mask].mean()), rel=1e-4, abs=1e-7
        )
        ratios = [
            float(torch.linalg.vector_norm(recon[b, p]) / torch.linalg.vector_norm(acts[b, p]))
            for b, p in zip(*torch.nonzero(real, as_tuple=True), strict=True)
        ]
        assert measured.l2_ratio == pytest.approx(np.mean(ratios), rel=1e-5)
        assert (measured.n_targets, measured.n_tokens) == (int(mask.sum()), int(real.sum()))


def test_sae_quality_matches_ce_losses_and_reports_l0(loaded, batch):
    tokens, real = batch
    handle = loaded.saes[0]
    quality = sae_quality(loaded.model, handle.sae, handle.hook_name, tokens, real)
    losses = ce_losses(loaded.model, {handle.hook_name: handle.sae}, tokens, real)
    assert quality.ce_loss_recovered == pytest.approx(
        losses[handle.hook_name].ce_loss_recovered, rel=1e-6
    )
    assert quality.l0 == pytest.approx(handle.sae.cfg.k)
    assert quality.n_tokens == int(real.sum())


# --- the stratified sample ------------------------------------------------------------------


def test_stratified_sample_takes_up_to_n_texts_of_every_category() -> None:
    categories = ["code"] * 40 + ["urls"] * 5 + ["maths"] * 200 + ["code"] * 3
    sample = stratified_sample(categories, per_category=10, seed=3)
    assert Counter(categories[i] for i in sample) == {"code": 10, "urls": 5, "maths": 10}
    assert sample.tolist() == sorted(set(sample.tolist()))  # corpus order, no repeats
    assert np.array_equal(sample, stratified_sample(categories, per_category=10, seed=3))
    assert not np.array_equal(sample, stratified_sample(categories, per_category=10, seed=4))
    # the last three "code" texts are as likely as the first ones: not the first n of each
    draws = np.concatenate([stratified_sample(categories, 10, seed) for seed in range(400)])
    hits = np.bincount(draws, minlength=len(categories))
    code = [i for i, c in enumerate(categories) if c == "code"]
    assert hits[code].sum() == 4000
    np.testing.assert_allclose(hits[code] / 400, 10 / 43, atol=0.08)
    assert stratified_sample([], 5, 0).tolist() == []


def test_dense_fraction_counts_features_above_a_tenth_of_the_tokens() -> None:
    n_active = np.array([0, 5, 10, 11, 50, 100])
    assert DENSE_FREQ == 0.1
    assert dense_fraction(n_active, 100) == pytest.approx(3 / 6)  # 11, 50, 100; 10 is not > 10%


def test_pooled_losses_weight_batches_by_their_tokens() -> None:
    parts = [
        SpliceLosses(1.0, 2.0, 5.0, 0.1, 0.9, n_targets=10, n_tokens=12),
        SpliceLosses(3.0, 4.0, 7.0, 0.3, 0.5, n_targets=30, n_tokens=4),
    ]
    pooled = SpliceLosses.pooled(parts)
    assert (pooled.clean_loss, pooled.sae_loss, pooled.zero_loss) == pytest.approx((2.5, 3.5, 6.5))
    assert pooled.kl_divergence == pytest.approx(0.25)
    assert pooled.l2_ratio == pytest.approx((0.9 * 12 + 0.5 * 4) / 16)
    assert (pooled.n_targets, pooled.n_tokens) == (40, 16)


QUALITY_CORPUS = "bundled+arithmetic:40"


@pytest.fixture(scope="module")
def quality_store(loaded, tmp_path_factory):
    path = tmp_path_factory.mktemp("quality") / "quality.duckdb"
    build_store(loaded, QUALITY_CORPUS, path, BuildSettings(quality_per_category=3))
    with Store.open(path) as store:
        yield store


@torch.inference_mode()
@pytest.mark.slow
def test_stored_quality_equals_a_text_by_text_run_over_the_stratified_sample(
    loaded, quality_store
) -> None:
    """Each sampled text alone (no padding, no batching): -log p clean, with the SAE's
    reconstruction and with zeros spliced in at its real tokens through `run_with_hooks`, the
    KL of the two next-token distributions and the per-token L2 ratio, pooled over tokens."""
    texts = resolve_corpus(QUALITY_CORPUS).texts
    sample = quality_sample(texts, BuildSettings(quality_per_category=3))
    counts = texts["category"].iloc[sample].value_counts()
    assert (counts == 3).all() and len(counts) == texts["category"].nunique()
    saes = quality_store.saes().set_index("sae")
    for handle in loaded.saes:
        sums = np.zeros(4)  # clean, with the SAE, zero-ablated: -log p; KL
        ratios: list[float] = []
        n_targets = 0
        for text in texts["text"].iloc[sample]:
            tokens = loaded.model.to_tokens(text)[:, : loaded.model.cfg.n_ctx]
            _, cache = loaded.model.run_with_cache(tokens, names_filter=[handle.hook_name])
            x = cache[handle.hook_name][0, 1:]  # [pos - 1, d_in]: real tokens
            x_hat = handle.sae.decode(handle.sae.encode(x))
            ratios += (x_hat.double().norm(dim=-1) / x.double().norm(dim=-1)).tolist()

            def splice(value, hook, replacement):
                value = value.clone()
                value[0, 1:] = replacement
                return value

            runs = [
                loaded.model(tokens),
                loaded.model.run_with_hooks(
                    tokens,
                    fwd_hooks=[(handle.hook_name, lambda v, hook, r=x_hat: splice(v, hook, r))],
                ),
                loaded.model.run_with_hooks(
                    tokens,
                    fwd_hooks=[(handle.hook_name, lambda v, hook: splice(v, hook, 0.0))],
                ),
            ]
            log_probs = [logits[0, :-1].double().log_softmax(-1) for logits in runs]
            for i, lp in enumerate(log_probs):
                sums[i] -= float(lp.gather(-1, tokens[0, 1:, None]).sum())
            sums[3] += float((log_probs[0].exp() * (log_probs[0] - log_probs[1])).sum())
            n_targets += tokens.shape[1] - 1
        clean, with_sae, zero, kl = sums / n_targets
        row = saes.loc[handle.name]
        expected = (zero - with_sae) / (zero - clean)
        assert row["ce_loss_recovered"] == pytest.approx(expected, abs=1e-4)
        assert row["kl_divergence"] == pytest.approx(kl, rel=1e-3, abs=1e-6)
        assert row["l2_ratio"] == pytest.approx(np.mean(ratios), rel=1e-4)
        assert row["quality_texts"] == len(sample)


def test_stored_dense_fraction_equals_the_feature_stats(quality_store) -> None:
    n_tokens = int(quality_store.token_counts()["n"].sum())
    for sae, stored in quality_store.saes().set_index("sae")["dense_fraction"].items():
        stats = quality_store.feature_stats(sae)
        expected = (stats["n_active_tokens"] / n_tokens > 0.1).mean()
        assert stored == pytest.approx(expected)
        assert 0 < stored < 1  # the tiny SAEs have dense features and sparse ones
