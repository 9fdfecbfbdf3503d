"""Store reads for the feature and token pages, beyond what `Store` offers.

Owns the SQL of the feature dashboard and the token view: context windows around examples
(tokens plus one feature's activations), one feature over many texts, navigation between live
features, and co-firing features (Jaccard over tokens or texts). Every query is parameterised
(`?`), runs on its own `store.cursor()`, and validates the SAE name and feature ids against
the store's `saes` table first (unknown SAE -> `StoreError`, feature out of range ->
`InputError`). Reads are range reads on one feature's run of `acts` where the question allows;
co-firing joins the feature's positions with the rest of its SAE.

It does not open stores, compute scores from tensors (`explorer.analysis`) or render.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from explorer.errors import InputError, bounded_int, markdown_escaped
from explorer.store.reader import Store
from explorer.store.schema import MAX_FEATURES_PER_QUERY

MAX_WINDOW = 64
MAX_TEXTS = 1000
MAX_NEIGHBOURS = 200

CoFiringLevel = Literal["token", "text"]


def live_features(store: Store, sae: str) -> np.ndarray:
    """Ids of the SAE's features that fire at least once in the corpus, ascending."""
    row = store.sae(sae)
    rows = store.query(
        """SELECT feature::BIGINT AS feature FROM feature_stats
        WHERE sae_idx = ? AND n_active_tokens > 0 ORDER BY feature""",
        [row.idx],
    )
    return rows["feature"].to_numpy()


def adjacent_live_feature(store: Store, sae: str, feature: int, step: Literal[-1, 1]) -> int | None:
    """The nearest live feature below (`step=-1`) or above (`step=1`) `feature`, if any."""
    row = store.sae(sae)
    feature = store.check_feature(row.name, feature)
    if step not in (-1, 1):
        raise InputError(f"step must be -1 or 1, got {step!r}.")
    pick = (
        "max(feature) FILTER (WHERE feature < ?)"
        if step < 0
        else ("min(feature) FILTER (WHERE feature > ?)")
    )
    with store.cursor() as cursor:
        found = cursor.execute(
            f"SELECT {pick} FROM feature_stats WHERE sae_idx = ? AND n_active_tokens > 0",
            [feature, row.idx],
        ).fetchone()[0]
    return None if found is None else int(found)


def example_windows(
    store: Store,
    sae: str,
    feature: int,
    examples: pd.DataFrame,
    before: int = 12,
    after: int = 4,
) -> pd.DataFrame:
    """Context windows of examples with the feature's activation on every token.

    `examples` has `text_id` and `pos` (the example's own position); example i is its i-th
    row. Returns one row per token in `pos - before .. pos + after`: example, text_id, pos,
    token, value (0 where the feature is inactive), center (pos is the example's), and
    cut_before / cut_after (the window does not reach the text's first / last token).
    """
    row = store.sae(sae)
    feature = store.check_feature(row.name, feature)
    before = bounded_int("before", before, 0, MAX_WINDOW, text=False)
    after = bounded_int("after", after, 0, MAX_WINDOW, text=False)
    if len(examples) > MAX_TEXTS:
        raise InputError(f"Give at most {MAX_TEXTS} examples, got {len(examples)}.")
    return store.query(
        """WITH ex AS (
            SELECT unnest(?::BIGINT[]) AS example, unnest(?::BIGINT[]) AS text_id,
                unnest(?::INTEGER[]) AS center),
        windows AS (
            SELECT ex.example, t.text_id::BIGINT AS text_id, t.pos::INTEGER AS pos, t.token,
                t.pos = ex.center AS center
            FROM ex JOIN tokens t ON t.text_id = ex.text_id
                AND t.pos BETWEEN ex.center - ? AND ex.center + ?),
        feature_acts AS (
            SELECT text_id::BIGINT AS text_id, pos::INTEGER AS pos, value FROM acts
            WHERE sae_idx = ? AND feature = ?
                AND text_id IN (SELECT text_id FROM ex))
        SELECT w.example, w.text_id, w.pos, w.token, coalesce(a.value, 0)::FLOAT AS value,
            w.center,
            min(w.pos) OVER (PARTITION BY w.example) > 1 AS cut_before,
            max(w.pos) OVER (PARTITION BY w.example) < x.n_tokens AS cut_after
        FROM windows w JOIN texts x ON x.text_id = w.text_id
        LEFT JOIN feature_acts a ON a.text_id = w.text_id AND a.pos = w.pos
        ORDER BY w.example, w.pos""",
        [
            list(range(len(examples))),
            examples["text_id"].astype("int64").tolist(),
            examples["pos"].astype("int64").tolist(),
            before,
            after,
            row.idx,
            feature,
        ],
    )


