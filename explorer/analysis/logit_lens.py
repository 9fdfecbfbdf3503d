"""The decoder logit lens, computed from the loaded model and SAE: per feature and per token.

Owns the direct logit effect of decoder directions, `W_dec @ W_U`, after the final layer
norm's weight when the model has one (the residual stream passes through it before the
unembedding; the same convention as the build's `explorer.build.extract.logit_lens`, whose top and
bottom tokens the store keeps). Per feature: `feature_logits` over the whole vocabulary (the
feature page bins it into a histogram). Per token, the reverse lookup: `token_effects` of
every feature of an SAE on one token (one column of `W_dec @ W_U`, never the whole matrix),
and `resolve_token`, which turns what a user typed (a token's text or its id) into exactly
one token of the source's tokenizer. No store, no streamlit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from explorer.errors import InputError, bounded_int, markdown_escaped
from explorer.sources.source import LoadedSource
from explorer.sources.unembed import through_final_norm, unembed_directions

MAX_TOKEN_CHARS = 100
MAX_LOOKUP = 500

TokenInput = Literal["text", "id"]


@torch.inference_mode()
def feature_logits(loaded: LoadedSource, sae: str, feature: int) -> np.ndarray:
    """The direct logit effect of one feature's decoder direction, [d_vocab] float32."""
    handle = loaded.sae(sae)
    W_dec = handle.sae.W_dec  # [d_sae, d_model]
    if not 0 <= feature < W_dec.shape[0]:
        raise InputError(
            f"Feature {feature} is out of range for SAE {markdown_escaped(repr(sae))}: choose 0 to "
            f"{W_dec.shape[0] - 1}."
        )
    return unembed_directions(loaded.model, W_dec[feature : feature + 1])[0].numpy()


@dataclass(frozen=True)
class Token:
    """One vocabulary entry: its id and its text as the tokenizer decodes it alone."""

    token_id: int
    token: str


def resolve_token(tokenizer: Any, d_vocab: int, value: str, given_as: TokenInput) -> Token:
    """The single token a user means: `value` is its text (encoded without special tokens;
    leading spaces count) or its id; anything that is not exactly one token is refused."""
    if given_as == "id":
        token_id = bounded_int("A token id", value, 0, d_vocab - 1)
    elif given_as == "text":
        if not value:
            raise InputError("Type a token first: the token is empty.")
        if len(value) > MAX_TOKEN_CHARS:
            raise InputError(f"A token has at most {MAX_TOKEN_CHARS} characters.")
        ids = tokenizer(value, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = " | ".join(repr(tokenizer.decode([i])) for i in ids[:12])
            raise InputError(
                f"{markdown_escaped(repr(value))} is {len(ids)} tokens for this tokenizer "
                f"({markdown_escaped(pieces)}), not one. "
                "Type a single token (a leading space is part of it, as in ' the'), "
                "or give its id."
            )
        token_id = int(ids[0])
    else:
        raise InputError(
            f"A token is given as 'text' or 'id', got {markdown_escaped(repr(given_as))}."
        )
    return Token(token_id=token_id, token=tokenizer.decode([token_id]))


@torch.inference_mode()
def token_effects(
    model: HookedTransformer, W_dec: Float[torch.Tensor, "d_sae d_model"], token_id: int
) -> Float[torch.Tensor, " d_sae"]:
    """Every feature's direct logit effect on one token: one column of `W_dec @ W_U`."""
    if not 0 <= token_id < model.W_U.shape[1]:
        raise InputError(
            f"Token id {token_id} is out of range: choose 0 to {model.W_U.shape[1] - 1}."
        )
    column = model.W_U.detach().float()[:, token_id]  # [d_model]
    return through_final_norm(model, W_dec) @ column  # [d_sae]


def reverse_lookup(loaded: LoadedSource, sae: str, token_id: int, n: int = 20) -> pd.DataFrame:
    """The n features that most promote and the n that most suppress one token.

    Returns direction ("promotes" / "suppresses"), rank (1 = strongest in its direction),
    feature and logit: promoters largest logit first, then suppressors most negative first
    (ties by feature id).
    """
    if not 1 <= n <= MAX_LOOKUP:
        raise InputError(f"Show 1 to {MAX_LOOKUP} features per direction, got {n}.")
    logits = token_effects(loaded.model, loaded.sae(sae).sae.W_dec, token_id).numpy()
    features = np.arange(len(logits))
    frames = []
    for direction, sign in (("promotes", 1), ("suppresses", -1)):
        order = np.lexsort((features, -sign * logits))[: min(n, len(logits))]
        frames.append(
            pd.DataFrame(
                {
                    "direction": direction,
                    "rank": np.arange(1, len(order) + 1),
                    "feature": order.astype(np.int64),
                    "logit": logits[order].astype(np.float64),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
