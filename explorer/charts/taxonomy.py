"""Charts of the token-taxonomy page: DataFrame in, altair.Chart out.

Owns the label distribution of one SAE (monosemantic labels solid, the others faded), the
scatter of each feature's largest token enrichment against its activity with the enrichment
ceiling N / active tokens drawn (points link to the feature's page) and the per-SAE
comparison of two stores. Input frames are those of `explorer.analysis.enrichment`
(`label_distribution`, `feature_taxonomy`, `compare_saes` with a `store` column). No streamlit.
"""

from __future__ import annotations

from typing import Literal

import altair as alt
import numpy as np
import pandas as pd

from explorer.analysis.enrichment import LABELS
from explorer.charts import feature_href

LABEL_COLORS = {
    "specific number": "#d62728",
    "number range": "#ff7f0e",
    "operator": "#1f77b4",
    "word": "#2ca02c",
    "code": "#9467bd",
    "punctuation": "#8c564b",
    "other": "#e377c2",
    "polysemantic": "#7f7f7f",
    "unlabelled": "#c7c7c7",
}
_LABEL_SCALE = alt.Scale(domain=list(LABELS), range=[LABEL_COLORS[label] for label in LABELS])
COMPARED = {
    "monosemantic_rate": "monosemantic rate",
    "number_share": "share of number features",
    "max_enrichment": "max enrichment",
}


def label_distribution_chart(distribution: pd.DataFrame) -> alt.Chart:
    """Features per label (`label_distribution`), one bar each in the order of `LABELS`; the
    monosemantic labels (whose bars add up to the monosemantic rate) solid, the others faded."""
    data = distribution.assign(
        counts_as=distribution["monosemantic"].map({True: "monosemantic", False: "not"})
    )
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("n_features:Q", title="features"),
            y=alt.Y("label:N", sort=list(LABELS), title="label"),
            color=alt.Color("label:N", scale=_LABEL_SCALE, legend=None),
            opacity=alt.Opacity(
                "counts_as:N",
                scale=alt.Scale(domain=["monosemantic", "not"], range=[1.0, 0.35]),
                title="counts as",
            ),
            tooltip=[
                alt.Tooltip("label:N", title="label"),
                alt.Tooltip("n_features:Q", title="features"),
                alt.Tooltip("share:Q", title="share", format=".1%"),
                alt.Tooltip("counts_as:N", title="counts as"),
            ],
        )
        .properties(height=alt.Step(24))
    )


def ceiling_line(n_total: int, n_active: pd.Series) -> pd.DataFrame:
    """Points of the enrichment ceiling N / active tokens over the range of `n_active`:
    n_active_tokens and ceiling, on a log grid of 50 points."""
    low = max(float(n_active.min()), 1.0) if len(n_active) else 1.0
    high = max(float(n_active.max()), low) if len(n_active) else float(n_total)
    grid = np.geomspace(low, high if high > low else low * 10, 50)
    return pd.DataFrame({"n_active_tokens": grid, "ceiling": n_total / grid})


def enrichment_scatter(features: pd.DataFrame, n_total: int) -> alt.Chart:
    """Each feature with a significant token (`feature_taxonomy` rows with an `sae` column):
    its largest enrichment (log) against its active tokens (log), coloured by label, under the
    dashed ceiling N / active tokens (`n_total` = N, the corpus's tokens) that no feature can
    pass; a point links to the feature's page and, with a `description` column, shows it."""
    data = features.dropna(subset=["max_enrichment"])
    data = data.assign(
        href=[
            feature_href(sae, feature)
            for sae, feature in zip(data["sae"], data["feature"], strict=True)
        ],
        of_ceiling=data["max_enrichment"] / data["ceiling"],
    )[["sae", "feature", "label", "n_active_tokens", "max_enrichment", "max_token", "top_tokens",
       "p_value", "ceiling", "of_ceiling", "href",
       *(["description"] if "description" in features else [])]]  # fmt: skip
    ceiling = (
        alt.Chart(ceiling_line(n_total, data["n_active_tokens"]))
        .mark_line(strokeDash=[4, 4], color="#555555")
        .encode(
            x=alt.X("n_active_tokens:Q", scale=alt.Scale(type="log")),
            y=alt.Y("ceiling:Q", scale=alt.Scale(type="log")),
            tooltip=[
                alt.Tooltip("n_active_tokens:Q", title="active tokens", format=",.0f"),
                alt.Tooltip("ceiling:Q", title="ceiling N / active tokens", format=",.1f"),
            ],
        )
    )
    points = (
        alt.Chart(data)
        .mark_circle(size=40, opacity=0.7)
        .encode(
            x=alt.X(
                "n_active_tokens:Q",
                title="active tokens of the feature (log)",
                scale=alt.Scale(type="log"),
            ),
            y=alt.Y(
                "max_enrichment:Q",
                title="largest token enrichment (log)",
                scale=alt.Scale(type="log"),
            ),
            color=alt.Color("label:N", scale=_LABEL_SCALE, title="label"),
            href="href:N",
            tooltip=[
                alt.Tooltip("feature:Q", title="feature (click to open)"),
                *([alt.Tooltip("description:N")] if "description" in data else []),
                alt.Tooltip("label:N", title="label"),
                alt.Tooltip("top_tokens:N", title="top tokens (enrichment)"),
                alt.Tooltip("max_enrichment:Q", title="max enrichment", format=".1f"),
                alt.Tooltip("ceiling:Q", title="its token's ceiling (N / n_t)", format=",.1f"),
                alt.Tooltip("of_ceiling:Q", title="share of the ceiling", format=".1%"),
                alt.Tooltip("p_value:Q", title="p (chi-squared)", format=".2e"),
                alt.Tooltip("n_active_tokens:Q", title="active tokens"),
            ],
        )
    )
    return alt.layer(points, ceiling)


def store_comparison_chart(
    comparison: pd.DataFrame,
    measure: Literal["monosemantic_rate", "number_share", "max_enrichment"],
) -> alt.Chart:
    """One measure of `compare_saes` per SAE (by layer), a bar per store side by side."""
    title = COMPARED[measure]
    order = comparison.sort_values(["layer", "sae"])["sae"].drop_duplicates().tolist()
    percent = measure != "max_enrichment"
    return (
        alt.Chart(comparison)
        .mark_bar()
        .encode(
            x=alt.X("sae:N", sort=order, title="SAE (by layer)"),
            xOffset=alt.XOffset("store:N"),
            y=alt.Y(f"{measure}:Q", title=title, axis=alt.Axis(format=".0%" if percent else "~s")),
            color=alt.Color("store:N", title="store"),
            tooltip=[
                alt.Tooltip("store:N", title="store"),
                alt.Tooltip("sae:N", title="SAE"),
                alt.Tooltip("layer:Q", title="layer"),
                alt.Tooltip("n_features:Q", title="features analysed"),
                alt.Tooltip(f"{measure}:Q", title=title, format=".1%" if percent else ".1f"),
            ],
        )
    )
