"""Measures over SAE decoder directions: redundancy within an SAE, matching (consistency)
between two SAEs, the heatmap of the top features' matches, and every feature's nearest
decoder directions in the other SAEs (lineage by decoder cosine).

Owns the torch side of the field's metrics; the store holds no decoder rows, so every
function takes decoders (`W_dec` [d_sae, d_in]) the caller loaded, e.g. from
`explorer.sources`. Cosines come from `explorer.analysis.similarity.cosine_topk` (chunked,
never a normalised copy of a whole decoder). Definitions: docs/methods.md, sections Feature
redundancy, Cross-SAE matching and Lineage. It does not read the store, render or cache.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from explorer.analysis.lineage import (
    DEFAULT_LINEAGE,
    MATCH_COLUMNS,
    LineageSettings,
    long_matches,
)
from explorer.analysis.similarity import cosine_topk
from explorer.errors import InputError

HEATMAP_FEATURES = 20


@torch.inference_mode()
def max_cosines(
    queries: Float[torch.Tensor, "q d_in"],
    candidates: Float[torch.Tensor, "n d_in"],
    same: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query row's largest decoder cosine with a candidate row and that row's index;
    `same`: queries and candidates are one SAE's decoder, a row never matches itself."""
    exclude = torch.arange(queries.shape[0]) if same else None
    values, indices = cosine_topk(queries, candidates, 1, exclude)  # [q, 1]
    return values[:, 0].double().numpy(), indices[:, 0].numpy()


def redundancy(decoders: Mapping[str, Float[torch.Tensor, "d_sae d_in"]]) -> pd.DataFrame:
    """sae, feature, max_cosine (the largest cosine of its decoder row with another feature
    of the same SAE), nearest: one row per feature of every SAE."""
    frames = []
    for sae, decoder in decoders.items():
        values, indices = max_cosines(decoder, decoder, same=True)
        frames.append(
            pd.DataFrame(
                {
                    "sae": sae,
                    "feature": np.arange(len(values)),
                    "max_cosine": values,
                    "nearest": indices,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def sae_matching(
    decoder_a: Float[torch.Tensor, "d_a d_in"], decoder_b: Float[torch.Tensor, "d_b d_in"]
) -> pd.DataFrame:
    """feature (of a), best_match (of b), max_cosine: each decoder row of a with its nearest
    decoder row of b. The mean of max_cosine is the consistency score of a against b."""
    if decoder_a.shape[1] != decoder_b.shape[1]:
        raise InputError(
            f"The two SAEs read activations of different widths ({decoder_a.shape[1]} and "
            f"{decoder_b.shape[1]}): their decoder directions cannot be compared."
        )
    values, indices = max_cosines(decoder_a, decoder_b)
    return pd.DataFrame(
        {"feature": np.arange(len(values)), "best_match": indices, "max_cosine": values}
    )


@torch.inference_mode()
def match_heatmap(
    decoder_a: Float[torch.Tensor, "d_a d_in"],
    decoder_b: Float[torch.Tensor, "d_b d_in"],
    features_a: list[int],
    matching: pd.DataFrame,
) -> pd.DataFrame:
    """feature_a, feature_b, cosine for every pair of `features_a` and their best matches in
    b (`sae_matching` rows), the columns in the order the rows first name them."""
    best = matching.set_index("feature").loc[features_a, "best_match"].tolist()
    features_b = list(dict.fromkeys(best))
    rows = torch.nn.functional.normalize(decoder_a[features_a].float(), dim=1)  # [a, d_in]
    cols = torch.nn.functional.normalize(decoder_b[features_b].float(), dim=1)  # [b, d_in]
    cosines = (rows @ cols.T).double().numpy()  # [a, b]
    return pd.DataFrame(
        {
            "feature_a": np.repeat(features_a, len(features_b)),
            "feature_b": np.tile(features_b, len(features_a)),
            "cosine": cosines.reshape(-1),
        }
    )


def decoder_matches(
    decoders: Mapping[str, Float[torch.Tensor, "d_sae d_in"]],
    settings: LineageSettings = DEFAULT_LINEAGE,
) -> pd.DataFrame:
    """`MATCH_COLUMNS` by decoder cosine: every feature's k nearest decoder directions in
    each other SAE of the same d_in (decoders from the loaded source: the store has none)."""
    frames = []
    for sae, queries in decoders.items():
        for other, candidates in decoders.items():
            if other != sae and candidates.shape[1] == queries.shape[1]:
                values, indices = cosine_topk(queries, candidates, settings.k)
                frames.append(long_matches(sae, other, values.double().numpy(), indices.numpy()))
    if not frames:
        return pd.DataFrame(columns=MATCH_COLUMNS)
    return pd.concat(frames, ignore_index=True)
