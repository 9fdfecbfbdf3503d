"""SAE quality: spliced forwards equal hooked forwards; CE loss recovered from first principles."""

from __future__ import annotations

import pytest
import torch

from explorer.build.quality import ce_losses, recovered, sae_quality, spliced_logits
from explorer.sources.source import load_source

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
        clean, with_sae, zero = losses[hook_name]
        assert clean == pytest.approx(hooked_loss(loaded.model, tokens, real, hook_name, acts))
        assert with_sae == pytest.approx(
            hooked_loss(loaded.model, tokens, real, hook_name, recon), rel=1e-5
        )
        assert zero == pytest.approx(
            hooked_loss(loaded.model, tokens, real, hook_name, zeroed), rel=1e-5
        )
        assert recovered(clean, with_sae, zero) == pytest.approx((zero - with_sae) / (zero - clean))


def test_sae_quality_matches_ce_losses_and_reports_l0(loaded, batch):
    tokens, real = batch
    handle = loaded.saes[0]
    quality = sae_quality(loaded.model, handle.sae, handle.hook_name, tokens, real)
    clean, with_sae, zero = ce_losses(loaded.model, {handle.hook_name: handle.sae}, tokens, real)[
        handle.hook_name
    ]
    assert quality.ce_loss_recovered == pytest.approx(recovered(clean, with_sae, zero), rel=1e-6)
    assert quality.l0 == pytest.approx(handle.sae.cfg.k)
    assert quality.n_tokens == int(real.sum())
