"""Charts of one feature: activation histogram, per-category bars, logit lens, logit histogram.

Each function takes the DataFrame the feature page already has (from
`explorer.analysis.feature_data` or `explorer.analysis.histograms`) and returns an
`altair.Chart` with axis titles, tooltips and a sensible sort. None of these marks names
another feature (related features are tables with links on the page), so none carries an
`href`. No streamlit.
"""

from __future__ import annotations

from typing import Literal

import altair as alt
import pandas as pd

from explorer.charts.tokens_html import visible_text

CategoryMeasure = Literal["mean_act", "share_active", "strong_count", "max_act"]
CATEGORY_MEASURES: dict[str, str] = {
    "mean_act": "mean activation per token",
    "share_active": "share of texts where it fires",
    "strong_count": "strong activations (>= half its max)",
    "max_act": "largest activation",
}
POSITIVE = "#d94f04"
NEGATIVE = "#1f77b4"


def token_label(token: str) -> str:
    """A token as an axis label: spaces as `␣`, other whitespace and unprintable characters
    as in `explorer.charts.tokens_html.visible_text`, empty shown as ∅."""
    if not token:
        return "∅"
    return visible_text(token).replace(" ", "␣")


def activation_histogram_chart(histogram: pd.DataFrame, max_value: float) -> alt.Chart:
    """Bars of active-token counts over the activation range [0, max]; density in tooltips."""
    return (
        alt.Chart(histogram)
        .mark_bar(color=POSITIVE, opacity=0.85)
        .encode(
            x=alt.X("low:Q", title="activation", scale=alt.Scale(domain=[0, max_value])),
            x2="high:Q",
            y=alt.Y("count:Q", title="active tokens"),
            y2=alt.datum(0),
            tooltip=[
                alt.Tooltip("low:Q", title="from", format=".4f"),
                alt.Tooltip("high:Q", title="to", format=".4f"),
                alt.Tooltip("count:Q", title="active tokens", format=","),
                alt.Tooltip("fraction:Q", title="share of active tokens", format=".2%"),
                alt.Tooltip("density:Q", title="density (per unit activation)", format=".3f"),
            ],
        )
        .properties(height=220)
    )


def category_chart(categories: pd.DataFrame, measure: CategoryMeasure = "mean_act") -> alt.Chart:
    """Horizontal bars of one measure per category, largest first."""
    if measure not in CATEGORY_MEASURES:
        raise ValueError(f"measure must be one of {list(CATEGORY_MEASURES)}, got {measure!r}.")
    data = categories.assign(share_active=categories["n_texts_active"] / categories["n_texts"])
    return (
        alt.Chart(data)
        .mark_bar(color=POSITIVE)
        .encode(
            x=alt.X(f"{measure}:Q", title=CATEGORY_MEASURES[measure]),
            y=alt.Y("category:N", title="category", sort="-x", axis=alt.Axis(labelOverlap=False)),
            tooltip=[
                alt.Tooltip("category:N"),
                alt.Tooltip("n_texts:Q", title="texts"),
                alt.Tooltip("n_texts_active:Q", title="texts where it fires"),
                alt.Tooltip("share_active:Q", title="share of texts", format=".1%"),
                alt.Tooltip("n_tokens_active:Q", title="active tokens"),
                alt.Tooltip("mean_act:Q", title="mean activation per token", format=".4f"),
                alt.Tooltip("max_act:Q", title="largest activation", format=".4f"),
                alt.Tooltip("strong_count:Q", title="strong activations"),
            ],
        )
        .properties(height=alt.Step(20))
    )


def logit_lens_chart(logit_lens: pd.DataFrame, title: str = "") -> alt.Chart:
    """Bars of tokens by decoder logit, largest first: promoted (positive) in the theme colour,
    suppressed (negative) in blue; pass the top or bottom rows for one direction."""
    data = logit_lens.assign(
        direction=lambda df: df["logit"].ge(0).map({True: "promoted", False: "suppressed"}),
        label=lambda df: df["token"].map(token_label),
    )
    repeated = data["label"].duplicated(keep=False)
    data.loc[repeated, "label"] = (
        data.loc[repeated, "label"] + " #" + data.loc[repeated, "token_id"].astype(str)
    )
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("logit:Q", title="logit effect (W_dec · W_U)"),
            y=alt.Y(
                "label:N",
                title="token",
                sort=alt.SortField("logit", order="descending"),
                axis=alt.Axis(labelOverlap=False),
            ),
            color=alt.Color(
                "direction:N",
                title=None,
                scale=alt.Scale(domain=["promoted", "suppressed"], range=[POSITIVE, NEGATIVE]),
                legend=None,
            ),
            tooltip=[
                alt.Tooltip("token:N"),
                alt.Tooltip("token_id:Q", title="token id"),
                alt.Tooltip("logit:Q", format=".4f"),
                alt.Tooltip("rank:Q"),
            ],
        )
        .properties(height=alt.Step(14), title=title)
    )


def logit_histogram_chart(histogram: pd.DataFrame, title: str = "") -> alt.Chart:
    """Bars of how many vocabulary tokens fall in each logit-effect bin."""
    return (
        alt.Chart(histogram)
        .mark_bar(color="#6b7280")
        .encode(
            x=alt.X("low:Q", title="logit effect over the vocabulary"),
            x2="high:Q",
            y=alt.Y("count:Q", title="tokens"),
            y2=alt.datum(0),
            tooltip=[
                alt.Tooltip("low:Q", title="from", format=".4f"),
                alt.Tooltip("high:Q", title="to", format=".4f"),
                alt.Tooltip("count:Q", title="tokens", format=","),
            ],
        )
        .properties(height=220, title=title)
    )
