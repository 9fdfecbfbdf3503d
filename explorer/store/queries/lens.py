"""Store reads for the logit lens page, beyond what `Store` offers.

Owns the SQL of the logit lens page: the browse table (each feature's first promoted and
suppressed tokens from `logit_lens`, with its frequency, largest activation and current
label), each feature's top examples with the activating and the following token (from
`feature_topk` and `tokens`, for the consistency check), and the rankings that feed the
diverse selection. Every query is parameterised (`?`), runs on its own `store.cursor()` and
validates the SAE name first (unknown SAE -> `StoreError`). Reads touch one SAE's rows of the
precomputed tables, never `acts`.

It does not run models (the live parts are `explorer.analysis.logit_lens` and
`explorer.analysis.lens_checks`) and does not render.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

from explorer.errors import InputError, bounded_int, markdown_escaped
from explorer.store.reader import Store

MAX_OVERVIEW_TOKENS = 20

Ranking = Literal["max_logit", "token_freq", "max_act"]
RANKINGS: dict[str, str] = {
    "max_logit": "largest promoted logit",
    "token_freq": "token frequency",
    "max_act": "largest activation",
}

# The newest label of each feature: `current_labels` is the user data sidecar's, registered
# on the query's cursor by `store.query(..., with_labels=True)`.
CURRENT_LABELS_SQL = "SELECT sae, feature, label, note FROM current_labels"

_RANKING_SQL: dict[str, str] = {
    "max_logit": """SELECT feature::BIGINT AS feature, logit::DOUBLE AS score FROM logit_lens
        WHERE sae_idx = ? AND rank = 1 ORDER BY score DESC, feature LIMIT ?""",
    "token_freq": """SELECT feature::BIGINT AS feature, token_freq AS score FROM feature_stats
        WHERE sae_idx = ? AND n_active_tokens > 0 ORDER BY score DESC, feature LIMIT ?""",
    "max_act": """SELECT feature::BIGINT AS feature, "max" AS score FROM feature_stats
        WHERE sae_idx = ? AND n_active_tokens > 0 ORDER BY score DESC, feature LIMIT ?""",
}


def lens_overview(store: Store, sae: str, n_tokens: int = 5) -> pd.DataFrame:
    """One row per feature of `sae`: feature, promoted (its first `n_tokens` promoted tokens,
    largest logit first), suppressed (most negative first), max_logit, min_logit (over the
    stored top / bottom tokens), token_freq, max_act and label (the newest, or None)."""
    row = store.sae(sae)
    n_tokens = bounded_int("The number of tokens", n_tokens, 1, MAX_OVERVIEW_TOKENS, text=False)
    return store.query(
        f"""WITH lens AS (
            SELECT feature,
                list(token ORDER BY rank) FILTER (WHERE rank > 0) AS promoted,
                list(token ORDER BY rank DESC) FILTER (WHERE rank < 0) AS suppressed,
                max(logit)::DOUBLE AS max_logit, min(logit)::DOUBLE AS min_logit
            FROM logit_lens WHERE sae_idx = ? AND abs(rank) <= ? GROUP BY feature),
        current AS ({CURRENT_LABELS_SQL})
        SELECT s.feature::BIGINT AS feature, l.promoted, l.suppressed, l.max_logit,
            l.min_logit, s.token_freq, s."max" AS max_act, c.label
        FROM feature_stats s LEFT JOIN lens l USING (feature)
        LEFT JOIN current c ON c.sae = ? AND c.feature = s.feature
        WHERE s.sae_idx = ?
        ORDER BY s.feature""",
        [row.idx, n_tokens, row.name, row.idx],
        with_labels=True,
    )


def top_examples_with_next(store: Store, sae: str) -> pd.DataFrame:
    """Every feature's stored top examples with the token that follows each one.

    Columns: feature, rank, text_id, pos, value, token_id, token (the activating token),
    next_token_id and next_token (the token at pos + 1; null at the end of a text), by
    feature then rank. Features that never fire have no rows.
    """
    row = store.sae(sae)
    return store.query(
        """SELECT k.feature::BIGINT AS feature, k.rank::INTEGER AS rank,
            k.text_id::BIGINT AS text_id, k.pos::INTEGER AS pos, k.value,
            t.token_id::BIGINT AS token_id, k.token,
            n.token_id::BIGINT AS next_token_id, n.token AS next_token
        FROM feature_topk k
        LEFT JOIN tokens t ON t.text_id = k.text_id AND t.pos = k.pos
        LEFT JOIN tokens n ON n.text_id = k.text_id AND n.pos = k.pos + 1
        WHERE k.sae_idx = ?
        ORDER BY k.feature, k.rank""",
        [row.idx],
    )


def feature_ranking(store: Store, sae: str, by: Ranking, n: int) -> pd.DataFrame:
    """The n first features of `sae` by `by` (see `RANKINGS`), best first, ties by id:
    feature, score. Frequency and activation rankings leave out features that never fire."""
    row = store.sae(sae)
    if by not in _RANKING_SQL:
        raise InputError(
            f"Rank features by one of {', '.join(RANKINGS)}, got {markdown_escaped(repr(by))}."
        )
    n = bounded_int("The number of candidates", n, 1, row.d_sae, text=False)
    return store.query(_RANKING_SQL[by], [row.idx, n])
