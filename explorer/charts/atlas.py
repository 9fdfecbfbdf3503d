"""Chart of the feature atlas: decoder directions on a 2-D map, DataFrame in, altair.Chart out.

Owns the colour groups a map can be coloured by (`COLOURS`: kind, specialist category,
frequency decade, description score band) and the map itself: grey grid cells counting every
feature under a layer of points (the features drawn), sized by token frequency, with the
description in the tooltip, a link to the feature's page, and a box selection named
`BOX`. The marks come from `explorer.analysis.atlas.atlas_marks`. No streamlit.
"""

from __future__ import annotations

from typing import Literal

import altair as alt
import numpy as np
import pandas as pd

from explorer.charts import feature_href

ColourBy = Literal["kind", "category", "frequency", "score"]
COLOURS: dict[str, str] = {
    "kind": "kind (of its description)",
    "category": "specialist category",
    "frequency": "token frequency",
    "score": "description score (F1)",
}
BOX = "box"
NOT_SPECIALIST = "not a specialist"
NOT_SCORED = "not scored"
DEAD = "dead"
GREY = "#c7c7c7"
FREQUENCY_BANDS = [
    "< 1e-5", "1e-5 to 1e-4", "1e-4 to 1e-3", "1e-3 to 1e-2", "1e-2 to 0.1", ">= 0.1",
]  # fmt: skip
SCORE_BANDS = ["F1 < 0.2", "0.2 to 0.4", "0.4 to 0.6", "0.6 to 0.8", "F1 >= 0.8"]
_PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
]  # fmt: skip
_SEQUENTIAL = ["#c6dbef", "#9ecae1", "#6baed6", "#3182bd", "#08519c", "#08306b"]


def colour_groups(features: pd.DataFrame, by: ColourBy) -> tuple[pd.Series, list[str], list[str]]:
    """Each feature's colour group under `by`, with the legend's domain and colours.

    kind: the description's kind; category: its specialist category (else "not a
    specialist"); frequency: its token frequency's decade ("dead" when it never fires);
    score: its description F1 in bands of 0.2 ("not scored" without one)."""
    if by in ("kind", "category"):
        column = "kind" if by == "kind" else "specialist_category"
        groups = features[column].fillna(NOT_SPECIALIST).astype(str)
        domain = sorted(set(groups) - {DEAD, NOT_SPECIALIST})
        greys = [g for g in (NOT_SPECIALIST, DEAD) if g in set(groups)]
        return groups, [*domain, *greys], [*_cycle(len(domain)), *[GREY] * len(greys)]
    if by == "frequency":
        decade = np.floor(np.log10(features["token_freq"].where(features["token_freq"] > 0)))
        index = np.clip(decade.to_numpy() + 6, 0, len(FREQUENCY_BANDS) - 1)
        bands = np.array(FREQUENCY_BANDS, dtype=object)[np.nan_to_num(index).astype(int)]
        groups = pd.Series(np.where(decade.isna(), DEAD, bands), index=features.index)
        return groups, [*FREQUENCY_BANDS, DEAD], [*_SEQUENTIAL, GREY]
    if by == "score":
        score = features["f1"] if "f1" in features else pd.Series(np.nan, index=features.index)
        index = np.clip(np.floor(score.to_numpy(dtype=float) / 0.2), 0, len(SCORE_BANDS) - 1)
        bands = np.array(SCORE_BANDS, dtype=object)[np.nan_to_num(index).astype(int)]
        groups = pd.Series(np.where(score.isna(), NOT_SCORED, bands), index=features.index)
        return groups, [*SCORE_BANDS, NOT_SCORED], [*_SEQUENTIAL[1:], GREY]
    raise ValueError(f"colour must be one of {sorted(COLOURS)}, not {by!r}")


def _cycle(n: int) -> list[str]:
    return [_PALETTE[i % len(_PALETTE)] for i in range(n)]


def atlas_chart(points: pd.DataFrame, cells: pd.DataFrame, by: ColourBy) -> alt.LayerChart:
    """The map: `cells` (x_low, x_high, y_low, y_high, n_features; none when every feature is
    a point) as grey rectangles shaded by how many features each holds, under `points` (sae,
    feature, x, y, token_freq, kind, description, and specialist_category / f1 for those
    colourings) coloured by `by` (grey groups drawn first), sized by token frequency, each
    linking to its feature's page; dragging draws the box selection `BOX` on the points' x and y."""
    groups, domain, colours = colour_groups(points, by)
    data = points.assign(
        colour=groups,
        coloured=~groups.isin([NOT_SPECIALIST, NOT_SCORED, DEAD]),  # drawn over the greys
        href=[feature_href(s, f) for s, f in zip(points["sae"], points["feature"], strict=True)],
    )
    unlabelled = alt.Axis(labels=False, ticks=False, grid=False)
    x = alt.X("x:Q", title="UMAP 1", axis=unlabelled, scale=alt.Scale(zero=False))
    y = alt.Y("y:Q", title="UMAP 2", axis=unlabelled, scale=alt.Scale(zero=False))
    density = (
        alt.Chart(cells)
        .mark_rect(opacity=0.5)
        .encode(
            x=alt.X("x_low:Q", title="UMAP 1", axis=unlabelled, scale=alt.Scale(zero=False)),
            x2="x_high:Q",
            y=alt.Y("y_low:Q", title="UMAP 2", axis=unlabelled, scale=alt.Scale(zero=False)),
            y2="y_high:Q",
            color=alt.Color(
                "n_features:Q",
                title="features per cell",
                scale=alt.Scale(range=["#f0f0f0", "#636363"]),
            ),
            tooltip=[alt.Tooltip("n_features:Q", title="features in this cell")],
        )
    )
    box = alt.selection_interval(name=BOX, encodings=["x", "y"])
    tooltip = [
        alt.Tooltip("sae:N", title="SAE"),
        alt.Tooltip("feature:Q", title="feature"),
        alt.Tooltip("description:N", title="description"),
        alt.Tooltip("colour:N", title=COLOURS[by]),
        alt.Tooltip("token_freq:Q", title="token frequency", format=".2e"),
    ]
    features = (
        alt.Chart(data)
        .mark_circle(opacity=0.8, stroke="white", strokeWidth=0.3)
        .encode(
            x=x,
            y=y,
            color=alt.Color(
                "colour:N",
                title=COLOURS[by],
                scale=alt.Scale(domain=domain, range=colours),
                sort=domain,
            ),
            size=alt.Size(
                "token_freq:Q",
                title="token frequency",
                scale=alt.Scale(type="sqrt", range=[6, 160]),
            ),
            order=alt.Order("coloured:Q"),
            href="href:N",
            tooltip=tooltip,
        )
        .add_params(box)
    )
    if cells.empty:
        return alt.layer(features).properties(height=640)
    return alt.layer(density, features).resolve_scale(color="independent").properties(height=640)
