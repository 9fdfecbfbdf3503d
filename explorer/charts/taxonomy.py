"""Charts of the token-taxonomy page: DataFrame in, altair.Chart out.

Owns the label distribution of one SAE, the scatter of each feature's largest token
enrichment against its activity (points link to the feature's page) and the per-SAE
comparison of two stores. Input frames are those of `explorer.analysis.enrichment`
(`label_distribution`, `feature_taxonomy`, `compare_saes` with a `store` column). No streamlit.
"""

from __future__ import annotations

from typing import Literal

import altair as alt
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
    """Features per label (`label_distribution`), one bar each in the order of `LABELS`."""
    return (
        alt.Chart(distribution)
        .mark_bar()
        .encode(
            x=alt.X("n_features:Q", title="features"),
            y=alt.Y("label:N", sort=list(LABELS), title="label"),
            color=alt.Color("label:N", scale=_LABEL_SCALE, legend=None),
            tooltip=[
                alt.Tooltip("label:N", title="label"),
                alt.Tooltip("n_features:Q", title="features"),
                alt.Tooltip("share:Q", title="share", format=".1%"),
            ],
        )
        .properties(height=alt.Step(24))
    )


def enrichment_scatter(features: pd.DataFrame) -> alt.Chart:
    """Each feature with a significant token (`feature_taxonomy` rows with an `sae` column):
    its largest enrichment (log) against its active tokens (log), coloured by label; a
    point links to the feature's page."""
    data = features.dropna(subset=["max_enrichment"])
    data = data.assign(
        href=[
            feature_href(sae, feature)
            for sae, feature in zip(data["sae"], data["feature"], strict=True)
        ]
    )[["sae", "feature", "label", "n_active_tokens", "max_enrichment", "max_token", "top_tokens",
       "p_value", "href"]]  # fmt: skip
    return (
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
                alt.Tooltip("feature:Q", title="feature"),
                alt.Tooltip("label:N", title="label"),
                alt.Tooltip("top_tokens:N", title="top tokens (enrichment)"),
                alt.Tooltip("max_enrichment:Q", title="max enrichment", format=".1f"),
                alt.Tooltip("p_value:Q", title="p (chi-squared)", format=".2e"),
                alt.Tooltip("n_active_tokens:Q", title="active tokens"),
            ],
        )
    )


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
