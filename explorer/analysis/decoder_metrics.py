"""Measures over SAE decoder directions: redundancy within an SAE, matching between two SAEs
(best match by max cosine, the consistency score, and the one-to-one Hungarian assignment),
the heatmap of the top features' matches, and every feature's nearest decoder directions in
the other SAEs (lineage by decoder cosine).

Owns the torch side of the field's metrics; the store holds no decoder rows, so every
function takes decoders (`W_dec` [d_sae, d_in]) the caller loaded, e.g. from
`explorer.sources`. Cosines come from `explorer.analysis.similarity.cosine_topk` (chunked,
never a normalised copy of a whole decoder); the one-to-one assignment needs the whole cosine
matrix of the features it matches, so it takes at most `MAX_ONE_TO_ONE` of each SAE (the most
frequent: `one_to_one_features`). Definitions: docs/methods.md, sections Feature redundancy,
Cross-SAE matching, One-to-one matching and Lineage. It does not read the store, render or
cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from scipy.optimize import linear_sum_assignment

from explorer.analysis.lineage import (
    DEFAULT_LINEAGE,
    MATCH_COLUMNS,
    LineageSettings,
    long_matches,
)
from explorer.analysis.similarity import cosine_topk
from explorer.errors import InputError

HEATMAP_FEATURES = 20
# Features of each SAE the one-to-one matching takes at most: its cosine matrix is
# 2,048 x 2,048 doubles (34 MB) and scipy assigns it in about a second; at 24,576 features the
# matrix alone would be 4.8 GB.
MAX_ONE_TO_ONE = 2048


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


def _check_widths(decoder_a: torch.Tensor, decoder_b: torch.Tensor) -> None:
    if decoder_a.shape[1] != decoder_b.shape[1]:
        raise InputError(
            f"The two SAEs read activations of different widths ({decoder_a.shape[1]} and "
            f"{decoder_b.shape[1]}): their decoder directions cannot be compared."
        )


def sae_matching(
    decoder_a: Float[torch.Tensor, "d_a d_in"], decoder_b: Float[torch.Tensor, "d_b d_in"]
) -> pd.DataFrame:
    """feature (of a), best_match (of b), max_cosine: each decoder row of a with its nearest
    decoder row of b. The mean of max_cosine is the consistency score of a against b."""
    _check_widths(decoder_a, decoder_b)
    values, indices = max_cosines(decoder_a, decoder_b)
    return pd.DataFrame(
        {"feature": np.arange(len(values)), "best_match": indices, "max_cosine": values}
    )


def one_to_one_features(frequency: pd.DataFrame, limit: int = MAX_ONE_TO_ONE) -> list[int]:
    """The features of one SAE its one-to-one matching takes, in feature order: all of them
    when it has at most `limit`, else the `limit` most frequent (smallest freq_rank; ties: the
    lower feature). `frequency`: the SAE's rows of `Store.frequency_table` (one per feature)."""
    if len(frequency) <= limit:
        return sorted(frequency["feature"].tolist())
    ranked = frequency.sort_values(["freq_rank", "feature"], kind="stable")
    return sorted(ranked["feature"].head(limit).tolist())


@torch.inference_mode()
def one_to_one_matching(
    decoder_a: Float[torch.Tensor, "d_a d_in"],
    decoder_b: Float[torch.Tensor, "d_b d_in"],
    features_a: Sequence[int] | None = None,
    features_b: Sequence[int] | None = None,
) -> pd.DataFrame:
    """feature_a, feature_b, cosine, best_cosine: the one-to-one assignment of the decoder
    rows `features_a` of a to the rows `features_b` of b (default: all) with the largest sum
    of cosines (the Hungarian problem, `scipy.optimize.linear_sum_assignment`), one row per
    pair (min of the two counts), by feature_a. best_cosine: feature_a's largest cosine with
    any of `features_b`, its best match among the same features, which may be another's."""
    _check_widths(decoder_a, decoder_b)
    rows_a = np.arange(decoder_a.shape[0]) if features_a is None else np.asarray(features_a)
    rows_b = np.arange(decoder_b.shape[0]) if features_b is None else np.asarray(features_b)
    if max(len(rows_a), len(rows_b)) > MAX_ONE_TO_ONE:
        raise InputError(
            f"One-to-one matching takes at most {MAX_ONE_TO_ONE:,} features of each SAE (got "
            f"{len(rows_a):,} and {len(rows_b):,}); pick them with one_to_one_features."
        )
    unit_a = torch.nn.functional.normalize(decoder_a[rows_a].float(), dim=1)  # [a, d_in]
    unit_b = torch.nn.functional.normalize(decoder_b[rows_b].float(), dim=1)  # [b, d_in]
    cosines = (unit_a @ unit_b.T).double().numpy()  # [a, b]
    assigned_a, assigned_b = linear_sum_assignment(cosines, maximize=True)  # by row
    return pd.DataFrame(
        {
            "feature_a": rows_a[assigned_a],
            "feature_b": rows_b[assigned_b],
            "cosine": cosines[assigned_a, assigned_b],
            "best_cosine": cosines.max(axis=1)[assigned_a],
        }
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
