"""Feature lineage across SAEs (layers): each feature's best counterparts in the other SAEs,
by activation correlation over the corpus's tokens and by decoder cosine.

Owns the Pearson correlation of feature activations over every real token of the corpus
(zeros included), computed from the stored sparse rows with sparse algebra (one sparse
product per chunk of query features, never a Python loop over features), the top-k matches
per feature and other SAE in one long table, and the per-feature views of the feature page
(the matches side by side, the best match's similarity by layer). Decoder cosines need the
loaded SAEs (the store holds no decoder rows): `explorer.analysis.decoder_metrics`, whose
`decoder_matches` returns the same `MATCH_COLUMNS`. No torch; it does not render or cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from explorer.errors import InputError
from explorer.store.queries.activations import n_tokens, token_rows
from explorer.store.reader import Store

if TYPE_CHECKING:
    from scipy import sparse

MATCH_COLUMNS = ["sae", "feature", "other_sae", "other_feature", "rank", "similarity"]
FEATURE_MATCH_COLUMNS = ["sae", "feature", "rank", "similarity"]  # one feature's matches
CHUNK = 1024


@dataclass(frozen=True)
class LineageSettings:
    """How many counterparts to keep per feature and other SAE.

    Attributes:
        k: matches kept per (feature, other SAE), best first; 1 to 50.
    """

    k: int = 5

    def __post_init__(self) -> None:
        if not 1 <= self.k <= 50:
            raise InputError(f"k must be from 1 to 50, got {self.k}.")


DEFAULT_LINEAGE = LineageSettings()


def activation_matrix(rows: pd.DataFrame, n_rows: int, n_features: int) -> sparse.csc_matrix:
    """[n_rows, n_features] sparse matrix of `rows` (token or text id in the first column,
    feature, value), float64, zeros where a feature does not fire."""
    from scipy import sparse

    index = rows.iloc[:, 0].to_numpy()
    return sparse.csc_matrix(
        (rows["value"].to_numpy(np.float64), (index, rows["feature"].to_numpy())),
        shape=(n_rows, n_features),
    )


def _moments(matrix: sparse.csc_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per column: mean and standard deviation over all rows (zeros included)."""
    n = matrix.shape[0]
    mean = np.asarray(matrix.sum(axis=0)).ravel() / n
    mean_sq = np.asarray(matrix.multiply(matrix).sum(axis=0)).ravel() / n
    sd = np.sqrt(np.maximum(mean_sq - mean**2, 0.0))
    return mean, np.where(sd > 1e-9 * np.abs(mean), sd, 0.0)  # rounding left of a constant


