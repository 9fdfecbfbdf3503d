"""Feature search: by label, by promoted token, and by a text that activates them.

Owns the search page's questions and their SQL. By label: the newest label of each feature
(`labels` keeps every version) containing the query, case-insensitive, as a parameterised
`ILIKE` whose wildcards (`%`, `_`) and escape character are escaped, so every character the
user types is literal. By token: features whose stored top promoted tokens (`logit_lens`,
ranks 1..max_rank) equal the query (surrounding spaces ignored, as BPE tokens carry a leading
space) or contain it (case-insensitive). Every result carries `sae` and `feature` so the page
can link to it; labels of SAEs that the store no longer has, or of features out of their
range, are left out.

It does not run the model or rank a typed text's features (`explorer.live.text` and
`explorer.analysis.text_activations` do: that is no SQL) and does not render.
"""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd

from explorer.errors import InputError, bounded_int, markdown_escaped
from explorer.store.queries.lens import CURRENT_LABELS_SQL
from explorer.store.reader import Store

MAX_QUERY_CHARS = 200
MAX_RESULTS = 1000
MAX_TOKEN_RANK = 100
LIKE_ESCAPE = "\\"

TokenMatch = Literal["exact", "substring"]
TOKEN_MATCHES: dict[str, str] = {
    "exact": "exact token (spaces around it ignored)",
    "substring": "token contains the text (any case)",
}


def escape_like(text: str) -> str:
    """`text` with LIKE's wildcards and the escape character escaped (use `ESCAPE '\\'`)."""
    for special in (LIKE_ESCAPE, "%", "_"):
        text = text.replace(special, LIKE_ESCAPE + special)
    return text


def _query(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InputError("Type something to search for: the search text is empty.")
    if len(text) > MAX_QUERY_CHARS:
        raise InputError(f"A search text has at most {MAX_QUERY_CHARS} characters.")
    return text


def _limit(limit: Any) -> int:
    return bounded_int("The number of results", limit, 1, MAX_RESULTS)


def _sae_filter(store: Store, sae: str | None) -> str | None:
    return None if sae is None else store.sae(sae).name


def search_labels(
    store: Store, text: str, sae: str | None = None, limit: int = 200
) -> pd.DataFrame:
    """Features whose current label contains `text` (case-insensitive, literal): sae,
    feature, label, note; by SAE (build order) then feature. `sae` restricts to one SAE."""
    pattern = f"%{escape_like(_query(text).strip())}%"
    return store.query(
        f"""WITH current AS ({CURRENT_LABELS_SQL})
        SELECT c.sae, c.feature::BIGINT AS feature, c.label, c.note
        FROM current c JOIN saes s ON s.sae = c.sae AND c.feature < s.d_sae
        WHERE c.label ILIKE ? ESCAPE '{LIKE_ESCAPE}' AND (? IS NULL OR c.sae = ?)
        ORDER BY s.sae_idx, c.feature
        LIMIT ?""",
        [pattern, _sae_filter(store, sae), _sae_filter(store, sae), _limit(limit)],
        with_labels=True,
    )


def search_tokens(
    store: Store,
    text: str,
    match: TokenMatch = "exact",
    sae: str | None = None,
    max_rank: int = 5,
    limit: int = 200,
) -> pd.DataFrame:
    """Features that promote a token matching `text` among their `max_rank` top tokens.

    Returns sae, feature, rank (of the token among the feature's promoted tokens), token_id,
    token, logit and label (current, or None): best rank first, then largest logit, SAE and
    feature. A feature appears once per matching token.
    """
    text = _query(text)
    if match not in TOKEN_MATCHES:
        raise InputError(
            f"Match tokens by one of {', '.join(TOKEN_MATCHES)}, got "
            f"{markdown_escaped(repr(match))}."
        )
    max_rank = bounded_int("The token rank", max_rank, 1, MAX_TOKEN_RANK)
    sae_name = _sae_filter(store, sae)
    return store.query(
        f"""WITH current AS ({CURRENT_LABELS_SQL})
        SELECT s.sae, l.feature::BIGINT AS feature, l.rank::INTEGER AS rank,
            l.token_id::BIGINT AS token_id, l.token, l.logit::DOUBLE AS logit, c.label
        FROM logit_lens l JOIN saes s USING (sae_idx)
        LEFT JOIN current c ON c.sae = s.sae AND c.feature = l.feature
        WHERE l.rank BETWEEN 1 AND ? AND (? IS NULL OR s.sae = ?)
            AND CASE WHEN ? THEN trim(l.token) = trim(?)
                ELSE contains(lower(l.token), lower(?)) END
        ORDER BY l.rank, l.logit DESC, s.sae_idx, l.feature
        LIMIT ?""",
        [max_rank, sae_name, sae_name, match == "exact", text, text, _limit(limit)],
        with_labels=True,
    )
