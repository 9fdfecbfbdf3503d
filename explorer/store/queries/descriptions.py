"""Store reads behind the automatic feature descriptions and their offline score.

Owns the SQL of `explorer.analysis.descriptions`: each feature's promoted tokens that occur in
the corpus (`logit_lens` joined to `token_counts`), the corpus's token ids (to mark logit-lens
tokens that never occur in it), and the one grouped scan of `acts` joined to `tokens` that the
description score needs. That scan splits the corpus's texts into a *making* half and a
*held-out* half by a multiplicative hash of `text_id` (Knuth's 2654435761, modulo 2^32; the
text is held out when the product's top bit is set), so the split is the same in every
build, on every machine and for every DuckDB version, and a category's consecutive text ids
fall about half in each half. Every query is parameterised (`?` or `$name`) and validates the
SAE name first.

It decides nothing about what a description says or how it is scored (the analysis module
does) and renders nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from explorer.errors import InputError, bounded_int
from explorer.store.reader import Store

HASH_MULTIPLIER = 2_654_435_761
MAX_PROMOTED = 20

# 1 when the text is in the held-out half, 0 when in the making half.
_HALF_SQL = "(((text_id::UBIGINT * $multiplier) % 4294967296) >= 2147483648)::INTEGER"

_SPLIT_COUNTS_SQL = f"""
WITH active AS (
    SELECT a.feature, t.token_id, {_HALF_SQL.replace("text_id", "a.text_id")} AS half
    FROM acts a JOIN tokens t ON t.text_id = a.text_id AND t.pos = a.pos
    WHERE a.sae_idx = $sae_idx),
per_token AS (
    SELECT feature, token_id,
        count(*) FILTER (WHERE half = 0) AS n_make, count(*) FILTER (WHERE half = 1) AS n_held
    FROM active GROUP BY feature, token_id),
totals AS (
    SELECT feature, sum(n_make)::BIGINT AS make_total, sum(n_held)::BIGINT AS held_total
    FROM per_token GROUP BY feature),
candidates AS (
    SELECT p.feature, p.token_id, p.n_make, p.n_held
    FROM per_token p JOIN totals USING (feature)
    WHERE p.n_make >= $min_count AND p.n_make >= $min_share * totals.make_total)
SELECT t.feature::BIGINT AS feature, t.make_total, t.held_total,
    c.token_id::BIGINT AS token_id, c.n_make::BIGINT AS n_make, c.n_held::BIGINT AS n_held
