"""The first visit's guide: a few features worth opening, and what each page answers.

Owns the choice of the features Home suggests (each SAE's best explained feature by its
description score, `descriptions.rank_by_score`, and each category's strongest specialist
under the settings given, `specialists.top_specialists`), the one the feature page opens on
without a link (`first_pick`), and the one-line question each page of the app answers
(`PAGE_QUESTIONS`, by page script). Rendering is `explorer.ui.guide_views`'.
"""

from __future__ import annotations

import pandas as pd

from explorer.analysis.descriptions import rank_by_score
from explorer.analysis.specialists import top_specialists

# What each page answers, by its script under app_pages/ (Home itself is not listed).
PAGE_QUESTIONS: dict[str, str] = {
    "app_pages/feature.py": "What does one feature fire on, what does it promote, and what "
    "resembles it?",
    "app_pages/specialists.py": "Which features specialise in a category of text, at which "
    "layer, and does each finding beat chance and replicate?",
    "app_pages/frequency.py": "Are the specialists the rare features?",
    "app_pages/tokens.py": "Which features fire on each token of a text?",
    "app_pages/rankings.py": "Which features are strongest, most frequent or best explained, "
    "and which fire together?",
    "app_pages/taxonomy.py": "Which tokens does each feature fire on, and what kind of feature "
    "does that make it?",
    "app_pages/logit_lens.py": "Which tokens does a feature promote or suppress, and which "
    "features promote a token?",
    "app_pages/search.py": "Which features match a label, a promoted token or a text?",
    "app_pages/atlas.py": "How do the features lie next to each other on a map of their "
    "decoder directions?",
    "app_pages/compare.py": "How do the SAEs (layers) compare in quality and specialisation?",
    "app_pages/ablation.py": "What changes in the model's output when features are ablated, "
    "clamped or steered?",
    "app_pages/methods.py": "How is each score, test and threshold defined?",
}
PICK_COLUMNS = ["why", "sae", "feature"]


def features_worth_opening(described: pd.DataFrame, specialists: pd.DataFrame) -> pd.DataFrame:
    """The features to suggest on a first visit: each SAE's best explained feature (highest
    description score among the scored features of `described`, several SAEs'
    `described_features`; none for an SAE without scores) in SAE order, then each category's
    strongest specialist (`specialists`: a `Specialists.table`) by family and category.

    Returns why (a short reason with the number behind it), sae, feature.
    """
    rows: list[dict] = []
    if "f1" in described:
        for sae, table in described.groupby("sae", sort=False):
            for _, best in rank_by_score(table, best=True, k=1).iterrows():
                reason = f"best explained of {sae} (description F1 {best['f1']:.2f})"
                rows.append({"why": reason, "sae": sae, "feature": int(best["feature"])})
    for _, row in top_specialists(specialists, per_category=1).iterrows():
        reason = f"strongest {row['category']} specialist (score {row['score']:.2f})"
        rows.append({"why": reason, "sae": row["sae"], "feature": int(row["feature"])})
    return pd.DataFrame(rows, columns=PICK_COLUMNS).astype({"feature": "int64"})


def first_pick(described: pd.DataFrame) -> tuple[str, int] | None:
    """The feature a first visit of the feature page opens on: the best explained feature of
    all SAEs in `described` (ties: `rank_by_score`'s order, then the first SAE); None when
    no feature is scored."""
    if "f1" not in described or not described["scored"].any():
        return None
    best = rank_by_score(described, best=True, k=1).iloc[0]
    return str(best["sae"]), int(best["feature"])