def correlation_topk(
    queries: sparse.csc_matrix, candidates: sparse.csc_matrix, k: int, chunk: int = CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """For each column of `queries` [n, q], the k columns of `candidates` [n, c] of largest
    Pearson correlation over the n rows: (correlations [q, k], indices [q, k]).

    corr = (x.y / n - mean_x mean_y) / (sd_x sd_y); a constant column (a dead feature, or one
    firing at one value on every row) has no correlation: NaN for a query, -inf as a
    candidate (ranked last). Ties keep the lower index.
    """
    n = queries.shape[0]
    k = min(k, candidates.shape[1])
    mean_q, sd_q = _moments(queries)
    mean_c, sd_c = _moments(candidates)
    candidates_csr = candidates.tocsr()
    values, indices = [], []
    for start in range(0, queries.shape[1], chunk):
        block = queries[:, start : start + chunk]  # [n, chunk]
        products = (block.T @ candidates_csr).toarray() / n  # [chunk, c]
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = (products - np.outer(mean_q[start : start + chunk], mean_c)) / np.outer(
                sd_q[start : start + chunk], sd_c
            )
        corr[:, sd_c == 0] = -np.inf
        constant = sd_q[start : start + chunk] == 0
        corr[constant] = -np.inf
        order = top_k(corr, k)  # [chunk, k]
        best = np.take_along_axis(corr, order, axis=1)
        best[constant] = np.nan
        values.append(best)
        indices.append(order)
    return np.concatenate(values), np.concatenate(indices)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row of `scores` [rows, columns] (no NaN), the indices of its k largest, largest
    first, ties to the lower index: `np.argsort(-scores, axis=1, kind="stable")[:, :k]`,
    found by partition instead of a full sort (sorting 24,576 candidates per query feature
    was most of the lineage's time at GPT-2 shape)."""
    keys = -scores
    if k >= keys.shape[1]:
        return np.argsort(keys, axis=1, kind="stable")[:, :k]
    picked = np.sort(np.argpartition(keys, k - 1, axis=1)[:, :k], axis=1)
    picked_keys = np.take_along_axis(keys, picked, axis=1)
    kth = picked_keys.max(axis=1)
    # the partition picks any of the keys equal to the k-th; where some were left out, take
    # the lowest indices among them, as the stable sort does
    ties = (keys == kth[:, None]).sum(axis=1) > (picked_keys == kth[:, None]).sum(axis=1)
    for row in np.flatnonzero(ties):
        better = np.flatnonzero(keys[row] < kth[row])
        equal = np.flatnonzero(keys[row] == kth[row])[: k - len(better)]
        picked[row] = np.sort(np.concatenate([better, equal]))
        picked_keys[row] = keys[row, picked[row]]
    return np.take_along_axis(picked, np.argsort(picked_keys, axis=1, kind="stable"), axis=1)


def long_matches(sae: str, other: str, values: np.ndarray, indices: np.ndarray) -> pd.DataFrame:
    """`MATCH_COLUMNS` of top-k matches (values and indices [features of sae, k])."""
    n_queries, k = values.shape
    return pd.DataFrame(
        {
            "sae": sae,
            "feature": np.repeat(np.arange(n_queries), k),
            "other_sae": other,
            "other_feature": indices.reshape(-1),
            "rank": np.tile(np.arange(1, k + 1), n_queries),
            "similarity": values.reshape(-1),
        }
    )


def correlation_matches(
    matrices: Mapping[str, sparse.csc_matrix], settings: LineageSettings = DEFAULT_LINEAGE
) -> pd.DataFrame:
    """`MATCH_COLUMNS`: every feature's k most correlated features in each other SAE
    (`matrices`: SAE name -> token x feature matrix over the same tokens); constant features
    (dead, or at one value on every token) are left out as queries and as matches."""
    frames = []
    for sae, queries in matrices.items():
        for other, candidates in matrices.items():
            if other != sae:
                values, indices = correlation_topk(queries, candidates, settings.k)
                frames.append(long_matches(sae, other, values, indices))
    if not frames:
        return pd.DataFrame(columns=MATCH_COLUMNS)
    matches = pd.concat(frames, ignore_index=True)
    return matches[np.isfinite(matches["similarity"])].reset_index(drop=True)


def token_matrices(store: Store) -> dict[str, sparse.csc_matrix]:
    """Every SAE's token x feature activation matrix over the corpus's real tokens."""
    n = n_tokens(store)
    return {
        row.sae: activation_matrix(token_rows(store, row.sae), n, int(row.d_sae))
        for row in store.saes().itertuples()
    }


def correlation_lineage(store: Store, settings: LineageSettings = DEFAULT_LINEAGE) -> pd.DataFrame:
    """`correlation_matches` of every SAE of `store` (one read of each SAE's `acts`)."""
    return correlation_matches(token_matrices(store), settings)


def feature_matches(matches: pd.DataFrame, sae: str, feature: int, k: int) -> pd.DataFrame:
    """One feature's rows of a `MATCH_COLUMNS` table, as sae (the other SAE), feature (the
    match), rank and similarity: the k best per other SAE, in the table's SAE order."""
    rows = matches[(matches["sae"] == sae) & (matches["feature"] == feature)]
    rows = rows[rows["rank"] <= k]
    return rows[["other_sae", "other_feature", "rank", "similarity"]].rename(
        columns={"other_sae": "sae", "other_feature": "feature"}
    )


def depth_profile(saes: pd.DataFrame, by_measure: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The best match per other SAE and measure, for the chart of similarity by depth:
    sae, layer, measure, feature, similarity (`by_measure`: measure name -> a
    `feature_matches` table), by layer."""
    frames = [
        rows[rows["rank"] == 1].assign(measure=measure)
        for measure, rows in by_measure.items()
        if len(rows)
    ]
    if not frames:
        return pd.DataFrame(columns=["sae", "layer", "measure", "feature", "similarity"])
    best = pd.concat(frames, ignore_index=True).merge(saes[["sae", "layer"]], on="sae")
    best = best.sort_values(["layer", "sae", "measure"], ignore_index=True)
    return best[["sae", "layer", "measure", "feature", "similarity"]]