def texts_with_feature(
    store: Store, sae: str, feature: int, text_ids: Sequence[int]
) -> pd.DataFrame:
    """Every token of the given texts with one feature's activation: the category view.

    Same columns as `example_windows`, `example` being the text's index in `text_ids`; no
    window is cut and `center` marks each text's largest activation.
    """
    row = store.sae(sae)
    feature = store.check_feature(row.name, feature)
    if len(text_ids) > MAX_TEXTS:
        raise InputError(f"Give at most {MAX_TEXTS} texts, got {len(text_ids)}.")
    return store.query(
        """WITH chosen AS (
            SELECT unnest(?::BIGINT[]) AS example, unnest(?::BIGINT[]) AS text_id),
        feature_acts AS (
            SELECT text_id::BIGINT AS text_id, pos::INTEGER AS pos, value FROM acts
            WHERE sae_idx = ? AND feature = ? AND text_id IN (SELECT text_id FROM chosen)),
        joined AS (
            SELECT c.example, t.text_id::BIGINT AS text_id, t.pos::INTEGER AS pos, t.token,
                coalesce(a.value, 0)::FLOAT AS value
            FROM chosen c JOIN tokens t ON t.text_id = c.text_id
            LEFT JOIN feature_acts a ON a.text_id = t.text_id AND a.pos = t.pos)
        SELECT *, value > 0 AND value = max(value) OVER (PARTITION BY example) AS center,
            false AS cut_before, false AS cut_after
        FROM joined ORDER BY example, pos""",
        [list(range(len(text_ids))), [int(t) for t in text_ids], row.idx, feature],
    )


def feature_text_maxima(store: Store, sae: str, feature: int) -> pd.DataFrame:
    """text_id, category, max_value, n_active of every text where the feature fires,
    strongest first (a range read on the feature's run of `acts`)."""
    row = store.sae(sae)
    feature = store.check_feature(row.name, feature)
    return store.query(
        """WITH per_text AS (
            SELECT text_id, max(value) AS max_value, count(*) AS n_active FROM acts
            WHERE sae_idx = ? AND feature = ? GROUP BY text_id)
        SELECT p.text_id::BIGINT AS text_id, t.category, p.max_value, p.n_active
        FROM per_text p JOIN texts t USING (text_id)
        ORDER BY p.max_value DESC, p.text_id""",
        [row.idx, feature],
    )


def text_categories(store: Store, text_ids: Sequence[int]) -> pd.DataFrame:
    """text_id, category of the given texts (unknown ids are left out)."""
    if len(text_ids) > MAX_TEXTS:
        raise InputError(f"Give at most {MAX_TEXTS} texts, got {len(text_ids)}.")
    return store.query(
        """SELECT text_id::BIGINT AS text_id, category FROM texts
        WHERE text_id IN (SELECT unnest(?::BIGINT[])) ORDER BY text_id""",
        [[int(t) for t in text_ids]],
    )


def feature_scales(store: Store, sae: str, features: Sequence[int]) -> dict[int, float]:
    """Each feature's largest activation over the corpus (0 for dead features)."""
    row = store.sae(sae)
    if len(features) > MAX_FEATURES_PER_QUERY:
        raise InputError(f"Give at most {MAX_FEATURES_PER_QUERY} features, got {len(features)}.")
    chosen = sorted({store.check_feature(row.name, f) for f in features})
    rows = store.query(
        """SELECT feature::BIGINT AS feature, "max" FROM feature_stats
        WHERE sae_idx = ? AND feature IN (SELECT unnest(?::BIGINT[]))""",
        [row.idx, chosen],
    )
    return dict(zip(rows["feature"].tolist(), rows["max"].tolist(), strict=True))


def co_firing(
    store: Store,
    sae: str,
    feature: int,
    k: int = 10,
    level: CoFiringLevel = "token",
    other_sae: str | None = None,
) -> pd.DataFrame:
    """Features that fire together with `feature`, by Jaccard similarity.

    At `level="token"` two features co-fire on a (text, position) where both are active; at
    `"text"` on a text where both are active anywhere. Candidates come from `other_sae`
    (default: the same SAE, the feature itself excluded). Returns sae, feature, n_both,
    n_active (the candidate's tokens or texts) and jaccard = n_both / (n_self + n_active -
    n_both), best first (ties by feature id).
    """
    row = store.sae(sae)
    feature = store.check_feature(row.name, feature)
    other = row if other_sae is None else store.sae(other_sae)
    k = bounded_int("k", k, 1, MAX_NEIGHBOURS, text=False)
    if level not in ("token", "text"):
        raise InputError(f"level must be 'token' or 'text', got {markdown_escaped(repr(level))}.")
    if level == "token":
        own = "SELECT text_id, pos FROM acts WHERE sae_idx = ? AND feature = ?"
        both = """SELECT a.feature, count(*) AS n_both FROM acts a
            JOIN own o ON a.text_id = o.text_id AND a.pos = o.pos
            WHERE a.sae_idx = ? GROUP BY a.feature"""
        size = "n_active_tokens"
    else:
        own = "SELECT DISTINCT text_id FROM acts WHERE sae_idx = ? AND feature = ?"
        both = """SELECT a.feature, count(DISTINCT a.text_id) AS n_both FROM acts a
            JOIN own o ON a.text_id = o.text_id
            WHERE a.sae_idx = ? GROUP BY a.feature"""
        size = "n_active_texts"
    return store.query(
        f"""WITH own AS ({own}),
        n_self AS (SELECT count(*) AS n FROM own),
        both_active AS ({both})
        SELECT ? AS sae, b.feature::BIGINT AS feature, b.n_both, s.{size} AS n_active,
            b.n_both / (n_self.n + s.{size} - b.n_both) AS jaccard
        FROM both_active b CROSS JOIN n_self
        JOIN feature_stats s ON s.sae_idx = ? AND s.feature = b.feature
        WHERE NOT (? AND b.feature = ?)
        ORDER BY jaccard DESC, b.feature
        LIMIT ?""",
        [
            row.idx,
            feature,
            other.idx,
            other.name,
            other.idx,
            other.idx == row.idx,
            feature,
            k,
        ],
    )
