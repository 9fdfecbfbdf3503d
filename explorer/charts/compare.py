"""Charts of the compare page: SAEs (layers) side by side. DataFrame in, altair.Chart out.

Owns the grouped bars of specialists per category and SAE (each bar links to the category's
best feature in that SAE) and the lines of the build-time quality metrics per SAE. Input
frames are `explorer.analysis.specialists.category_matrix` and
`explorer.analysis.compare.compare_saes`. SAEs are ordered by layer on every axis. No
streamlit.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from explorer.analysis.compare import QUALITY_METRICS
from explorer.charts import feature_href

FRACTION_METRICS = [
    "explained_variance", "ce_loss_recovered", "l2_ratio", "dead_fraction", "dense_fraction",
]  # fmt: skip
LEGEND_LABEL_LIMIT = 400  # px, wider than the longest metric name


def _sae_order(frame: pd.DataFrame) -> list[str]:
    """SAE names by layer (then name)."""
    ordered = frame.sort_values(["layer", "sae"], na_position="last")
    return ordered.drop_duplicates("sae")["sae"].tolist()


def specialists_per_category_chart(matrix: pd.DataFrame) -> alt.Chart:
    """Specialists per category, one bar per SAE within each category (SAEs by layer); a bar
    links to the SAE's best feature for the category (whose `description`, when the matrix
    has one, joins the tooltip)."""
    data = matrix.assign(
        href=[
            feature_href(sae, feature)
            for sae, feature in zip(matrix["sae"], matrix["best_feature"], strict=True)
        ]
    )
    order = _sae_order(matrix)
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("category:N", title="category", sort="ascending"),
            xOffset=alt.XOffset("sae:N", sort=order),
            y=alt.Y("n_specialists:Q", title="specialists"),
            color=alt.Color("sae:N", title="SAE (by layer)", sort=order),
            href="href:N",
            tooltip=[
                alt.Tooltip("category:N", title="category"),
                alt.Tooltip("sae:N", title="SAE"),
                alt.Tooltip("layer:Q", title="layer"),
                alt.Tooltip("n_specialists:Q", title="specialists"),
                alt.Tooltip("best_feature:Q", title="best feature (click to open)"),
                alt.Tooltip("best_score:Q", title="best score", format=".3g"),
                *(
                    [alt.Tooltip("description:N", title="its description")]
                    if "description" in data
                    else []
                ),
            ],
        )
    )


def quality_chart(compare: pd.DataFrame) -> alt.Chart:
    """Explained variance, CE loss recovered, shrinkage (L2 ratio), dead and dense fractions
    per SAE (by layer) as lines; L0 and the quality sample's size in the tooltip. SAEs without
    a measured value are left out of that metric's line."""
    long = compare.melt(
        id_vars=["sae", "layer", "l0", "quality_texts"],
        value_vars=FRACTION_METRICS,
        var_name="metric",
        value_name="value",
    ).dropna(subset=["value"])
    long["metric"] = long["metric"].map(QUALITY_METRICS)
    top = max(1.0, float(long["value"].max())) if len(long) else 1.0  # an L2 ratio may pass 1
    return (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X("sae:N", sort=_sae_order(compare), title="SAE (by layer)"),
            y=alt.Y("value:Q", title="fraction or ratio", scale=alt.Scale(domain=[0, top])),
            color=alt.Color(
                "metric:N",
                title="metric",
                sort=[QUALITY_METRICS[m] for m in FRACTION_METRICS],
                # Vega-Lite cuts a label at 160 px: "dense fraction (>10% of tokens)" is wider
                legend=alt.Legend(orient="bottom", labelLimit=LEGEND_LABEL_LIMIT),
            ),
            tooltip=[
                alt.Tooltip("sae:N", title="SAE"),
                alt.Tooltip("layer:Q", title="layer"),
                alt.Tooltip("metric:N", title="metric"),
                alt.Tooltip("value:Q", title="value", format=".3f"),
                alt.Tooltip("l0:Q", title=QUALITY_METRICS["l0"], format=".1f"),
                alt.Tooltip("quality_texts:Q", title=QUALITY_METRICS["quality_texts"]),
            ],
        )
    )
