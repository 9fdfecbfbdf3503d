"""Charts of the rankings page: one value per feature as bars. DataFrame in, altair.Chart out.

Owns the horizontal bar chart of a ranked list of features (co-firing Jaccard, a concept
score): one bar per feature, largest on top, each bar linking to the feature's page through
`feature_href`. No streamlit.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from explorer.charts import feature_href

BAR_COLOR = "#4c78a8"


def feature_bar_chart(
    frame: pd.DataFrame, value: str, value_title: str, extra: dict[str, str] | None = None
) -> alt.Chart:
    """Bars of `value` for each row of `frame` (columns sae, feature, value), largest on
    top, labelled "SAE #feature"; `extra` adds tooltip columns (column -> title), and a
    `description` column, when there is one, shows in the tooltip too."""
    pairs = list(zip(frame["sae"], frame["feature"], strict=True))
    data = frame.assign(
        label=[f"{sae} #{int(feature)}" for sae, feature in pairs],
        href=[feature_href(sae, feature) for sae, feature in pairs],
    )
    tooltip = [
        alt.Tooltip("sae:N", title="SAE"),
        alt.Tooltip("feature:Q", title="feature (click to open)"),
        alt.Tooltip(f"{value}:Q", title=value_title, format=".4g"),
        *[alt.Tooltip(f"{column}:Q", title=title) for column, title in (extra or {}).items()],
        *([alt.Tooltip("description:N", title="description")] if "description" in data else []),
    ]
    return (
        alt.Chart(data)
        .mark_bar(color=BAR_COLOR)
        .encode(
            x=alt.X(f"{value}:Q", title=value_title),
            y=alt.Y(
                "label:N",
                title="feature",
                sort=alt.SortField(value, order="descending"),
                axis=alt.Axis(labelOverlap=False),
            ),
            href="href:N",
            tooltip=tooltip,
        )
        .properties(height=alt.Step(16))
    )
