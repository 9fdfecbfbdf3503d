"""Compare SAEs (layers) side by side: quality, specialists and frequency vs specialization.

Owns the one-row-per-SAE table of the compare page, built from the store's `saes` table
(quality measured at build: l0, explained_variance, dead_fraction and dense_fraction over
every token; ce_loss_recovered, kl_divergence and l2_ratio on the category-stratified sample
of quality_texts texts, described by `quality_sample_note`) and
the `Specialists` of one `SpecialistSettings` (`load_specialists`): specialist features
and their percentage of the live features, categories with a specialist, the median
frequency rank of specialists and of general features, Spearman's rho of token frequency
against the best score (`explorer.analysis.frequency`), and the largest best score.
Per-category specialist counts per SAE are `explorer.analysis.specialists.category_matrix`.
Pure pandas; no SQL, no drawing.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from explorer.analysis.frequency import frequency_specialization_correlation, frequency_summary
from explorer.analysis.specialists import Specialists, category_matrix, layer_progression

QUALITY_METRICS: dict[str, str] = {
    "l0": "L0 (active features per token)",
    "explained_variance": "explained variance",
    "ce_loss_recovered": "CE loss recovered",
    "kl_divergence": "KL divergence (nats/token)",
    "l2_ratio": "shrinkage (L2 ratio)",
    "dead_fraction": "dead fraction",
    "dense_fraction": "dense fraction (>10% of tokens)",
    "quality_texts": "texts in the quality sample",
}
COMPARE_COLUMNS = [
    "sae", "layer", *QUALITY_METRICS, "n_features", "n_alive", "n_specialists",
    "pct_specialists", "categories_with_specialists", "n_categories", "median_rank_specialists",
    "median_rank_general", "spearman_rho", "spearman_p", "max_score",
]  # fmt: skip


def compare_saes(saes: pd.DataFrame, specialists: Specialists) -> pd.DataFrame:
    """One row per SAE of `saes` (`Store.saes`), by layer then name, with `COMPARE_COLUMNS`.

    n_specialists counts the live features whose kind is not "general" (category or value
    specialists, as on the frequency page); pct_specialists is their share of the live
    features; max_score is the largest best score (the settings' measure) of the SAE's
    features; categories_with_specialists / n_categories as `layer_progression`.
    """
    progression = layer_progression(category_matrix(specialists.table)).set_index("sae")
    rows = []
    for sae in saes["sae"]:
        features = specialists.features[specialists.features["sae"] == sae]
        summary = frequency_summary(features)
        correlation = frequency_specialization_correlation(features)
        rows.append(
            {
                "sae": sae,
                "n_features": summary["n_features"],
                "n_alive": summary["n_alive"],
                "n_specialists": summary["n_specialists"],
                "pct_specialists": summary["pct_specialists"],
                "categories_with_specialists": progression["categories_with_specialists"].get(
                    sae, 0
                ),
                "n_categories": progression["n_categories"].get(sae, 0),
                "median_rank_specialists": summary["median_rank_specialists"],
                "median_rank_general": summary["median_rank_general"],
                "spearman_rho": correlation["rho"],
                "spearman_p": correlation["p_value"],
                "max_score": float(features["best_score"].max())
                if features["best_score"].notna().any()
                else np.nan,
            }
        )
    table = saes[["sae", "layer", *QUALITY_METRICS]].merge(pd.DataFrame(rows), on="sae")
    table = table.sort_values(["layer", "sae"], na_position="last", ignore_index=True)
    return table[COMPARE_COLUMNS]


def quality_sample_note(saes: pd.DataFrame, meta: dict[str, str]) -> str:
    """One sentence saying which numbers of `saes` (`Store.saes`) were measured on the
    quality sample and how it was drawn (from the build settings in `meta`), or that the
    store does not record it."""
    sizes = saes["quality_texts"].dropna() if "quality_texts" in saes else pd.Series(dtype=float)
    try:
        settings = json.loads(meta.get("settings", "{}"))
    except (TypeError, ValueError):
        settings = {}
    per_category = settings.get("quality_per_category")
    if sizes.empty or per_category is None:
        return (
            "This store does not record the texts CE loss recovered was measured on (older "
            "stores used the corpus's first 32 texts); rebuild it to measure on a "
            "category-stratified sample."
        )
    n_texts = int(sizes.iloc[0])
    seed = settings.get("quality_seed", 0)
    return (
        f"CE loss recovered, KL divergence and shrinkage: {n_texts:,} texts, up to "
        f"{per_category} of each category drawn at random (seed {seed}), every token of them "
        "counted; L0, explained variance, dead and dense fractions: every token of the corpus."
    )
