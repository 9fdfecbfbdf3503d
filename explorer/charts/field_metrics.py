"""Charts of feature lineage and of the field's SAE metrics. DataFrame in, altair.Chart out.

Owns the best match's similarity by depth (feature page), the distributions of each
feature's max decoder cosine (redundancy within an SAE, matching between two), k-sparse
probing accuracy by layer, and the heatmap of the top features' matches. Inputs are the
frames of `explorer.analysis.lineage` and `explorer.analysis.field_metrics`, with a
`description` column where a chart names features. No streamlit.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from explorer.charts import feature_href

MEASURE_TITLES = {"decoder cosine": "decoder cosine", "activation correlation": "correlation"}


def _with_href(frame: pd.DataFrame, sae_column: str, feature_column: str) -> pd.DataFrame:
    return frame.assign(
        href=[
            feature_href(sae, feature)
            for sae, feature in zip(frame[sae_column], frame[feature_column], strict=True)
        ]
    )


def depth_chart(profile: pd.DataFrame) -> alt.Chart:
    """The best match's similarity per other SAE (x: its layer), one line per measure
    (`lineage.depth_profile` with a description column); a point opens the match."""
    data = _with_href(profile, "sae", "feature")
    return (
        alt.Chart(data)
        .mark_line(point=alt.OverlayMarkDef(size=80))
        .encode(
            x=alt.X("layer:O", title="layer of the other SAE", axis=alt.Axis(labelAngle=0)),
            y=alt.Y(
                "similarity:Q", title="best match's similarity", scale=alt.Scale(domain=[0, 1])
            ),
            color=alt.Color("measure:N", title="measure"),
            href="href:N",
            tooltip=[
                alt.Tooltip("sae:N", title="SAE"),
                alt.Tooltip("measure:N", title="measure"),
                alt.Tooltip("feature:Q", title="best match (click to open)"),
                alt.Tooltip("similarity:Q", title="similarity", format=".3f"),
                alt.Tooltip("description:N", title="its description"),
            ],
        )
        .properties(height=220)
    )


def max_cosine_histogram(table: pd.DataFrame, title: str) -> alt.Chart:
    """The distribution of `max_cosine` (one row per feature), one facet row per sae."""
    return (
        alt.Chart(table)
        .mark_bar()
        .encode(
            x=alt.X("max_cosine:Q", bin=alt.Bin(extent=[-0.2, 1], step=0.05), title=title),
            y=alt.Y("count():Q", title="features"),
            color=alt.Color("sae:N", title="SAE", legend=None),
            row=alt.Row("sae:N", title=None),
            tooltip=[alt.Tooltip("sae:N", title="SAE"), alt.Tooltip("count():Q", title="features")],
        )
        .properties(height=70)
    )


def probing_chart(probing: pd.DataFrame) -> alt.Chart | alt.LayerChart:
    """Mean held-out balanced accuracy over categories per SAE (x: layer), one line per k
    (`field_metrics.sparse_probing` rows), and per store, dashed apart, when `probing` has a
    store column (`field_metrics.rows_side_by_side`)."""
    stores = ["store"] if "store" in probing else []
    means = probing.groupby([*stores, "sae", "layer", "k"], as_index=False)["accuracy"].mean()
    base = (
        alt.Chart(means)
        .encode(
            x=alt.X("layer:O", title="layer", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("accuracy:Q", title="balanced accuracy", scale=alt.Scale(zero=False)),
            color=alt.Color("k:O", title="k features"),
            tooltip=[
                alt.Tooltip("sae:N", title="SAE"),
                alt.Tooltip("k:O", title="k"),
                alt.Tooltip("accuracy:Q", title="mean over categories", format=".3f"),
            ],
        )
        .properties(height=220)
    )
    if not stores:
        return base.mark_line(point=True)
    # points in a layer of their own: on a line with points, the dash legend draws no symbol
    lines = base.mark_line().encode(strokeDash=alt.StrokeDash("store:N", title="store"))
    return lines + base.mark_point(filled=True)


def match_heatmap_chart(heatmap: pd.DataFrame, sae_a: str, sae_b: str) -> alt.Chart:
    """Cosines of the top features of `sae_a` (rows) with their best matches in `sae_b`
    (columns); `field_metrics.match_heatmap` with description_a and description_b columns. A
    cell opens the match."""
    data = _with_href(heatmap.assign(sae=sae_b), "sae", "feature_b")
    rows = list(dict.fromkeys(heatmap["feature_a"]))
    columns = list(dict.fromkeys(heatmap["feature_b"]))
    return (
        alt.Chart(data)
        .mark_rect()
        .encode(
            x=alt.X(
                "feature_b:O",
                title=f"best match in {sae_b}",
                sort=columns,
                axis=alt.Axis(labelOverlap=False),
            ),
            y=alt.Y(
                "feature_a:O",
                title=f"feature of {sae_a}",
                sort=rows,
                axis=alt.Axis(labelOverlap=False),
            ),
            color=alt.Color(
                "cosine:Q",
                title="decoder cosine",
                scale=alt.Scale(scheme="blueorange", domain=[-1, 1]),
            ),
            href="href:N",
            tooltip=[
                alt.Tooltip("feature_a:O", title=f"{sae_a} feature"),
                alt.Tooltip("description_a:N", title="its description"),
                alt.Tooltip("feature_b:O", title=f"{sae_b} feature (click to open)"),
                alt.Tooltip("description_b:N", title="its description"),
                alt.Tooltip("cosine:Q", title="cosine", format=".3f"),
            ],
        )
        .properties(height=22 * len(rows))
    )
