"""Compare SAEs: quality, specialists and frequency vs specialization per SAE (layer), and the
field's metrics of every SAE, beside a second store's when one is picked."""

import streamlit as st

from explorer.analysis.compare import compare_saes
from explorer.analysis.specialists import category_matrix
from explorer.ui import cached, compare_views
from explorer.ui.params import specialist_settings_sidebar
from explorer.ui.second_store import second_store
from explorer.ui.specialist_views import family_specialists
from explorer.ui.state import current_store

st.title("Compare SAEs")
store = current_store()
settings = specialist_settings_sidebar()
family, result = family_specialists(store, settings)  # only the chosen family's rows
other = second_store(store)  # its SAEs join the field's metrics table
# computed once per shared result (`cached.of_shared`), not on every run
comparison = cached.of_shared(result, "compare_saes", lambda: compare_saes(store.saes(), result))
matrix = cached.of_shared(
    result, "category_matrix of tested cells", lambda: category_matrix(result.table)
)

# One tab runs at a time (its name is in the URL, `tab`): the page's three sections drew
# five tables and three charts on every run, most of a warm visit's time in the browser.
specialists_tab, scores_tab, metrics_tab = st.tabs(
    ["Specialists", "Descriptions and quality", "The field's metrics"],
    key="tab",
    bind="query-params",
)
if specialists_tab.open:
    with specialists_tab:
        compare_views.show_specialists(store, settings, family, comparison, matrix)
if scores_tab.open:
    with scores_tab:
        compare_views.show_scores_and_quality(store, comparison)
if metrics_tab.open:
    with metrics_tab:
        compare_views.show_field_metrics(store, other)
