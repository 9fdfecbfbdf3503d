"""Reconstruction quality of an SAE on a batch of model activations.

Owns the numbers the explorer reports for every SAE: L0 (mean number of active features per
token), explained variance of the reconstruction, CE loss recovered (the share of the loss gap
between zero-ablating the hook and the clean model that splicing in the SAE's reconstruction
closes), the KL divergence of the next-token distribution with the SAE spliced in from the
clean one, shrinkage (the mean L2 ratio ||x_hat|| / ||x|| of reconstruction to input), the
dead fraction (features that never fire on the tokens seen) and the dense fraction (features
active on more than `DENSE_FREQ` of them); and the category-stratified sample of texts the
spliced forwards run on (`stratified_sample`). It does not choose the tokens (callers pass
real-token masks) and does not store anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE
from transformer_lens import HookedTransformer

from explorer.hooks import residual_boundary

DENSE_FREQ = 0.1  # a feature active on more than this share of tokens is dense


@dataclass(frozen=True)
class SaeQuality:
    l0: float
    explained_variance: float
    ce_loss_recovered: float
    dead_fraction: float
    clean_loss: float
    sae_loss: float
    zero_loss: float
    n_tokens: int


@dataclass(frozen=True)
class SpliceLosses:
    """Means over one batch (or a whole sample) of the spliced forwards of one hook:
    next-token losses clean, with the SAE and zero-ablated and KL(clean || with SAE) over
    `n_targets` predicted tokens; the L2 ratio ||x_hat|| / ||x|| over `n_tokens` real tokens."""

    clean_loss: float
    sae_loss: float
    zero_loss: float
    kl_divergence: float
    l2_ratio: float
    n_targets: int
    n_tokens: int

    @staticmethod
    def pooled(parts: Sequence[SpliceLosses]) -> SpliceLosses:
        """The means over several batches: losses and KL weighted by predicted tokens, the
        L2 ratio by real tokens."""
        targets = sum(part.n_targets for part in parts)
        tokens = sum(part.n_tokens for part in parts)

        def mean(name: str, weight: str, total: int) -> float:
            if not total:
                return float("nan")
            return sum(getattr(p, name) * getattr(p, weight) for p in parts) / total

        losses = ("clean_loss", "sae_loss", "zero_loss", "kl_divergence")
        return SpliceLosses(
            **{name: mean(name, "n_targets", targets) for name in losses},
            l2_ratio=mean("l2_ratio", "n_tokens", tokens),
            n_targets=targets,
            n_tokens=tokens,
        )

    @property
    def ce_loss_recovered(self) -> float:
        return recovered(self.clean_loss, self.sae_loss, self.zero_loss)


def stratified_sample(categories: Sequence[str], per_category: int, seed: int) -> np.ndarray:
    """Positions (into `categories`, one per text) of up to `per_category` texts of each
    category, drawn without replacement by a generator seeded with `seed` (categories in
    sorted order), in corpus order."""
    labels = np.asarray(list(categories), dtype=object)
    rng = np.random.default_rng(seed)
    chosen = [
        rng.permutation(np.flatnonzero(labels == category))[:per_category]
        for category in sorted(set(labels.tolist()))
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def dense_fraction(n_active_tokens: np.ndarray, n_tokens: int) -> float:
    """Share of features active on more than `DENSE_FREQ` of `n_tokens` tokens."""
    if len(n_active_tokens) == 0 or n_tokens <= 0:
        return float("nan")
    return float((np.asarray(n_active_tokens) / n_tokens > DENSE_FREQ).mean())


def _next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, loss_mask: torch.Tensor) -> float:
    # logits [batch, pos, d_vocab]; predict tokens[:, 1:] from positions [:, :-1]
    log_probs = logits[:, :-1].log_softmax(-1)
    target_lp = log_probs.gather(-1, tokens[:, 1:, None])[..., 0]  # [batch, pos-1]
    mask = loss_mask[:, 1:]
    return float(-(target_lp * mask).sum() / mask.sum())


def spliced_logits(
    model: HookedTransformer,
    tokens: Int[torch.Tensor, "batch pos"],
    hook_name: str,
    replacement: Float[torch.Tensor, "batch pos d_in"],
) -> Float[torch.Tensor, "batch pos d_vocab"]:
    """Logits with the activation at `hook_name` replaced by `replacement`.

    A residual-stream hook resumes the forward at the next block (`start_at_layer`), so the
    layers before the hook are not run again; any other hook runs the model with a hook.
    """
    layer = residual_boundary(hook_name)
    if layer is None:
        return model.run_with_hooks(
            tokens, fwd_hooks=[(hook_name, lambda value, hook: replacement)]
        )
    return model(replacement, start_at_layer=layer)


def _kl_divergence(
    clean_logits: torch.Tensor, logits: torch.Tensor, loss_mask: torch.Tensor
) -> float:
    """Mean KL(clean || other) of the next-token distributions at the positions whose next
    token `_next_token_loss` predicts."""
    clean_lp = clean_logits[:, :-1].double().log_softmax(-1)  # [batch, pos-1, d_vocab]
    other_lp = logits[:, :-1].double().log_softmax(-1)
    kl = (clean_lp.exp() * (clean_lp - other_lp)).sum(-1)  # [batch, pos-1]
    mask = loss_mask[:, 1:]
    return float((kl * mask).sum() / mask.sum())


Reconstruct = Callable[[SAE, torch.Tensor], torch.Tensor]  # (sae, [n_real, d_in]) -> same


def _reconstruction(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    return sae.decode(sae.encode(x))


@torch.inference_mode()
def ce_losses(
    model: HookedTransformer,
    saes: dict[str, SAE],
    tokens: Int[torch.Tensor, "batch pos"],
    real_mask: Bool[torch.Tensor, "batch pos"],
    reconstruct: Reconstruct = _reconstruction,
) -> dict[str, SpliceLosses]:
    """`SpliceLosses` of the batch per hook, one clean forward for all.

    The SAE's reconstruction (or zeros) replaces the activation at real tokens only;
    `reconstruct` computes it from those tokens' activations (default decode(encode(x));
    the build passes its sparse equivalent).
    """
    clean_logits, cache = model.run_with_cache(tokens, names_filter=list(saes))
    n_targets = int(real_mask[:, 1:].sum())
    losses = {}
    for hook_name, sae in saes.items():
        acts = cache[hook_name]
        recon = acts.clone()
        recon[real_mask] = reconstruct(sae, acts[real_mask]).to(acts.dtype)
        clean, with_sae, zero, kl = _losses(
            model, tokens, real_mask, clean_logits, hook_name, acts, recon
        )
        real_acts = acts[real_mask].double()  # [n_real, d_in]; hook_z: [n_real, heads, d_head]
        norms = real_acts.flatten(1).norm(dim=1)  # [n_real]
        recon_norms = recon[real_mask].double().flatten(1).norm(dim=1)  # [n_real]
        ratio = recon_norms / norms.clamp_min(torch.finfo(torch.float64).tiny)
        losses[hook_name] = SpliceLosses(
            clean, with_sae, zero, kl, float(ratio.mean()), n_targets, int(real_mask.sum())
        )
    return losses


def _losses(
    model: HookedTransformer,
    tokens: Int[torch.Tensor, "batch pos"],
    real_mask: Bool[torch.Tensor, "batch pos"],
    clean_logits: Float[torch.Tensor, "batch pos d_vocab"],
    hook_name: str,
    acts: Float[torch.Tensor, "batch pos d_in"],
    recon: Float[torch.Tensor, "batch pos d_in"],
) -> tuple[float, float, float, float]:
    """(clean, with SAE, zero-ablated) loss and KL(clean || with SAE), replacing `acts` at
    real tokens only."""
    mask = real_mask.reshape(*real_mask.shape, *([1] * (acts.dim() - 2)))
    spliced = torch.where(mask, recon, acts)
    zeroed = torch.where(mask, torch.zeros_like(acts), acts)
    sae_logits = spliced_logits(model, tokens, hook_name, spliced)
    zero = _next_token_loss(spliced_logits(model, tokens, hook_name, zeroed), tokens, real_mask)
    return (
        _next_token_loss(clean_logits, tokens, real_mask),
        _next_token_loss(sae_logits, tokens, real_mask),
        zero,
        _kl_divergence(clean_logits, sae_logits, real_mask),
    )


def recovered(clean: float, with_sae: float, zero: float) -> float:
    """Share of the zero-ablation loss gap that the SAE's reconstruction closes."""
    gap = zero - clean
    return (zero - with_sae) / gap if gap > 0 else float("nan")


