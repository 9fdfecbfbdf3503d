"""Store reads of whole activation matrices: one SAE's sparse activations over every token,
and every text's pooled activation, for the measures that compare features across SAEs
(activation correlation) and probe the corpus's categories (k-sparse probing).

Owns the SQL of those bulk reads. Tokens are numbered 0..n_tokens-1 in (text_id, pos) order
over the corpus's real tokens (`tokens`), so the rows of two SAEs index the same tokens;
texts keep their `text_id`. Every query is parameterised (`?`) and checks the SAE name first
(unknown -> `StoreError`). It does not build matrices or compute scores
(`explorer.analysis.lineage`, `explorer.analysis.field_metrics`).
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

from explorer.store.reader import Store

TextPooling = Literal["mean", "max"]

_TOKEN_ROWS_SQL = """
WITH numbered AS (
    SELECT text_id, pos, (row_number() OVER (ORDER BY text_id, pos) - 1)::BIGINT AS token
    FROM tokens)
SELECT n.token, a.feature::BIGINT AS feature, a.value
FROM acts a JOIN numbered n USING (text_id, pos)
WHERE a.sae_idx = ?
"""

_TEXT_MEAN_SQL = """
SELECT text_id::BIGINT AS text_id, feature::BIGINT AS feature, act AS value
FROM feature_text WHERE sae_idx = ? AND act > 0
"""

_TEXT_MAX_SQL = """
SELECT text_id::BIGINT AS text_id, feature::BIGINT AS feature, max(value) AS value
FROM acts WHERE sae_idx = ? GROUP BY text_id, feature
"""


def n_tokens(store: Store) -> int:
    """The number of real tokens of the corpus (the rows of a token activation matrix)."""
    return int(store.query("SELECT count(*) AS n FROM tokens")["n"].iloc[0])


def token_rows(store: Store, sae: str) -> pd.DataFrame:
    """token (0..n_tokens-1, in text_id then pos order), feature, value of every positive
    activation of `sae`, in no particular order."""
    return store.query(_TOKEN_ROWS_SQL, [store.sae(sae).idx])


def text_rows(store: Store, sae: str, pooling: TextPooling = "mean") -> pd.DataFrame:
    """text_id, feature, value of every text where a feature of `sae` fires: its mean over
    the text's tokens (zeros included; the stored `feature_text`) or its max (from `acts`)."""
    sql = {"mean": _TEXT_MEAN_SQL, "max": _TEXT_MAX_SQL}[pooling]
    return store.query(sql, [store.sae(sae).idx])


def text_categories(store: Store) -> pd.DataFrame:
    """text_id, category of every text with at least one token, by text_id."""
    return store.query(
        """SELECT text_id::BIGINT AS text_id, category FROM texts WHERE n_tokens > 0
        ORDER BY text_id"""
    )
