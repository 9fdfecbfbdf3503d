"""One text's SAE activations in one shape, and what is read of a stored text.

Owns `TextActivations` (a text's real tokens and its nonzero activations of one SAE as rows
pos, feature, value) with the views the token page needs: a [tokens x features] matrix for
highlighting (with the value shown at full colour), the strongest features of the text, the
top features at each token (plain ids: `explorer.ui.tables` turns them into links), the text's
features ranked by their largest or summed activation (`rank_text_features`, the search page's
"by text"), and parses typed feature ids. It reads a stored text with two `Store` reads.
A typed text is encoded live by `explorer.live.text.encode_text` into the same shape; this
module needs no model, so pages that show stored texts never import torch
(tests/unit/test_imports.py). BOS and padding are never part of the result.

No streamlit and no HTML (see `explorer.charts.tokens_html`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from explorer.errors import InputError, bounded_int, markdown_escaped
from explorer.store.reader import Store

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
