"""Charts of the specialist and frequency pages: DataFrame in, altair.Chart out.

Owns the heatmaps of category x SAE (best score; observed specialists against the chance
baseline), the layer progression, the frequency-specialization scatter, the kind shares per
frequency decade and the frequency density histogram. Input
frames are those of `explorer.analysis.specialists` and `explorer.analysis.frequency`; marks
that name a feature carry an `href` to its page (`feature_href`). No streamlit.
"""

from __future__ import annotations

import textwrap
from typing import Literal

import altair as alt
import numpy as np
import pandas as pd

from explorer.analysis.specialists import DEAD, KINDS
from explorer.charts import feature_href

# A long axis title is cut at the axis length: wrapped into lines of at most this many characters.
AXIS_TITLE_CHARS = 40
GENERAL_COLOR = "#c7c7c7"
KIND_COLORS = {
    "general": GENERAL_COLOR,
    "operation": "#1f77b4",
    "value": "#ff7f0e",
    "operation + value": "#2ca02c",
    "category": "#9467bd",
    "category + value": "#8c564b",
    DEAD: "#7f7f7f",
}


def _with_href(frame: pd.DataFrame, feature_column: str = "feature") -> pd.DataFrame:
    """`frame` with the href of each row's feature (none where it names no feature)."""
    return frame.assign(
        href=[
            None if pd.isna(feature) else feature_href(sae, int(feature))
            for sae, feature in zip(frame["sae"], frame[feature_column], strict=True)
        ]
    )


def _sae_order(frame: pd.DataFrame) -> list[str]:
    """SAE names by layer (then name), the order of every chart's SAE axis."""
    return frame.sort_values(["layer", "sae"]).drop_duplicates("sae")["sae"].tolist()


def category_heatmap(
    matrix: pd.DataFrame, value: Literal["best_score", "n_specialists"], score_title: str
) -> alt.Chart:
    """Category x SAE cells of `category_matrix`, coloured by the best score (each cell
    links to its best feature) or by the number of specialists, with the value written in; a
    `description` column (of the best feature) joins the tooltip."""
    title = score_title if value == "best_score" else "specialists"
    data = _with_href(matrix, "best_feature") if value == "best_score" else matrix
    base = alt.Chart(data).encode(
        x=alt.X("sae:N", sort=_sae_order(matrix), title="SAE (by layer)"),
        y=alt.Y("category:N", sort="ascending", title="category"),
    )
    tooltip = [
        alt.Tooltip("sae:N", title="SAE"),
        alt.Tooltip("layer:Q", title="layer"),
        alt.Tooltip("category:N", title="category"),
        alt.Tooltip("best_score:Q", title=score_title, format=".3g"),
        alt.Tooltip("best_feature:Q", title="best feature"),
        alt.Tooltip("n_specialists:Q", title="specialists"),
    ]
    if "description" in matrix:  # of the best feature
        tooltip.append(alt.Tooltip("description:N", title="its description"))
    rects = base.mark_rect().encode(
        color=alt.Color(f"{value}:Q", title=title, scale=alt.Scale(scheme="viridis")),
        tooltip=tooltip,
    )
    if value == "best_score":
        rects = rects.encode(href="href:N")
    labels = base.mark_text(fontSize=11).encode(
        text=alt.Text(f"{value}:Q", format=".3g" if value == "best_score" else "d"),
        color=alt.value("white"),
        tooltip=tooltip,
    )
    return (rects + labels).properties(height=alt.Step(26))


