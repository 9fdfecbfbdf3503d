"""Rankings of one SAE's features: strongest, most frequent, most selective, composite.

Owns the orderings of the rankings page and the columns each one is about. The input is one
SAE's rows of `Store.frequency_table` (or of `Specialists.features`, which carries the same
columns); "most selective" also needs that SAE's rows of the specialist table
(`explorer.analysis.specialists.specialist_table`, via `load_specialists`). Dead features
(never active on the corpus) are never ranked.

- strongest: the largest activation (`max`), ties by feature id;
- most frequent: token frequency (`freq_rank` 1 first);
- most selective: each feature's best category (its specialist category with the highest
  score of the chosen measure, else its highest-scoring category, as
  `classify_features` picks it), specialists first, then by score, support, feature id;
- composite: token frequency x mean activation when active (the feature's mean activation
  per token over the corpus).

Pure pandas; no SQL, no drawing.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from explorer.errors import InputError, bounded_int, markdown_escaped

Ranking = Literal["strongest", "most frequent", "most selective", "composite"]
RANKINGS: dict[Ranking, str] = {
    "strongest": "largest activation on the corpus",
    "most frequent": "share of the corpus tokens where it fires",
    "most selective": "best specialist score of one category (sidebar measure)",
    "composite": "token frequency x mean activation when active",
}
RANKING_COLUMNS: dict[Ranking, list[str]] = {
    "strongest": ["max", "max_text_act", "mean_active", "token_freq"],
    "most frequent": ["freq_rank", "token_freq", "n_active_tokens", "text_freq"],
    "most selective": [
        "category",
        "score",
        "is_specialist",
        "auroc",
        "support",
        "share",
        "token_freq",
    ],  # fmt: skip
    "composite": ["composite", "token_freq", "mean_active", "max"],
}
MAX_RANKED = 500


def best_categories(table: pd.DataFrame) -> pd.DataFrame:
    """Per (sae, feature) of the specialist table its best row: sae, feature, category,
    score, is_specialist, auroc, support, share (specialists first, then score, support)."""
    ordered = table.sort_values(
        ["sae", "feature", "is_specialist", "score", "support", "category"],
        ascending=[True, True, False, False, False, True],
    )
    best = ordered.drop_duplicates(["sae", "feature"])
    return best[
        ["sae", "feature", "category", "score", "is_specialist", "auroc", "support", "share"]
    ].reset_index(drop=True)


def rank_features(
    frequency: pd.DataFrame, ranking: Ranking, k: int, table: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The top k live features of one SAE by `ranking`: rank (1 first), sae, feature and the
    ranking's `RANKING_COLUMNS`. `frequency` holds one SAE's `frequency_table` rows; `table`
    that SAE's specialist table rows, needed by "most selective" only."""
    if ranking not in RANKINGS:
        raise InputError(
            f"ranking must be one of {', '.join(RANKINGS)}, got {markdown_escaped(repr(ranking))}."
        )
    k = bounded_int("The number of features", k, 1, MAX_RANKED, text=False)
    if frequency["sae"].nunique() > 1:
        raise InputError("Rank the features of one SAE at a time.")
    alive = frequency[frequency["n_active_tokens"] > 0]
    alive = alive.assign(composite=alive["token_freq"] * alive["mean_active"])
    if ranking == "strongest":
        ordered = alive.sort_values(["max", "feature"], ascending=[False, True])
    elif ranking == "most frequent":
        ordered = alive.sort_values("freq_rank")
    elif ranking == "composite":
        ordered = alive.sort_values(["composite", "feature"], ascending=[False, True])
    else:
        if table is None:
            raise InputError("The 'most selective' ranking needs the specialist table.")
        ordered = alive.merge(best_categories(table), on=["sae", "feature"]).sort_values(
            ["is_specialist", "score", "support", "feature"],
            ascending=[False, False, False, True],
        )
    top = ordered.head(k).reset_index(drop=True)
    top.insert(0, "rank", np.arange(1, len(top) + 1))
    return top[["rank", "sae", "feature", *RANKING_COLUMNS[ranking]]]