@torch.inference_mode()
def sae_quality(
    model: HookedTransformer,
    sae: SAE,
    hook_name: str,
    tokens: Int[torch.Tensor, "batch pos"],
    real_mask: Bool[torch.Tensor, "batch pos"],
    batch_size: int = 32,
) -> SaeQuality:
    """Measure one SAE on `tokens`; only positions where `real_mask` is true count.

    `real_mask` excludes BOS and padding: they neither count towards L0 / variance nor
    serve as loss targets.
    """
    d_sae = sae.cfg.d_sae
    ever_active = torch.zeros(d_sae, dtype=torch.bool)
    l0_sum = 0.0
    sq_err = 0.0
    n_tok = 0
    act_sum = torch.zeros(sae.cfg.d_in, dtype=torch.float64)
    act_sq_sum = torch.zeros(sae.cfg.d_in, dtype=torch.float64)
    losses = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    n_targets = 0
    for start in range(0, tokens.shape[0], batch_size):
        batch = tokens[start : start + batch_size]
        mask = real_mask[start : start + batch_size]
        clean_logits, cache = model.run_with_cache(batch, names_filter=[hook_name])
        acts = cache[hook_name]  # [batch, pos, d_in]
        feature_acts = sae.encode(acts)  # [batch, pos, d_sae]
        recon = sae.decode(feature_acts)  # [batch, pos, d_in]
        real_acts = acts[mask].double()  # [n_real, d_in]
        real_feats = feature_acts[mask]  # [n_real, d_sae]
        ever_active |= (real_feats > 0).any(0)
        l0_sum += float((real_feats > 0).sum())
        sq_err += float(((recon[mask].double() - real_acts) ** 2).sum())
        act_sum += real_acts.sum(0)
        act_sq_sum += (real_acts**2).sum(0)
        n_tok += int(mask.sum())

        n_batch_targets = int(mask[:, 1:].sum())
        batch_losses = _losses(model, batch, mask, clean_logits, hook_name, acts, recon)[:3]
        for name, loss in zip(("clean", "sae", "zero"), batch_losses, strict=True):
            losses[name] += loss * n_batch_targets
        n_targets += n_batch_targets
    assert n_tok > 0, "sae_quality needs at least one real token"
    total_var = float((act_sq_sum - act_sum**2 / n_tok).sum())
    clean, with_sae, zero = (losses[k] / n_targets for k in ("clean", "sae", "zero"))
    return SaeQuality(
        l0=l0_sum / n_tok,
        explained_variance=1.0 - sq_err / total_var,
        ce_loss_recovered=recovered(clean, with_sae, zero),
        dead_fraction=1.0 - float(ever_active.float().mean()),
        clean_loss=clean,
        sae_loss=with_sae,
        zero_loss=zero,
        n_tokens=n_tok,
    )
