"""Live interventions on SAE features and what they change.

Owns `Intervention` (a validated description that round-trips through JSON: SAE, features,
mode, value, positions), the function applying it at the SAE's hook, and the measurements:

- `apply`: zero-ablate, clamp to a value, scale (x2, x5, x10, negative), swap two features'
  activations, or steer (add `value * W_dec[f]`). Except for steering, the SAE encodes the
  activation, the chosen features' activations change, and the hook returns
  `x + decode(a') - decode(a)`: the SAE's error term is kept, so only the features' own
  contribution changes (zero-ablation subtracts `a_f * W_dec[f]`).
- `text_effect`: one text, clean and intervened: per-token change in next-token loss, KL
  divergence of the next-token distributions, top-k next tokens before and after, the mean
  absolute change of the activation at the hook, the features' activations before and after.
- `generate`: greedy or seeded sampling, token by token without a KV cache so position
  choices hold for new tokens too; a local `torch.Generator` keeps seeds per request.
- `corpus_effects`: the change in mean next-token loss per text over many texts, in padded
  batches (right padding: real tokens never attend to it), for one or several interventions
  (a dose-response is several scales); `category_summary` and `specialization_test` (does
  the intervention hurt one category's texts more than the others? one-sided Welch t-test).

Interventions run through `explorer.sources.request_hooks` (a ContextVar read by permanent hooks
installed at load time), so sessions sharing one cached model never see each other's
interventions and the model and SAEs are never changed. No streamlit and no store writes:
the page records runs with `Store.save_intervention`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from sae_lens import SAE
from scipy.stats import ttest_ind

from explorer.analysis.text_activations import MAX_TEXT_CHARS
from explorer.errors import InputError, bounded_int, markdown_escaped
from explorer.live.text import check_text
from explorer.sources import request_hooks
from explorer.sources.source import LoadedSource, SaeHandle
from explorer.tokenize import padded_batches, token_strings, tokenize_corpus

Mode = Literal["zero", "clamp", "scale", "swap", "steer"]
MODES: dict[Mode, str] = {
    "zero": "zero-ablate",
    "clamp": "clamp to a value",
    "scale": "scale by a factor",
    "swap": "swap two features",
    "steer": "steer: add value x decoder direction",
}
Sampling = Literal["greedy", "sample"]
MAX_FEATURES = 32
MAX_ABS_VALUE = 10_000.0
MAX_NEW_TOKENS = 64
MAX_POSITION = 100_000  # beyond any model's context
TOP_NEXT = 10
DOSE_SCALES = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Intervention:
    """What to change at one SAE's hook.

    `value`: the clamp value (mode clamp), the factor (scale) or the steering coefficient
    (steer); unused by zero and swap. `positions`: model positions to change (1 = the first
    real token, BOS is 0 and never changed); None = every real position, new tokens of a
    generation included.
    """

    sae: str
    features: tuple[int, ...]
    mode: Mode = "zero"
    value: float = 0.0
    positions: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(
                f"Unknown mode {markdown_escaped(repr(self.mode))}; choose one of "
                f"{', '.join(MODES)}."
            )
        if not self.features:
            raise InputError("Choose at least one feature to intervene on.")
        if len(self.features) > MAX_FEATURES:
            raise InputError(f"Intervene on at most {MAX_FEATURES} features at once.")
        if any(isinstance(f, bool) or not isinstance(f, int) for f in self.features):
            raise InputError(
                f"Feature ids must be integers, got {markdown_escaped(repr(list(self.features)))}."
            )
        if len(set(self.features)) != len(self.features):
            raise InputError(
                f"A feature is listed twice in {markdown_escaped(list(self.features))}."
            )
        if self.mode == "swap" and len(self.features) != 2:
            raise InputError("Swapping needs exactly two features.")
        if not math.isfinite(self.value) or abs(self.value) > MAX_ABS_VALUE:
            raise InputError(
                f"The value must be a number between -{MAX_ABS_VALUE:g} and {MAX_ABS_VALUE:g}, "
                f"got {markdown_escaped(repr(self.value))}."
            )
        if self.positions is not None:
            if not self.positions:
                raise InputError("Give at least one position, or choose every position.")
            if any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in self.positions):
                raise InputError(
                    f"Positions count real tokens from 1 (BOS is never changed), got "
                    f"{markdown_escaped(repr(list(self.positions)))}."
                )

    def check(self, handle: SaeHandle) -> None:
        """Feature ids within the SAE (InputError otherwise)."""
        d_sae = handle.sae.cfg.d_sae
        outside = [f for f in self.features if not 0 <= f < d_sae]
        if outside:
            raise InputError(
                f"Feature {markdown_escaped(outside[0])} is out of range for SAE "
                f"{markdown_escaped(repr(handle.name))}: choose 0 to "
                f"{d_sae - 1}."
            )

    def describe(self) -> str:
        features = ", ".join(f"#{f}" for f in self.features)
        value = {
            "zero": "",
            "clamp": f" = {self.value:g}",
            "scale": f" x {self.value:g}",
            "swap": "",
            "steer": f", coefficient {self.value:g}",
        }[self.mode]
        where = "every position" if self.positions is None else f"positions {list(self.positions)}"
        return f"{MODES[self.mode]} {features}{value} in {self.sae} at {where}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["features"] = list(self.features)
        data["positions"] = None if self.positions is None else list(self.positions)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Intervention:
        """The inverse of `to_json`; malformed data raises InputError."""
        try:
            positions = data.get("positions")
            return cls(
                sae=str(data["sae"]),
                features=tuple(int(f) for f in data["features"]),
                mode=data.get("mode", "zero"),
                value=float(data.get("value", 0.0)),
                positions=None if positions is None else tuple(int(p) for p in positions),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"Not a saved intervention: {markdown_escaped(exc)}.") from exc


def _position_mask(n_positions: int, positions: tuple[int, ...] | None) -> torch.Tensor:
    mask = torch.zeros(n_positions, dtype=torch.bool)  # [pos]
    if positions is None:
        mask[1:] = True
    else:
        chosen = [p for p in positions if p < n_positions]
        mask[chosen] = True
    return mask


def new_values(
    chosen: Float[torch.Tensor, "batch pos n_features"],
    intervention: Intervention,
    mask: torch.Tensor,
) -> Float[torch.Tensor, "batch pos n_features"]:
    """The chosen features' activations after a zero / clamp / scale / swap intervention, at
    the positions of `mask` ([pos] bool); other positions keep their values."""
    replaced = {
        "zero": lambda: torch.zeros_like(chosen),
        "clamp": lambda: torch.full_like(chosen, intervention.value),
        "scale": lambda: chosen * intervention.value,
        "swap": lambda: chosen.flip(-1),
    }[intervention.mode]()
    return torch.where(mask[None, :, None], replaced, chosen)


def changed_acts(
    acts: Float[torch.Tensor, "batch pos d_sae"], intervention: Intervention, mask: torch.Tensor
) -> Float[torch.Tensor, "batch pos d_sae"]:
    """All SAE activations after the intervention (`new_values` written into a copy)."""
    features = torch.tensor(intervention.features)
    changed = acts.clone()
    changed[..., features] = new_values(acts[..., features], intervention, mask)
    return changed


def _affine_decoder(sae: SAE) -> bool:
    """SAELens decoders are affine in the activations (`a @ W_dec + b_dec`, optionally with
    rescaling by decoder norms or a constant output scale) except with layer-norm output
    normalization."""
    return getattr(sae.cfg, "normalize_activations", "none") != "layer_norm"


@torch.no_grad()
def decoder_rows(sae: SAE, features: Sequence[int]) -> Float[torch.Tensor, "n_features d_in"]:
    """What one unit of each feature adds to the SAE's output, as the SAE decodes it:
    `decode(e_f) - decode(0)` (W_dec[f] for a plain decoder), flattened."""
    units = torch.zeros(len(features), sae.cfg.d_sae)  # [n_features, d_sae]
    units[torch.arange(len(features)), torch.tensor(list(features))] = 1.0
    rows = sae.decode(units) - sae.decode(torch.zeros(1, sae.cfg.d_sae))
    return rows.reshape(len(features), -1)


@dataclass
class HookTrace:
    """What the last call of an intervention's hook saw (first text of the batch)."""

    before: torch.Tensor | None = None  # [pos, n_features] activations before
    after: torch.Tensor | None = None  # [pos, n_features] after
    activation_change: torch.Tensor | None = None  # [pos] mean |x' - x| over the hook's width


