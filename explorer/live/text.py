"""A typed text's SAE activations, computed live through the cached model and SAE.

Encodes typed text into `explorer.analysis.text_activations.TextActivations` (the shape a
stored text is read in): BOS-prefixed like the build, bounded in characters and in tokens
(< n_ctx), under `torch.inference_mode()`, without adding hooks to the shared model:
residual-stream SAEs stop the forward at the SAE's layer and take the residual, other hook
points capture the activation through `explorer.sources.request_hooks`, so concurrent
sessions never see each other's hooks. BOS and padding are never part of the result.
Importing this module imports torch: pages import it only when the user asks for live work.

No streamlit and no HTML (see `explorer.charts.tokens_html`).
"""

from __future__ import annotations

import pandas as pd
import torch

from explorer.analysis.text_activations import MAX_TEXT_CHARS, TextActivations
from explorer.errors import InputError
from explorer.hooks import residual_boundary
from explorer.sources import request_hooks
from explorer.sources.source import LoadedSource, SaeHandle
from explorer.tokenize import token_strings


def check_text(loaded: LoadedSource, text: str, max_chars: int) -> list[int]:
    """The text's token ids (no BOS); empty, too long or over the context: InputError."""
    if not text.strip():
        raise InputError("Type some text first: the text is empty.")
    if len(text) > max_chars:
        raise InputError(f"The text has {len(text):,} characters; give at most {max_chars:,}.")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(
                "The text holds characters that are not valid Unicode (lone surrogates); "
                "type or paste it again."
            ) from None
    token_ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    limit = loaded.model.cfg.n_ctx - 1
    if len(token_ids) > limit:
        raise InputError(
            f"The text is {len(token_ids)} tokens; this model reads at most {limit} after its "
            "BOS token. Shorten the text."
        )
    return token_ids


def _hook_input(loaded: LoadedSource, handle: SaeHandle, tokens: torch.Tensor) -> torch.Tensor:
    """The activation the SAE reads at its hook, [1, pos, d_in]. Residual-stream hooks stop
    the forward at their boundary; other hooks capture it through this context's request
    hook, so no session's hook is ever visible to another."""
    model = loaded.model
    boundary = residual_boundary(handle.hook_name)
    if boundary is not None:
        return model(tokens, stop_at_layer=boundary)
    captured: list[torch.Tensor] = []

    def capture(activation: torch.Tensor) -> None:
        captured.append(activation)

    with request_hooks.using({handle.hook_name: capture}):
        model(tokens, stop_at_layer=handle.layer + 1)
    return captured[0]


@torch.inference_mode()
def encode_text(
    loaded: LoadedSource, sae: str, text: str, max_chars: int = MAX_TEXT_CHARS
) -> TextActivations:
    """Run typed text through the model and one SAE: its tokens and nonzero activations."""
    handle = loaded.sae(sae)
    token_ids = check_text(loaded, text, max_chars)
    tokens = torch.tensor([[loaded.tokenizer.bos_token_id, *token_ids]])  # [1, pos]
    feature_acts = handle.sae.encode(_hook_input(loaded, handle, tokens))[0, 1:]  # [pos-1, d_sae]
    pos, feature = feature_acts.nonzero(as_tuple=True)
    acts = pd.DataFrame(
        {
            "pos": pos.numpy() + 1,
            "feature": feature.numpy(),
            "value": feature_acts[pos, feature].float().numpy(),
        }
    ).sort_values(["pos", "value", "feature"], ascending=[True, False, True], ignore_index=True)
    strings = token_strings(loaded.tokenizer, token_ids)
    return TextActivations(sae=sae, tokens=strings, acts=acts)
