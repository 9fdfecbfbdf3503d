"""Compare SAEs: quality, specialists and frequency vs specialization per SAE (layer), and the
field's metrics of every SAE, beside a second store's when one is picked."""

import streamlit as st

from explorer.analysis.compare import QUALITY_METRICS, compare_saes, quality_sample_note
from explorer.analysis.specialists import MEASURE_INFO, MEASURES, category_matrix
from explorer.charts.compare import quality_chart, specialists_per_category_chart
from explorer.errors import markdown_escaped
from explorer.methods_doc import methods_link
from explorer.ui import cached, compare_views
from explorer.ui.cached import feature_descriptions
from explorer.ui.links import feature_chart, show_chart
from explorer.ui.params import specialist_settings_sidebar
from explorer.ui.second_store import second_store
from explorer.ui.specialist_views import family_specialists
from explorer.ui.state import current_store
from explorer.ui.tables import plain_table

# two tables of one row per SAE, each narrow enough for a 1440 px screen
SPECIALIST_COLUMNS = ["sae", "n_alive", "n_specialists", "pct_specialists",
                      "categories_with_specialists", "n_categories", "median_rank_specialists",
                      "median_rank_general", "spearman_rho", "spearman_p", "max_score"]  # fmt: skip
QUALITY_COLUMNS = ["sae", "layer", "n_features", *QUALITY_METRICS]

st.title("Compare SAEs")
store = current_store()
settings = specialist_settings_sidebar()
family, result = family_specialists(store, settings)  # only the chosen family's rows
other = second_store(store)  # its SAEs join the field's metrics table
# computed once per shared result (`cached.of_shared`), not on every run
comparison = cached.of_shared(result, "compare_saes", lambda: compare_saes(store.saes(), result))
matrix = cached.of_shared(result, "category_matrix", lambda: category_matrix(result.table))

st.subheader("Specialists and frequency per SAE")
st.caption(
    f"Measure: **{MEASURES[settings.measure]}**, at least {settings.min_support} supporting "
    f"texts; specialists of the family {markdown_escaped(family)} (sidebar). Thresholds are "
    "in the sidebar and in this page's URL. Ranks: the median frequency rank, 1 = the SAE's "
    "most frequent feature; rho: Spearman's, of token frequency against the best score. "
    "Each header's tooltip defines its column. "
    f"{methods_link(MEASURE_INFO[settings.measure].anchor)} · "
    f"{methods_link('frequency-vs-specialization')}"
)
plain_table(comparison, SPECIALIST_COLUMNS)

st.subheader("Specialists per category")
st.caption("One bar per SAE (by layer); click a bar to open the category's best feature there.")
bars = matrix.assign(description=feature_descriptions(store, matrix, "best_feature"))
feature_chart(specialists_per_category_chart(bars))
numbers = st.expander("Numbers", key="category_numbers", on_change="rerun")
if numbers.open:  # its table runs only while it is open
    with numbers:
        counts = matrix.pivot(index="category", columns="sae", values="n_specialists")
        saes = [sae for sae in comparison["sae"] if sae in counts.columns]  # by layer
        count = {sae: st.column_config.NumberColumn(sae, format="%d") for sae in saes}
        plain_table(counts.reset_index(), ["category", *saes], **count)

st.subheader("Description scores per SAE")
st.caption(
    "How well each live feature's automatic description (its tokens, made from half of the "
    "corpus's texts) predicts where it fires on the other half: F1, with balanced accuracy "
    "(chance 0.5). " + methods_link("description-score-offline-detection-scoring")
)
rows = int(store.frequency_table()["n_active_tokens"].sum())
if st.toggle(
    "Score every SAE's descriptions",
    value=rows <= cached.MAX_SCAN_ROWS_ON_VIEW,
    help=f"One pass over each SAE's activations ({rows:,} rows in all), once per store.",
):
    plain_table(cached.description_score_table(store))

st.subheader("Quality per SAE")
st.caption(f"{quality_sample_note(store.saes(), store.meta())} {methods_link('sae-quality')}")
plain_table(comparison, QUALITY_COLUMNS)
show_chart(quality_chart(comparison))

compare_views.show_field_metrics(store, other)
