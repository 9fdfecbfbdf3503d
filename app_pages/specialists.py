"""Specialist heatmaps: which features specialise in a category of text, and at which layer."""

import streamlit as st

from explorer.analysis.frequency import most_frequent_coverage, strongest_features
from explorer.analysis.specialists import (
    MEASURES,
    category_matrix,
    layer_progression,
    top_specialists,
)
from explorer.charts.specialists import category_heatmap, layer_progression_chart
from explorer.ui.cached import specialists
from explorer.ui.params import specialist_settings_sidebar, url_int
from explorer.ui.state import current_store
from explorer.ui.tables import feature_table

st.title("Specialist heatmaps")
store = current_store()
settings = specialist_settings_sidebar()
per_category = url_int("Top specialists per category", "top", default=5, low=1, high=50)
result = specialists(store, settings)
matrix = category_matrix(result.table)
progression = layer_progression(matrix)
score_title = MEASURES[settings.measure]

st.caption(
    f"Measure: **{score_title}**. A specialist also needs at least {settings.min_support} "
    "supporting texts; thresholds are in the sidebar and in this page's URL."
)
n_categories = matrix["category"].nunique()
covered = matrix.loc[matrix["n_specialists"] > 0, "category"].nunique()
left, middle, right = st.columns(3)
left.metric("specialists (all SAEs)", f"{int(result.table['is_specialist'].sum()):,}")
middle.metric("categories with a specialist", f"{covered} / {n_categories}")
right.metric("SAEs", f"{progression['sae'].nunique()}")

st.subheader("Category x SAE")
best_tab, count_tab, numbers_tab = st.tabs(["best score", "specialists", "numbers"])
best_tab.altair_chart(category_heatmap(matrix, "best_score", score_title), width="stretch")
count_tab.altair_chart(category_heatmap(matrix, "n_specialists", score_title), width="stretch")
numbers_tab.dataframe(
    matrix.pivot(index="category", columns="sae", values="n_specialists"),
    column_order=progression["sae"].tolist(),
)

st.subheader("Specialists by depth")
st.altair_chart(layer_progression_chart(progression), width="stretch")

st.subheader("Top specialists per category")
feature_table(
    top_specialists(result.table, per_category),
    ["category", "sae", "layer", "feature", "score", "support", "strong_in", "strong_out",
     "share", "auroc", "enrichment", "q_value"],
)  # fmt: skip

st.subheader("Strongest features per SAE")
feature_table(
    strongest_features(result.features, per_sae=5),
    ["sae", "layer", "feature", "max", "mean_active", "token_freq", "best_category", "kind"],
)

st.subheader("Coverage of the most frequent feature")
st.caption("Share of each category's texts on which the SAE's most frequent feature fires.")
coverage = most_frequent_coverage(result.features, result.table)
feature_table(coverage, coverage.columns.tolist())
