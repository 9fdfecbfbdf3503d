"""Stored texts found by category and by a piece of their text, for pickers such as the
ablation lab's.

Owns one question and its SQL: the texts (with at least one token) of one category or of all,
whose text contains a typed piece (case-insensitive, literal, spaces included: `ILIKE` with
`%`, `_` and the escape character escaped, every value a parameter), by text id, at most
`MAX_TEXT_RESULTS` of them, each with the number of texts that matched so a page can say how
many it left out.
It does not render.
"""

from __future__ import annotations

import pandas as pd

from explorer.errors import InputError, bounded_int, markdown_escaped
from explorer.store.queries.search import LIKE_ESCAPE, MAX_QUERY_CHARS, escape_like
from explorer.store.reader import Store

MAX_TEXT_RESULTS = 200
PREVIEW_CHARS = 120  # `snippet`: the first characters of each text, for a picker's option


def find_texts(
    store: Store, contains: str = "", category: str | None = None, limit: int = 50
) -> pd.DataFrame:
    """text_id, category, n_tokens, snippet (the first `PREVIEW_CHARS` characters), n_matches
    (how many texts matched in all) of the texts of `category` (None: every category) whose
    text contains `contains` (case-insensitive, literal, spaces included; blank: every text),
    by text id, at most `limit` (1 to `MAX_TEXT_RESULTS`). A query over `MAX_QUERY_CHARS` characters
    or an unknown category raises InputError."""
    if not isinstance(contains, str) or len(contains) > MAX_QUERY_CHARS:
        raise InputError(f"A search text has at most {MAX_QUERY_CHARS} characters.")
    limit = bounded_int("The number of texts", limit, 1, MAX_TEXT_RESULTS)
    if category is not None and category not in set(store.categories()["category"]):
        raise InputError(f"There is no category {markdown_escaped(repr(category))} here.")
    pattern = f"%{escape_like(contains if contains.strip() else '')}%"
    return store.query(
        f"""SELECT text_id::BIGINT AS text_id, category, n_tokens,
            left(text, {PREVIEW_CHARS}) AS snippet, count(*) OVER ()::BIGINT AS n_matches
        FROM texts
        WHERE n_tokens > 0 AND (? IS NULL OR category = ?)
            AND text ILIKE ? ESCAPE '{LIKE_ESCAPE}'
        ORDER BY text_id
        LIMIT ?""",
        [category, category, pattern, limit],
    )