def apply(
    handle: SaeHandle, intervention: Intervention, trace: HookTrace | None = None
) -> request_hooks.RequestHook:
    """The function replacing the activation at `handle`'s hook (see the module docstring).

    With an affine decoder the change is `(a'_f - a_f) @ decoder_rows` over the chosen
    features only, which equals `decode(a') - decode(a)` without two full decodes."""
    intervention.check(handle)
    sae = handle.sae
    features = torch.tensor(intervention.features)
    rows = decoder_rows(sae, intervention.features)  # [n_features, d_in]
    affine = _affine_decoder(sae)

    def patch(x: Float[torch.Tensor, "batch pos ..."]) -> torch.Tensor:
        mask = _position_mask(x.shape[1], intervention.positions)  # [pos]
        if intervention.mode == "steer":
            direction = intervention.value * rows.sum(0)  # [d_in]
            shaped = mask.to(x.dtype).reshape(1, -1, *([1] * (x.dim() - 2)))  # [1, pos, 1...]
            patched = x + shaped * direction.reshape(1, 1, *x.shape[2:])
            if trace is not None:
                trace.before = sae.encode(x[0])[:, features]
                trace.after = sae.encode(patched[0])[:, features]
        else:
            acts = sae.encode(x)  # [batch, pos, d_sae]
            chosen = acts[..., features]  # [batch, pos, n_features]
            new = new_values(chosen, intervention, mask)
            if affine:
                patched = x + ((new - chosen) @ rows).reshape(x.shape)
            else:
                changed = changed_acts(acts, intervention, mask)
                patched = x + (sae.decode(changed) - sae.decode(acts))
            if trace is not None:
                trace.before, trace.after = chosen[0], new[0]
        if trace is not None:
            trace.activation_change = (patched[0] - x[0]).abs().flatten(1).mean(-1)
        return patched

    return patch


