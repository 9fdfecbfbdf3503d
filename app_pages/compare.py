"""Compare SAEs: quality, specialists and frequency vs specialization per SAE (layer)."""

import streamlit as st

from explorer.analysis.compare import QUALITY_METRICS, compare_saes, quality_sample_note
from explorer.analysis.descriptions import compare_scores
from explorer.analysis.specialists import MEASURES, category_matrix
from explorer.charts.compare import quality_chart, specialists_per_category_chart
from explorer.ui import cached
from explorer.ui.cached import specialists
from explorer.ui.params import specialist_settings_sidebar
from explorer.ui.state import current_store

NUMBER = st.column_config.NumberColumn
COLUMNS = {
    "layer": NUMBER("layer", format="%d"),
    **{name: NUMBER(title, format="%.3f") for name, title in QUALITY_METRICS.items()},
    "l0": NUMBER("L0", format="%.1f"),
    "quality_texts": NUMBER("texts in the quality sample", format="%d"),
    "n_features": NUMBER("features", format="%d"),
    "n_alive": NUMBER("live features", format="%d"),
    "n_specialists": NUMBER("specialist features", format="%d"),
    "pct_specialists": NUMBER("% specialists (of live)", format="%.1f"),
    "categories_with_specialists": NUMBER("categories with a specialist", format="%d"),
    "n_categories": NUMBER("categories", format="%d"),
    "median_rank_specialists": NUMBER("median freq rank: specialists", format="%.0f"),
    "median_rank_general": NUMBER("median freq rank: general", format="%.0f"),
    "spearman_rho": NUMBER("Spearman rho (freq vs score)", format="%.3f"),
    "spearman_p": NUMBER("p-value", format="%.2g"),
    "max_score": NUMBER("max score", format="%.3g"),
}

SCORE_COLUMNS = {
    "n_live": NUMBER("live features", format="%d"),
    "n_scored": NUMBER("scored", format="%d"),
    **{
        name: NUMBER(title, format="%.2f")
        for name, title in [
            ("f1_mean", "F1 mean"),
            ("f1_q25", "F1 25%"),
            ("f1_median", "F1 median"),
            ("f1_q75", "F1 75%"),
            ("balanced_accuracy_mean", "balanced accuracy mean"),
        ]
    },
    "f1_at_least_half": NUMBER("share with F1 >= 0.5", format="percent"),
}

st.title("Compare SAEs")
store = current_store()
settings = specialist_settings_sidebar()
result = specialists(store, settings)
comparison = compare_saes(store.saes(), result)
matrix = category_matrix(result.table)

st.caption(
    f"Measure: **{MEASURES[settings.measure]}**, at least {settings.min_support} supporting "
    "texts; thresholds are in the sidebar and in this page's URL. Frequency ranks: 1 = the "
    "SAE's most frequent feature."
)
st.dataframe(comparison, hide_index=True, column_config=COLUMNS)

st.subheader("Specialists per category")
st.caption("One bar per SAE (by layer); click a bar to open the category's best feature there.")
st.altair_chart(specialists_per_category_chart(matrix), width="stretch")
with st.expander("Numbers"):
    st.dataframe(
        matrix.pivot(index="category", columns="sae", values="n_specialists"),
        column_order=comparison["sae"].tolist(),
    )

st.subheader("Description scores per SAE")
st.caption(
    "How well each live feature's automatic description (its tokens, made from half of the "
    "corpus's texts) predicts where it fires on the other half: F1, with balanced accuracy "
    "(chance 0.5). Definitions: docs/methods.md, section Feature descriptions."
)
described = {name: cached.descriptions(store, name) for name in store.saes()["sae"]}
st.dataframe(compare_scores(described), hide_index=True, column_config=SCORE_COLUMNS)

st.subheader("Quality per SAE")
st.caption(
    f"{quality_sample_note(store.saes(), store.meta())} Definitions: docs/methods.md, "
    "section SAE quality."
)
st.altair_chart(quality_chart(comparison), width="stretch")