FROM totals t LEFT JOIN candidates c USING (feature)
ORDER BY t.feature, c.n_make DESC, c.token_id
"""


def held_out(text_id: np.ndarray | pd.Series) -> np.ndarray:
    """True for the texts of the held-out half (the same rule as the SQL, in numpy)."""
    ids = np.asarray(text_id, dtype=np.uint64)
    return (ids * np.uint64(HASH_MULTIPLIER)) % np.uint64(2**32) >= np.uint64(2**31)


def split_token_counts(store: Store, sae: str, min_share: float, min_count: int) -> pd.DataFrame:
    """Per live feature of `sae`, its active tokens in each half of the corpus, and the token
    ids that hold at least `min_share` of its making-half active tokens (and at least
    `min_count` of them): one grouped scan of the SAE's `acts` rows joined to `tokens`.

    Columns: feature, make_total, held_total (the feature's active tokens in the making /
    held-out half), token_id, n_make, n_held (that token's share of them); one row per
    candidate token, most making-half rows first, or one row with token_id null for a feature
    without a candidate. Features that never fire have no row.
    """
    ref = store.sae(sae)
    if not 0 < min_share <= 1:
        raise InputError(f"The minimum token share must be in (0, 1], got {min_share!r}.")
    min_count = bounded_int("The minimum token count", min_count, 1, 1_000_000)
    return store.query(
        _SPLIT_COUNTS_SQL,
        {
            "sae_idx": ref.idx,
            "multiplier": HASH_MULTIPLIER,
            "min_share": float(min_share),
            "min_count": min_count,
        },
    )


def token_counts_by_half(store: Store) -> pd.DataFrame:
    """token_id, n_make, n_held: each token id's rows of `tokens` in each half of the corpus."""
    return store.query(
        f"""SELECT token_id::BIGINT AS token_id,
            count(*) FILTER (WHERE half = 0) AS n_make, count(*) FILTER (WHERE half = 1) AS n_held
        FROM (SELECT token_id, {_HALF_SQL} AS half FROM tokens)
        GROUP BY token_id ORDER BY token_id""",
        {"multiplier": HASH_MULTIPLIER},
    )


def promoted_in_corpus(store: Store, sae: str, n_tokens: int) -> pd.DataFrame:
    """feature, rank, token_id, token, logit: each feature's first `n_tokens` promoted tokens
    (`logit_lens` rank > 0, largest logit first) among those that occur in the corpus, with
    their rank among all stored promoted tokens; by feature then rank."""
    ref = store.sae(sae)
    n_tokens = bounded_int("The number of promoted tokens", n_tokens, 1, MAX_PROMOTED)
    return store.query(
        """SELECT feature, rank, token_id, token, logit FROM (
            SELECT l.feature::BIGINT AS feature, l.rank::INTEGER AS rank,
                l.token_id::BIGINT AS token_id, l.token, l.logit::DOUBLE AS logit,
                row_number() OVER (PARTITION BY l.feature ORDER BY l.rank) AS kept
            FROM logit_lens l SEMI JOIN token_counts c USING (token_id)
            WHERE l.sae_idx = ? AND l.rank > 0)
        WHERE kept <= ?
        ORDER BY feature, rank""",
        [ref.idx, n_tokens],
    )


def corpus_token_ids(store: Store, token_ids: list[int]) -> set[int]:
    """The ids among `token_ids` that occur in the corpus (rows of `token_counts`)."""
    ids = [int(token_id) for token_id in token_ids]
    if not ids:
        return set()
    found = store.query(
        "SELECT token_id::BIGINT AS token_id FROM token_counts WHERE list_contains(?, token_id)",
        [ids],
    )
    return set(found["token_id"].tolist())


def lens_tokens_in_corpus(store: Store, sae: str, n_tokens: int) -> pd.DataFrame:
    """feature, promoted, suppressed: per feature of `sae` with a stored logit lens, its first
    `n_tokens` promoted (largest logit first) and suppressed (most negative first) tokens among
    those that occur in the corpus; empty lists where none does. n_hidden and n_stored: the
    feature's stored lens tokens that never occur in the corpus, and all of them."""
    ref = store.sae(sae)
    n_tokens = bounded_int("The number of tokens", n_tokens, 1, MAX_PROMOTED)
    return store.query(
        """WITH lens AS (
            SELECT l.feature, l.rank, l.token, l.token_id IN (SELECT token_id FROM token_counts)
                AS in_corpus
            FROM logit_lens l WHERE l.sae_idx = ?),
        kept AS (
            SELECT *, row_number() OVER (PARTITION BY feature, rank > 0 ORDER BY abs(rank)) AS nth
            FROM lens WHERE in_corpus)
        SELECT f.feature::BIGINT AS feature,
            coalesce(list(k.token ORDER BY abs(k.rank)) FILTER (WHERE k.rank > 0), [])
                AS promoted,
            coalesce(list(k.token ORDER BY abs(k.rank)) FILTER (WHERE k.rank < 0), [])
                AS suppressed,
            any_value(f.n_hidden) AS n_hidden, any_value(f.n_stored) AS n_stored
        FROM (SELECT feature, count(*) FILTER (WHERE NOT in_corpus) AS n_hidden,
                count(*) AS n_stored
              FROM lens GROUP BY feature) f
        LEFT JOIN kept k ON k.feature = f.feature AND k.nth <= ?
        GROUP BY f.feature ORDER BY f.feature""",
        [ref.idx, n_tokens],
    )