def _next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[batch, pos - 1]: -log p(tokens[:, i + 1]) from logits[:, i]."""
    log_probs = logits[:, :-1].log_softmax(-1)
    return -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]


@dataclass(frozen=True)
class TextEffect:
    """One text, clean and with the intervention. Arrays have one entry per real token."""

    intervention: Intervention
    tokens: list[str]
    token_ids: list[int]
    clean_loss: np.ndarray  # loss of predicting this token from the tokens before it
    patched_loss: np.ndarray
    kl: np.ndarray  # KL(clean || patched) of the next-token distribution after this token
    activation_change: np.ndarray  # mean |x' - x| over the hook's width at this token
    feature_before: np.ndarray  # [n_tokens, n_features]
    feature_after: np.ndarray
    top_next: pd.DataFrame  # rank, clean_token, clean_prob, patched_token, patched_prob

    @property
    def delta_loss(self) -> np.ndarray:
        return self.patched_loss - self.clean_loss

    def per_token(self) -> pd.DataFrame:
        """One row per real token: pos, token, losses, change, KL, activation change, and the
        features' activations before / after."""
        table = pd.DataFrame(
            {
                "pos": np.arange(1, len(self.tokens) + 1),
                "token": self.tokens,
                "clean_loss": self.clean_loss,
                "patched_loss": self.patched_loss,
                "delta_loss": self.delta_loss,
                "kl": self.kl,
                "activation_change": self.activation_change,
            }
        )
        for index, feature in enumerate(self.intervention.features):
            table[f"#{feature} before"] = self.feature_before[:, index]
            table[f"#{feature} after"] = self.feature_after[:, index]
        return table

    def summary(self) -> dict[str, Any]:
        """The JSON-ready numbers of this run (what the ledger keeps)."""
        return {
            "n_tokens": len(self.tokens),
            "mean_clean_loss": float(self.clean_loss.mean()),
            "mean_patched_loss": float(self.patched_loss.mean()),
            "mean_delta_loss": float(self.delta_loss.mean()),
            "max_delta_loss": float(self.delta_loss.max()),
            "mean_kl": float(self.kl.mean()),
            "max_kl": float(self.kl.max()),
            "mean_activation_change": float(self.activation_change.mean()),
            "top_next_clean": self.top_next["clean_token"].tolist(),
            "top_next_patched": self.top_next["patched_token"].tolist(),
        }


def _decode_each(loaded: LoadedSource, token_ids: Sequence[int]) -> list[str]:
    return [loaded.tokenizer.decode([int(token_id)]) for token_id in token_ids]


