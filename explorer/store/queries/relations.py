"""Store reads for the rankings and relations page, beyond what `Store` offers.

Owns the SQL of "find features for a concept" from a category: for one SAE and one category,
each feature's text activations inside the category and over the whole corpus, read from the
precomputed `feature_category` and `category_ranks` tables (never from `acts`). Every query is
parameterised (`?`), runs on its own `store.cursor()` and checks the SAE name (unknown SAE ->
`StoreError`) and the category (unknown -> `InputError` naming the store's categories) first.

Co-firing features live in `explorer.store.queries.feature.co_firing`; the scores computed from
these rows live in `explorer.analysis.concepts`. It does not open stores or render.
"""

from __future__ import annotations

import pandas as pd

from explorer.errors import InputError, markdown_escaped
from explorer.store.reader import Store

_CATEGORY_CONTRAST_SQL = """
WITH per_feature AS (
    SELECT feature, sum(n_texts)::BIGINT AS n_total, sum(n_texts_active)::BIGINT AS n_active,
        sum(mean_act * n_texts) AS act_sum
    FROM feature_category WHERE sae_idx = ? GROUP BY feature)
SELECT c.feature::BIGINT AS feature, c.n_texts AS n_in, c.n_texts_active AS in_active,
    c.mean_act AS mean_in, p.n_total, p.n_active, p.act_sum,
    coalesce(r.active_rank_sum, 0) AS active_rank_sum
FROM feature_category c
JOIN per_feature p USING (feature)
LEFT JOIN category_ranks r
    ON r.sae_idx = c.sae_idx AND r.feature = c.feature AND r.category = c.category
WHERE c.sae_idx = ? AND c.category = ?
ORDER BY c.feature
"""


def categories(store: Store) -> list[str]:
    """The store's categories (of texts with at least one token), sorted."""
    return store.categories()["category"].tolist()


def category_contrast(store: Store, sae: str, category: str) -> pd.DataFrame:
    """One row per feature of `sae` that fires anywhere in the corpus, for one category.

    Columns: feature; n_in (texts of the category), in_active (those where the feature
    fires), mean_in (mean text activation over the category's texts, zeros included); n_total
    and n_active (the same counts over every text), act_sum (the sum of the text activations
    over every text, so the mean outside the category is (act_sum - mean_in x n_in) /
    (n_total - n_in)); active_rank_sum (`category_ranks`, 0 where it never fires in the
    category), from which `explorer.analysis.specialists.auroc_from_ranks` gives the AUROC.
    A text's activation is the sum of the feature's activations over its tokens / its tokens.
    """
    row = store.sae(sae)
    known = categories(store)
    if category not in known:
        raise InputError(
            f"Unknown category {markdown_escaped(repr(category))}; this store has "
            f"{markdown_escaped(known)}."
        )
    with store.cursor() as cursor:
        return cursor.execute(_CATEGORY_CONTRAST_SQL, [row.idx, row.idx, category]).df()