def layer_progression_chart(progression: pd.DataFrame) -> alt.Chart:
    """Categories with at least one specialist per SAE against layer, with the target line
    (every category has one) dashed and drawn last, on top; the y axis runs from 0 to the
    number of categories exactly, so the target line sits on the top edge, never above it."""
    long = pd.concat(
        [
            progression.assign(series="categories with a specialist")[
                ["sae", "layer", "series", "categories_with_specialists", "n_specialists"]
            ].rename(columns={"categories_with_specialists": "categories"}),
            progression.assign(series="target: all categories")[
                ["sae", "layer", "series", "n_categories", "n_specialists"]
            ].rename(columns={"n_categories": "categories"}),
        ],
        ignore_index=True,
    )
    top = int(progression["n_categories"].max()) if len(progression) else 1
    base = alt.Chart(long).encode(
        x=alt.X("layer:Q", title="layer", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y(
            "categories:Q",
            title="categories",
            scale=alt.Scale(domain=[0, max(top, 1)], nice=False),
            axis=alt.Axis(tickMinStep=1),
        ),
        color=alt.Color(
            "series:N",
            title=None,
            scale=alt.Scale(
                domain=["categories with a specialist", "target: all categories"],
                range=["#d62728", "#555555"],
            ),
            legend=alt.Legend(orient="bottom"),
        ),
        tooltip=[
            alt.Tooltip("sae:N", title="SAE"),
            alt.Tooltip("layer:Q", title="layer"),
            alt.Tooltip("series:N", title="series"),
            alt.Tooltip("categories:Q", title="categories"),
            alt.Tooltip("n_specialists:Q", title="specialists (all categories)"),
        ],
    )
    is_target = alt.datum.series == "target: all categories"
    found = base.transform_filter(~is_target).mark_line(point=True, strokeWidth=3)
    # the dashed target is drawn over the found line, so it stays visible where they meet
    target = base.transform_filter(is_target).mark_line(strokeDash=[6, 4], strokeWidth=2)
    return alt.layer(found, target)


def chance_heatmap(matrix: pd.DataFrame, value: str = "n_specialists") -> alt.Chart:
    """Category x SAE cells of `controls.observed_vs_chance`: the observed count (`value`,
    n_specialists or n_replicated) as colour and text, written "n / p95" with the null's
    95th percentile; cells whose count does not beat the null (beats_chance False: its
    permutation p-value is above 0.05) are faded and marked with a trailing "~"."""
    data = matrix.assign(
        label=[
            f"{int(n)} / {p95:g}" + ("" if beats else " ~")
            for n, p95, beats in zip(
                matrix[value], matrix["chance_p95"], matrix["beats_chance"], strict=True
            )
        ],
        chance=np.where(matrix["beats_chance"], "beats chance", "does not beat chance"),
    )
    title = "specialists" if value == "n_specialists" else "replicated specialists"
    base = alt.Chart(data).encode(
        x=alt.X("sae:N", sort=_sae_order(matrix), title="SAE (by layer)"),
        y=alt.Y("category:N", sort="ascending", title="category"),
    )
    tooltip = [
        alt.Tooltip("sae:N", title="SAE"),
        alt.Tooltip("category:N", title="category"),
        alt.Tooltip(f"{value}:Q", title=title),
        alt.Tooltip("chance_mean:Q", title="by chance (mean)", format=".2f"),
        alt.Tooltip("chance_p95:Q", title="by chance (95th percentile)", format=".3g"),
        alt.Tooltip("chance:N", title="against chance"),
    ]
    rects = base.mark_rect().encode(
        color=alt.Color(f"{value}:Q", title=title, scale=alt.Scale(scheme="viridis")),
        opacity=alt.condition(alt.datum.beats_chance, alt.value(1.0), alt.value(0.3)),
        tooltip=tooltip,
    )
    labels = base.mark_text(fontSize=11).encode(
        text="label:N",
        color=alt.condition(alt.datum.beats_chance, alt.value("white"), alt.value("black")),
        tooltip=tooltip,
    )
    return (rects + labels).properties(height=alt.Step(26))


def frequency_scatter(
    features: pd.DataFrame, x: Literal["token_freq", "freq_rank"], score_title: str
) -> alt.Chart:
    """Specialist score against token frequency or frequency rank (log axis) for the
    features that fire; specialists coloured by category, general features grey; each
    point links to its feature (a `description` column joins the tooltip)."""
    alive = features[features["n_active_tokens"] > 0]
    data = _with_href(alive).assign(
        colour=alive["specialist_category"].fillna("general (not a specialist)"),
    )
    x_title = "token frequency (log)" if x == "token_freq" else "frequency rank (log, 1 = most)"
    categories = sorted(alive["specialist_category"].dropna().unique())
    return (
        alt.Chart(data)
        .mark_circle(size=40, opacity=0.75)
        .encode(
            x=alt.X(f"{x}:Q", title=x_title, scale=alt.Scale(type="log")),
            y=alt.Y("best_score:Q", title=textwrap.wrap(score_title, AXIS_TITLE_CHARS)),
            color=alt.Color(
                "colour:N",
                title="specialist of",
                scale=alt.Scale(
                    domain=[*categories, "general (not a specialist)"],
                    range=[*_category_palette(len(categories)), GENERAL_COLOR],
                ),
            ),
            order=alt.Order("is_specialist:O"),
            href="href:N",
            tooltip=[
                alt.Tooltip("sae:N", title="SAE"),
                alt.Tooltip("feature:Q", title="feature"),
                alt.Tooltip("freq_rank:Q", title="frequency rank"),
                alt.Tooltip("token_freq:Q", title="token frequency", format=".2e"),
                alt.Tooltip("best_category:N", title="best category"),
                alt.Tooltip("best_score:Q", title=score_title, format=".3g"),
                alt.Tooltip("kind:N", title="kind"),
                alt.Tooltip("value_label:N", title="top value"),
                *(
                    [alt.Tooltip("description:N", title="description")]
                    if "description" in data
                    else []
                ),
            ],
        )
    )


def _category_palette(n: int) -> list[str]:
    palette = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
        "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
    ]  # fmt: skip
    return [palette[i % len(palette)] for i in range(n)]


def kind_share_chart(by_band: pd.DataFrame) -> alt.Chart:
    """Stacked shares of each kind per frequency decade (rare decades on the left)."""
    order = by_band.sort_values("band_low")["band"].drop_duplicates().tolist()
    kinds = [k for k in (*KINDS, DEAD) if k in set(by_band["kind"])]
    return (
        alt.Chart(by_band)
        .mark_bar()
        .encode(
            x=alt.X("band:N", sort=order, title="token frequency band"),
            y=alt.Y("pct:Q", title="% of the band's features", stack="normalize"),
            color=alt.Color(
                "kind:N",
                title="kind",
                sort=kinds,
                scale=alt.Scale(domain=kinds, range=[KIND_COLORS[k] for k in kinds]),
            ),
            tooltip=[
                alt.Tooltip("band:N", title="band"),
                alt.Tooltip("kind:N", title="kind"),
                alt.Tooltip("n_features:Q", title="features"),
                alt.Tooltip("pct:Q", title="% of the band", format=".1f"),
            ],
        )
    )


def frequency_histogram_chart(histogram: pd.DataFrame) -> alt.Chart:
    """Features per log-frequency bin, with dead features as the first bar."""
    return (
        alt.Chart(histogram.assign(is_dead=histogram["bin"] == DEAD))
        .mark_bar()
        .encode(
            x=alt.X("bin:N", sort=histogram["bin"].tolist(), title="token frequency bin"),
            y=alt.Y("n_features:Q", title="features"),
            color=alt.Color(
                "is_dead:N",
                title="dead",
                scale=alt.Scale(domain=[False, True], range=["#4c78a8", KIND_COLORS[DEAD]]),
                legend=None,
            ),
            tooltip=[
                alt.Tooltip("bin:N", title="token frequency"),
                alt.Tooltip("n_features:Q", title="features"),
            ],
        )
    )