@torch.inference_mode()
def text_effect(
    loaded: LoadedSource,
    intervention: Intervention,
    text: str,
    *,
    top_k: int = TOP_NEXT,
    next_at: int | None = None,
    max_chars: int = MAX_TEXT_CHARS,
) -> TextEffect:
    """Run `text` clean and with `intervention`; `next_at` is the token after which the top
    next tokens are compared (default: the last)."""
    handle = loaded.sae(intervention.sae)
    token_ids = check_text(loaded, text, max_chars)
    n = len(token_ids)
    if intervention.positions is not None and max(intervention.positions) > n:
        raise InputError(
            f"Position {markdown_escaped(max(intervention.positions))} is past the "
            f"text's {n} tokens."
        )
    next_at = n if next_at is None else next_at
    if not 1 <= next_at <= n:
        raise InputError(f"Choose a token from 1 to {n} for the next-token comparison.")
    tokens = torch.tensor([[loaded.tokenizer.bos_token_id, *token_ids]])  # [1, n + 1]
    trace = HookTrace()
    clean = loaded.model(tokens)  # [1, n + 1, d_vocab]
    with request_hooks.using({handle.hook_name: apply(handle, intervention, trace)}):
        patched = loaded.model(tokens)
    clean_lp = clean[0].log_softmax(-1)  # [n + 1, d_vocab]
    patched_lp = patched[0].log_softmax(-1)
    kl = (clean_lp.exp() * (clean_lp - patched_lp)).sum(-1)[1:]  # after each real token, [n]
    top = _top_next(loaded, clean_lp[next_at], patched_lp[next_at], top_k)
    return TextEffect(
        intervention=intervention,
        tokens=token_strings(loaded.tokenizer, token_ids),
        token_ids=list(token_ids),
        clean_loss=_next_token_loss(clean, tokens)[0].numpy(),
        patched_loss=_next_token_loss(patched, tokens)[0].numpy(),
        kl=kl.clamp(min=0).numpy(),
        activation_change=trace.activation_change[1:].numpy(),
        feature_before=trace.before[1:].numpy(),
        feature_after=trace.after[1:].numpy(),
        top_next=top,
    )


def _top_next(
    loaded: LoadedSource, clean_lp: torch.Tensor, patched_lp: torch.Tensor, k: int
) -> pd.DataFrame:
    clean_p, clean_ids = clean_lp.exp().topk(k)
    patched_p, patched_ids = patched_lp.exp().topk(k)
    return pd.DataFrame(
        {
            "rank": np.arange(1, k + 1),
            "clean_token": _decode_each(loaded, clean_ids.tolist()),
            "clean_prob": clean_p.numpy(),
            "patched_token": _decode_each(loaded, patched_ids.tolist()),
            "patched_prob": patched_p.numpy(),
        }
    )


