"""One text's SAE activations, from the store or computed live, in one shape.

Owns `TextActivations` (a text's real tokens and its nonzero activations of one SAE as rows
pos, feature, value) with the views the token page needs: a [tokens x features] matrix for
highlighting (with the value shown at full colour), the strongest features of the text, the
top features at each token (plain ids: `explorer.ui.tables` turns them into links), the text's
features ranked by their largest or summed activation (`rank_text_features`, the search page's
"by text"), and parses typed feature ids. It
reads a stored text with two `Store` reads, and encodes typed text live through the cached
model and SAE: BOS-prefixed like the build, bounded in characters and in tokens (< n_ctx),
under `torch.inference_mode()`, without adding hooks to the shared model: residual-stream
SAEs stop the forward at the SAE's layer and take the residual, other hook points capture
the activation through `explorer.sources.request_hooks`, so concurrent sessions never see each
other's hooks. BOS and padding are never part of the result.

No streamlit and no HTML (see `explorer.charts.tokens_html`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch

from explorer.errors import InputError, bounded_int, markdown_escaped
from explorer.hooks import residual_boundary
from explorer.sources import request_hooks
from explorer.sources.source import LoadedSource, SaeHandle
from explorer.store.reader import Store
from explorer.tokenize import token_strings

MAX_TEXT_CHARS = 2000
MAX_HIGHLIGHTED = 8
MAX_RANKED = 1000
TextRanking = Literal["max", "sum"]
TEXT_RANKINGS: dict[str, str] = {"max": "largest activation", "sum": "summed activation"}


@dataclass(frozen=True)
class TextActivations:
    """A text's real tokens (model positions 1..n) and one SAE's nonzero activations."""

    sae: str
    tokens: list[str]
    acts: pd.DataFrame  # pos, feature, value; pos is the model position (BOS = 0, never here)

    @property
    def positions(self) -> np.ndarray:
        return np.arange(1, len(self.tokens) + 1)

    def values(self, features: Sequence[int]) -> np.ndarray:
        """[n_tokens, len(features)] activations, zeros where inactive."""
        matrix = np.zeros((len(self.tokens), len(features)))
        column = {int(f): i for i, f in enumerate(features)}
        chosen = self.acts[self.acts["feature"].isin(list(column))]
        matrix[chosen["pos"].to_numpy() - 1, chosen["feature"].map(column).to_numpy(dtype=int)] = (
            chosen["value"].to_numpy()
        )
        return matrix

    def strongest_features(self, n: int = 3) -> list[int]:
        """The n features with the largest activation anywhere in the text (ties by id)."""
        peaks = self.acts.groupby("feature")["value"].max().reset_index()
        peaks = peaks.sort_values(["value", "feature"], ascending=[False, True])
        return peaks["feature"].head(n).astype(int).tolist()

    def scales(
        self, features: Sequence[int], corpus_max: Mapping[int, float] | None = None
    ) -> list[float]:
        """The value shown at full colour for each feature: its corpus max when known and
        positive, else its max on this text, else 1."""
        text_max = self.acts.groupby("feature")["value"].max()
        scales = []
        for feature in features:
            known = (corpus_max or {}).get(int(feature), 0.0)
            scales.append(float(known or text_max.get(int(feature), 0.0) or 1.0))
        return scales

    def top_features_table(self, n: int = 3) -> pd.DataFrame:
        """One row per token: pos, token, then `feature k` (its id; missing where fewer
        than k features fire) and `value k` for the k-th most active feature there."""
        table = pd.DataFrame({"pos": self.positions, "token": self.tokens})
        top = self.top_features(n)
        for rank in range(1, n + 1):
            at_rank = top[top["rank"] == rank].set_index("pos")
            table[f"feature {rank}"] = table["pos"].map(at_rank["feature"]).astype("Int64")
            table[f"value {rank}"] = table["pos"].map(at_rank["value"])
        return table

    def top_features(self, n: int = 3) -> pd.DataFrame:
        """The n most active features at each token: pos, token, rank, feature, value."""
        ranked = self.acts.sort_values(["pos", "value", "feature"], ascending=[True, False, True])
        ranked = ranked.assign(rank=ranked.groupby("pos").cumcount() + 1)
        ranked = ranked[ranked["rank"] <= n]
        tokens = pd.DataFrame({"pos": self.positions, "token": self.tokens})
        return tokens.merge(ranked, on="pos", how="inner")[
            ["pos", "token", "rank", "feature", "value"]
        ].reset_index(drop=True)


def rank_text_features(acts: TextActivations, by: TextRanking = "max", n: int = 20) -> pd.DataFrame:
    """The n features most active on a text, by their largest (`max`) or summed (`sum`)
    activation over its tokens; ties by feature id.

    Returns sae, feature, max, sum, n_tokens (tokens where it fires), peak_pos and
    peak_token (its strongest token; the first on ties).
    """
    if by not in TEXT_RANKINGS:
        raise InputError(
            f"Rank features by one of {', '.join(TEXT_RANKINGS)}, got {markdown_escaped(repr(by))}."
        )
    n = bounded_int("The number of features", n, 1, MAX_RANKED)
    rows = acts.acts
    peaks = rows.sort_values(["feature", "value", "pos"], ascending=[True, False, True])
    peaks = peaks.drop_duplicates("feature").set_index("feature")
    grouped = rows.groupby("feature")["value"]
    table = pd.DataFrame(
        {
            "max": grouped.max(),
            "sum": grouped.sum(),
            "n_tokens": grouped.size(),
            "peak_pos": peaks["pos"],
        }
    ).rename_axis("feature")
    table = table.reset_index().sort_values([by, "feature"], ascending=[False, True]).head(n)
    tokens = np.asarray(acts.tokens, dtype=object)
    table["peak_token"] = tokens[table["peak_pos"].to_numpy(dtype=np.int64) - 1]
    table.insert(0, "sae", acts.sae)
    return table.reset_index(drop=True)


def with_share_of_max(table: pd.DataFrame, corpus_max: Mapping[int, float]) -> pd.DataFrame:
    """`table` (with feature and max) plus share_of_max = max / the feature's largest
    activation over the store's corpus (`corpus_max`; NaN where unknown or 0)."""
    scale = table["feature"].map(lambda f: corpus_max.get(int(f)) or np.nan).astype(float)
    return table.assign(share_of_max=table["max"] / scale)


def parse_feature_ids(text: str, d_sae: int, max_features: int = MAX_HIGHLIGHTED) -> list[int]:
    """Feature ids typed as `12, 40 7`: integers in 0..d_sae-1 (`bounded_int`), at most
    `max_features`, duplicates dropped (first occurrence kept)."""
    features: list[int] = []
    for item in text.replace(",", " ").split():
        value = bounded_int("A feature id", item, 0, d_sae - 1)
        if value not in features:
            features.append(value)
    if len(features) > max_features:
        raise InputError(f"Highlight at most {max_features} features at once, got {len(features)}.")
    return features


def stored_text_activations(store: Store, text_id: int, sae: str) -> TextActivations:
    """A stored text's tokens and every activation of one SAE on it."""
    if store.text(text_id) is None:
        raise InputError(f"There is no text {text_id} in this store.")
    tokens = store.text_tokens(text_id)
    acts = store.text_acts(text_id, sae)
    return TextActivations(sae=sae, tokens=tokens["token"].tolist(), acts=acts)


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
