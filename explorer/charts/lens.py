"""Charts of the logit lens page: DataFrame in, altair.Chart out.

Owns the reverse-lookup bars (the features that most promote or suppress one token), the
hit-rate histogram of the consistency check with its random baseline in the same axes, the
per-feature scatter of next-token against activating-token hit rate, and the diverse
selection's cosine plot. Input frames are those of `explorer.analysis.logit_lens` and
`explorer.analysis.lens_checks`; every mark that names a feature carries an `href` to its
page (`feature_href`). No streamlit.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from explorer.analysis.lens_checks import (
    FEW,
    INPUT_LIKE,
    NEITHER,
    OUTPUT_LIKE,
    RANDOM_SERIES,
    SAE_SERIES,
)
from explorer.charts import feature_href
from explorer.charts.feature import NEGATIVE, POSITIVE

GREY = "#9ca3af"
KIND_COLORS = {OUTPUT_LIKE: POSITIVE, INPUT_LIKE: "#2ca02c", NEITHER: GREY, FEW: "#e5e7eb"}


def _with_href(frame: pd.DataFrame, sae: str) -> pd.DataFrame:
    return frame.assign(href=[feature_href(sae, feature) for feature in frame["feature"]])


def _description_tooltip(data: pd.DataFrame) -> list[alt.Tooltip]:
    """The feature's description in the tooltip, when `data` carries a description column."""
    return [alt.Tooltip("description:N", title="description")] if "description" in data else []


def reverse_lookup_chart(lookup: pd.DataFrame, sae: str, token: str) -> alt.Chart:
    """Horizontal bars of each feature's logit effect on `token`: promoters (largest first)
    above suppressors (most negative last); a bar opens its feature's page."""
    data = _with_href(lookup, sae).assign(label=lambda df: "#" + df["feature"].astype(str))
    tooltip = [
        alt.Tooltip("feature:Q", title="feature"),
        alt.Tooltip("direction:N", title="direction"),
        alt.Tooltip("rank:Q", title="rank in its direction"),
        alt.Tooltip("logit:Q", title=f"logit effect on {token!r}", format=".4f"),
    ]
    if "promoted" in data:
        tooltip.append(alt.Tooltip("promoted:N", title="its top promoted tokens"))
    tooltip += _description_tooltip(data)
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("logit:Q", title=f"logit effect on {token!r} (W_dec · W_U)"),
            y=alt.Y(
                "label:N",
                title="feature",
                sort=alt.SortField("logit", order="descending"),
                axis=alt.Axis(labelOverlap=False),
            ),
            color=alt.Color(
                "direction:N",
                title=None,
                scale=alt.Scale(domain=["promotes", "suppresses"], range=[POSITIVE, NEGATIVE]),
                legend=alt.Legend(orient="bottom"),
            ),
            href="href:N",
            tooltip=tooltip,
        )
        .properties(height=alt.Step(14))
    )


def hit_rate_histogram_chart(histogram: pd.DataFrame, k: int) -> alt.Chart:
    """The decoder's and the random baseline's hit-rate distributions over the same bins,
    overlaid (not stacked), as share of features on a square-root axis (the baseline piles up
    at 0 and would flatten the rest)."""
    return (
        alt.Chart(histogram)
        .mark_bar(opacity=0.6, binSpacing=0)
        .encode(
            x=alt.X("low:Q", title=f"hit rate (next token among the top {k} promoted)"),
            x2="high:Q",
            y=alt.Y(
                "fraction:Q",
                title="share of features (√ scale)",
                stack=None,
                scale=alt.Scale(type="sqrt"),
                axis=alt.Axis(format="%"),
            ),
            y2=alt.datum(0),
            color=alt.Color(
                "series:N",
                title=None,
                scale=alt.Scale(domain=[SAE_SERIES, RANDOM_SERIES], range=[POSITIVE, GREY]),
                legend=alt.Legend(orient="top-right"),
            ),
            tooltip=[
                alt.Tooltip("series:N", title="directions"),
                alt.Tooltip("low:Q", title="hit rate from", format=".2f"),
                alt.Tooltip("high:Q", title="to", format=".2f"),
                alt.Tooltip("count:Q", title="features", format=","),
                alt.Tooltip("fraction:Q", title="share of features", format=".1%"),
            ],
        )
        .properties(height=320)
    )


def consistency_scatter(table: pd.DataFrame, sae: str, k: int) -> alt.Chart:
    """Each checked feature's next-token hit rate against its activating-token hit rate,
    coloured by kind; a point opens its feature's page."""
    data = _with_href(table[table["n_examples"] > 0], sae)
    return (
        alt.Chart(data)
        .mark_circle(size=50, opacity=0.55)
        .encode(
            x=alt.X(
                "input_hit_rate:Q",
                title=f"activating token among the top {k}",
                scale=alt.Scale(domain=[0, 1]),
            ),
            y=alt.Y(
                "hit_rate:Q",
                title=f"next token among the top {k}",
                scale=alt.Scale(domain=[0, 1]),
            ),
            color=alt.Color(
                "kind:N",
                title="kind",
                scale=alt.Scale(domain=list(KIND_COLORS), range=list(KIND_COLORS.values())),
                legend=alt.Legend(orient="right"),
            ),
            href="href:N",
            tooltip=[
                alt.Tooltip("feature:Q", title="feature"),
                alt.Tooltip("kind:N", title="kind"),
                alt.Tooltip("hit_rate:Q", title="next-token hit rate", format=".2f"),
                alt.Tooltip("input_hit_rate:Q", title="activating-token hit rate", format=".2f"),
                alt.Tooltip("random_hit_rate:Q", title="random-direction hit rate", format=".2f"),
                alt.Tooltip("mean_next_rank:Q", title="mean rank of next tokens", format=",.0f"),
                alt.Tooltip("n_next:Q", title="examples with a next token"),
                *_description_tooltip(table),
            ],
        )
        .properties(height=320)
    )


def diverse_selection_chart(selection: pd.DataFrame, sae: str, threshold: float) -> alt.Chart:
    """Each candidate's largest decoder cosine with the features chosen before it, against
    its position in the ranking; the threshold as a dashed rule. Points open feature pages."""
    data = _with_href(selection.dropna(subset=["max_cosine"]), sae).assign(
        status=lambda df: df["chosen"].map({True: "chosen", False: "too close to a chosen one"})
    )
    points = (
        alt.Chart(data)
        .mark_circle(size=40, opacity=0.7)
        .encode(
            x=alt.X("position:Q", title="position in the ranking"),
            y=alt.Y("max_cosine:Q", title="max cosine with earlier chosen"),
            color=alt.Color(
                "status:N",
                title=None,
                scale=alt.Scale(
                    domain=["chosen", "too close to a chosen one"], range=[POSITIVE, GREY]
                ),
                legend=alt.Legend(orient="right"),
            ),
            href="href:N",
            tooltip=[
                alt.Tooltip("feature:Q", title="feature"),
                alt.Tooltip("position:Q", title="position"),
                alt.Tooltip("status:N", title="status"),
                alt.Tooltip("max_cosine:Q", title="largest cosine", format=".3f"),
                alt.Tooltip("closest:Q", title="closest chosen feature"),
                *_description_tooltip(data),
            ],
        )
    )
    rule = (
        alt.Chart(pd.DataFrame({"threshold": [threshold]}))
        .mark_rule(strokeDash=[4, 4], color=NEGATIVE)
        .encode(y="threshold:Q", tooltip=[alt.Tooltip("threshold:Q", title="threshold")])
    )
    return (points + rule).properties(height=300)