@torch.inference_mode()
def generate(
    loaded: LoadedSource,
    prompt: str,
    intervention: Intervention | None,
    *,
    max_new_tokens: int = 20,
    sampling: Sampling = "greedy",
    seed: int = 0,
    temperature: float = 1.0,
    max_chars: int = MAX_TEXT_CHARS,
) -> str:
    """The continuation of `prompt` (without the prompt), with or without `intervention`."""
    if sampling not in get_args(Sampling):
        raise InputError(
            f"Unknown sampling {markdown_escaped(repr(sampling))}; choose greedy or sample."
        )
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise InputError(f"Generate 1 to {MAX_NEW_TOKENS} new tokens.")
    if not 0.05 <= temperature <= 5:
        raise InputError("The temperature must be between 0.05 and 5.")
    token_ids = check_text(loaded, prompt, max_chars)
    n_ctx = loaded.model.cfg.n_ctx
    tokens = torch.tensor([[loaded.tokenizer.bos_token_id, *token_ids]])  # [1, pos]
    hooks = {}
    if intervention is not None:
        handle = loaded.sae(intervention.sae)
        hooks = {handle.hook_name: apply(handle, intervention)}
    generator = torch.Generator().manual_seed(int(seed))
    new: list[int] = []
    with request_hooks.using(hooks):
        for _ in range(min(max_new_tokens, n_ctx - tokens.shape[1])):
            logits = loaded.model(tokens)[0, -1]  # [d_vocab]
            if sampling == "greedy":
                token = int(logits.argmax())
            else:
                probs = (logits.double() / temperature).softmax(-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            new.append(token)
            tokens = torch.cat([tokens, torch.tensor([[token]])], dim=1)
    return loaded.tokenizer.decode(new)


@torch.inference_mode()
def corpus_effects(
    loaded: LoadedSource,
    texts: pd.DataFrame,
    interventions: Sequence[Intervention],
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Mean next-token loss per text, clean and under each intervention.

    `texts` has text_id, category and text (as `Store.texts()`); texts are tokenised as the
    build does (BOS, truncated to the context). Returns one row per (setting, text):
    setting (index into `interventions`), text_id, category, n_tokens (predicted tokens),
    clean_loss, patched_loss, delta_loss.
    """
    if texts.empty:
        raise InputError("There are no texts to run the intervention over.")
    if not interventions:
        raise InputError("Give at least one intervention.")
    if not 1 <= batch_size <= 256:
        raise InputError("The batch size must be between 1 and 256.")
    handles = [loaded.sae(intervention.sae) for intervention in interventions]
    patches = [apply(h, i) for h, i in zip(handles, interventions, strict=True)]
    corpus = tokenize_corpus(loaded, texts)
    pad_id = loaded.tokenizer.pad_token_id or 0
    frames = []
    done, total = 0, len(texts)
    for text_ids, tokens, real in padded_batches(corpus, batch_size, pad_id):
        targets = real[:, 1:].float()  # the token at i + 1 is real, [batch, pos - 1]
        counts = targets.sum(-1)
        clean = (_next_token_loss(loaded.model(tokens), tokens) * targets).sum(-1)
        for setting, (handle, patch) in enumerate(zip(handles, patches, strict=True)):
            with request_hooks.using({handle.hook_name: patch}):
                patched = (_next_token_loss(loaded.model(tokens), tokens) * targets).sum(-1)
            frames.append(
                pd.DataFrame(
                    {
                        "setting": setting,
                        "text_id": text_ids,
                        "n_tokens": counts.numpy().astype(np.int64),
                        "clean_loss": (clean / counts.clamp(min=1)).numpy(),
                        "patched_loss": (patched / counts.clamp(min=1)).numpy(),
                    }
                )
            )
        done += len(text_ids)
        if progress is not None:
            progress(done, total)
    effects = pd.concat(frames, ignore_index=True)
    effects = effects[effects["n_tokens"] > 0]
    effects = effects.merge(texts[["text_id", "category"]], on="text_id", how="left")
    effects["delta_loss"] = effects["patched_loss"] - effects["clean_loss"]
    columns = ["setting", "text_id", "category", "n_tokens", "clean_loss", "patched_loss"]
    return effects[[*columns, "delta_loss"]].sort_values(["setting", "text_id"], ignore_index=True)


def category_summary(effects: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, category): n_texts, mean_delta_loss, sem (standard error of the mean)."""
    grouped = effects.groupby(["setting", "category"])["delta_loss"]
    summary = grouped.agg(n_texts="count", mean_delta_loss="mean", std="std").reset_index()
    summary["sem"] = (summary["std"] / np.sqrt(summary["n_texts"])).fillna(0.0)
    return summary.drop(columns="std")


def specialization_test(effects: pd.DataFrame, category: str, setting: int = 0) -> dict[str, Any]:
    """Does the intervention raise the mean loss of `category`'s texts more than the others'?
    One-sided Welch t-test on the per-text changes in loss (most texts outside a specialist's
    category change by exactly 0, so a rank test would answer a different question)."""
    rows = effects[effects["setting"] == setting]
    inside = rows.loc[rows["category"] == category, "delta_loss"].to_numpy(dtype=np.float64)
    outside = rows.loc[rows["category"] != category, "delta_loss"].to_numpy(dtype=np.float64)
    if len(inside) < 2 or len(outside) < 2:
        raise InputError(
            "Need at least two texts inside and outside "
            f"{markdown_escaped(repr(category))} to compare."
        )
    test = ttest_ind(inside, outside, equal_var=False, alternative="greater")
    p_value = float(test.pvalue) if np.isfinite(test.pvalue) else 1.0
    return {
        "category": category,
        "n_in": len(inside),
        "n_out": len(outside),
        "mean_delta_in": float(inside.mean()),
        "mean_delta_out": float(outside.mean()),
        "difference": float(inside.mean() - outside.mean()),
        "t_statistic": float(np.nan_to_num(test.statistic)),
        "p_value": p_value,
    }


def dose_interventions(
    sae: str, features: Sequence[int], scales: Sequence[float] = DOSE_SCALES
) -> list[Intervention]:
    """One scaling intervention per scale (scale 0 is zero-ablation, 1 changes nothing)."""
    return [Intervention(sae, tuple(features), "scale", float(scale)) for scale in scales]


def parse_positions(text: str) -> tuple[int, ...] | None:
    """Positions typed as `3, 5 7` (1 = the first real token, at most `MAX_POSITION`);
    empty or `all` = None."""
    if not text.strip() or text.strip().lower() == "all":
        return None
    positions: list[int] = []
    for item in text.replace(",", " ").split():
        value = bounded_int("A token position", item, 1, MAX_POSITION)
        if value not in positions:
            positions.append(value)
    if len(positions) > 512:
        raise InputError("Give at most 512 positions.")
    return tuple(positions)
