"""Store reads behind the specialist findings and their controls.

Owns the SQL that the specialist analysis needs beyond `Store`: every feature's text
activations over the whole corpus (`feature_text`, never `acts`), the texts with their
category, source and labels, and how often given token ids occur in each text (`tokens`),
for the token-confound check, and the activations at the positions of one token (the `=` of
arithmetic texts) of the texts of given sources. Every query is parameterised and runs on its
own `store.cursor()`. The measures computed from these rows live in `explorer.analysis.specialists`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from explorer.store.reader import Store

_SAES_SQL = "SELECT sae_idx, sae, layer FROM saes ORDER BY sae_idx"
_TEXT_ACTIVATIONS_SQL = """
SELECT feature, text_id, act FROM feature_text
WHERE sae_idx = ? AND text_id IN (SELECT text_id FROM texts WHERE n_tokens > 0)
ORDER BY feature, text_id
"""

_LABELLED_TEXTS_SQL = """
SELECT text_id::BIGINT AS text_id, category, source, labels, n_tokens::BIGINT AS n_tokens
FROM texts WHERE n_tokens > 0 ORDER BY text_id
"""

_TOKEN_TEXT_COUNTS_SQL = """
SELECT token_id::BIGINT AS token_id, text_id::BIGINT AS text_id, count(*) AS n
FROM tokens WHERE list_contains(?, token_id::BIGINT)
GROUP BY ALL ORDER BY token_id, text_id
"""

_MARKS_SQL = """
SELECT t.text_id::BIGINT AS text_id, t.pos FROM tokens t JOIN texts x USING (text_id)
WHERE trim(t.token) = ? AND list_contains(?, x.source)
"""
_MARK_COUNTS_SQL = f"""
SELECT text_id, count(*)::BIGINT AS n_marks FROM ({_MARKS_SQL}) GROUP BY text_id ORDER BY text_id
"""
_MARKED_ACTIVATIONS_SQL = f"""
SELECT s.sae, s.layer, a.feature::BIGINT AS feature, a.text_id::BIGINT AS text_id,
    sum(a.value)::DOUBLE AS total
FROM acts a
JOIN ({_MARKS_SQL}) m ON a.text_id = m.text_id AND a.pos = m.pos
JOIN saes s USING (sae_idx)
GROUP BY ALL ORDER BY s.sae, feature, text_id
"""


def text_activations(store: Store) -> Iterator[tuple[str, int, dict[str, np.ndarray]]]:
    """Per SAE, in the store's SAE order: (sae, layer, rows), rows = arrays feature (uint32),
    text_id (uint32) and act (float32) sorted by feature and text: one row per feature and
    text where the feature fires, act = the sum of its activations over the text's tokens /
    the text's tokens. One SAE's rows at a time: at GPT-2 shape `feature_text` holds 156M
    rows, which as one data frame with the SAE's name on every row did not fit in 24 GB."""
    with store.cursor() as cursor:
        saes = cursor.execute(_SAES_SQL).fetchall()
    for sae_idx, sae, layer in saes:
        with store.cursor() as cursor:
            rows = cursor.execute(_TEXT_ACTIVATIONS_SQL, [sae_idx]).fetchnumpy()
        yield sae, int(layer), {name: np.asarray(rows[name]) for name in rows}


def labelled_texts(store: Store) -> pd.DataFrame:
    """text_id, category, source, labels (a list), n_tokens of every text with at least one
    token."""
    with store.cursor() as cursor:
        return cursor.execute(_LABELLED_TEXTS_SQL).df()


def token_text_counts(store: Store, token_ids: list[int] | np.ndarray) -> pd.DataFrame:
    """token_id, text_id, n: how many times each of `token_ids` occurs in each text that
    contains it."""
    ids = [int(token_id) for token_id in np.unique(np.asarray(token_ids, dtype=np.int64))]
    if not ids:
        empty = pd.Series(dtype=np.int64)
        return pd.DataFrame({"token_id": empty, "text_id": empty.copy(), "n": empty.copy()})
    with store.cursor() as cursor:
        return cursor.execute(_TOKEN_TEXT_COUNTS_SQL, [ids]).df()


def marked_activations(
    store: Store, token: str, sources: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """At the positions of the texts of `sources` whose token, stripped of spaces, is `token`
    (e.g. "="): (sae, layer, feature, text_id, total: the sum of the feature's activations
    at those positions) and (text_id, n_marks: how many such positions the text has). One
    join of `acts` with those positions, bounded to the texts of `sources`."""
    chosen = [str(source) for source in sources]
    with store.cursor() as cursor:
        totals = cursor.execute(_MARKED_ACTIVATIONS_SQL, [token, chosen]).df()
        marks = cursor.execute(_MARK_COUNTS_SQL, [token, chosen]).df()
    return totals, marks
