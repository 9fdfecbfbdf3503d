"""Specialist heatmaps: which features specialise in a category of text, at which layer, and
whether each finding beats chance, replicates and is more than one token."""

import streamlit as st

from explorer.analysis.controls import observed_vs_chance
from explorer.analysis.specialists import (
    MEASURE_INFO,
    category_matrix,
    layer_progression,
)
from explorer.charts.specialists import (
    category_heatmap,
    chance_heatmap,
    layer_progression_chart,
)
from explorer.errors import markdown_escaped
from explorer.methods_doc import methods_link
from explorer.ui import cached, specialist_views
from explorer.ui.cached import chance_baseline, feature_descriptions
from explorer.ui.links import feature_chart, show_chart
from explorer.ui.params import specialist_settings_sidebar, url_int, url_radio
from explorer.ui.specialist_views import family_specialists, replication_choice
from explorer.ui.state import current_store
from explorer.ui.tables import NUMBER, plain_table

st.title("Specialist heatmaps")
store = current_store()
settings = specialist_settings_sidebar()
family, result = family_specialists(store, settings)  # only the chosen family's rows
replication_note, result = replication_choice(store, result, settings)
findings = url_radio(
    "Findings", "findings", {"all": "all specialists", "replicated": "replicated only"}, "all"
)
per_category = url_int("Top specialists per category", "top", default=5, low=1, high=50)
baseline = chance_baseline(store, settings)

info = MEASURE_INFO[settings.measure]
categories, table = result.categories, result.table
replicated_only = findings == "replicated"
count = "n_replicated" if replicated_only else "n_specialists"
every_cell = cached.of_shared(  # once per shared result, not on every run
    result,
    "category_matrix of every category",
    lambda: category_matrix(table, categories, store.saes()),
)
matrix = observed_vs_chance(every_cell, baseline, count)
progression = layer_progression(matrix)

at_equals = settings.operation_position == "equals" and set(categories["kind"]) == {"operation"}
st.caption(
    f"Measure: **{info.name}** ({methods_link(info.anchor)}). Family "
    f"{markdown_escaped(family)}: each category against the rest of "
    + ("its family" if settings.contrast == "family" else "the whole corpus")
    + f" ({methods_link('families')})"
    + (", scored at each text's = tokens" if at_equals else "")
    + f". Tested cells need {settings.min_support} active texts of the category; chance is "
    f"{settings.permutations} label shuffles ({methods_link('chance-baseline')}).",
    help=info.help,
)
n_cells = len(matrix)
beating = int(matrix["beats_chance"].sum())
chosen = table["is_specialist"] & (table["replicated"] if replicated_only else True)
rates = result.replication
discovered = int(rates["discovered"].sum())
replicated = int(rates["replicated"].sum())
left, middle, right, last = st.columns(4)
left.metric(
    "specialists (all SAEs)",
    f"{int(chosen.sum()):,}",
    help="Replicated specialists only." if replicated_only else None,
)
middle.metric(
    "cells above chance",
    f"{beating} / {n_cells}",
    help="(SAE, category) cells whose specialist count has a permutation p-value <= 0.05 "
    "against label shuffles. " + methods_link("chance-baseline"),
)
right.metric(
    "replication rate",
    f"{replicated / discovered:.0%}" if discovered else "none found",
    help=f"Replicated / re-tested specialists. {replication_note}",
)
last.metric(
    "token detectors",
    f"{int((table['is_specialist'] & table['token_explained']).sum()):,}",
    help="Specialists whose top token's presence explains the category as well as the "
    "feature does. " + methods_link("token-confound"),
)

st.subheader("Category x SAE")
# Only the open tab runs (its name is in the URL, `tab`): a hidden tab's chart and tables
# cost a warm run as much as the open one's.
chance_tab, best_tab, numbers_tab = st.tabs(
    ["specialists vs chance", "best score", "numbers"], key="tab", bind="query-params"
)
if chance_tab.open:
    chance_tab.caption(
        "Each cell: specialists / the 95th percentile of the same count over label shuffles; "
        "faded cells marked ~ do not beat chance (permutation p-value above 0.05)."
    )
    show_chart(chance_heatmap(matrix, count), chance_tab)
if best_tab.open:
    described = matrix.assign(description=feature_descriptions(store, matrix, "best_feature"))
    feature_chart(category_heatmap(described, "best_score", info.name), best_tab)
if numbers_tab.open:
    with numbers_tab:
        saes = progression["sae"].tolist()
        plain_table(
            matrix.pivot(index="category", columns="sae", values=count).reset_index(),
            ["category", *saes],
            **{sae: NUMBER(sae, format="%d") for sae in saes},
        )
        plain_table(
            matrix,
            ["sae", "category", "n_specialists", "n_replicated", "chance_mean", "chance_p95",
             "chance_p", "beats_chance"],
        )  # fmt: skip

# one tab runs at a time (its name is in the URL, `details`): the five sections drew a chart
# and six tables on every run
top_tab, replication_tab, depth_tab, strongest_tab, coverage_tab = st.tabs(
    ["Top specialists", "Replication", "By depth", "Strongest features", "Coverage"],
    key="details",
    bind="query-params",
)
if top_tab.open:
    with top_tab:
        specialist_views.show_top_specialists(result, per_category, replicated_only)
if replication_tab.open:
    with replication_tab:
        specialist_views.show_replication(rates, replication_note)
if depth_tab.open:
    with depth_tab:
        st.subheader("Specialists by depth")
        show_chart(layer_progression_chart(progression))
if strongest_tab.open:
    with strongest_tab:
        specialist_views.show_strongest(result)
if coverage_tab.open:
    with coverage_tab:
        specialist_views.show_coverage(result)
