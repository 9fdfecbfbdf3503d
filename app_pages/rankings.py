"""Rankings and relations: one SAE's features ranked, the features that fire with one feature,
and the features of a concept (a category of the corpus, or a few typed examples)."""

import streamlit as st

from explorer.analysis.descriptions import SCORE_RANKING_COLUMNS, SCORE_RANKINGS, rank_by_score
from explorer.analysis.rankings import MAX_RANKED, RANKINGS, rank_features
from explorer.errors import markdown_escaped
from explorer.ui import cached, relation_views
from explorer.ui.cached import specialists
from explorer.ui.params import specialist_settings_sidebar, url_int, url_selectbox
from explorer.ui.state import current_store
from explorer.ui.tables import feature_table

st.title("Rankings and relations")
store = current_store()
names = store.saes()["sae"].tolist()
sae = url_selectbox("SAE", "sae", names, default=names[-1])
ranking = url_selectbox("Ranking", "ranking", [*RANKINGS, *SCORE_RANKINGS], default="strongest")
count = url_int("Features shown", "n", default=25, low=10, high=MAX_RANKED)
settings = specialist_settings_sidebar()
frequency = store.frequency_table().query("sae == @sae")

st.subheader(f"{markdown_escaped(ranking.capitalize())} features of {markdown_escaped(sae)}")
st.caption(
    f"Ranked by {({**RANKINGS, **SCORE_RANKINGS})[ranking]}; dead features are left out. "
    "#: the rank (a click on a header sorts the rows, each keeps its rank)."
)
if ranking in SCORE_RANKINGS:
    described = cached.descriptions(store, sae)
    ranked = rank_by_score(described, ranking == "best explained", count)[SCORE_RANKING_COLUMNS]
else:
    table = (
        specialists(store, settings).table.query("sae == @sae")
        if ranking == "most selective"
        else None
    )
    ranked = rank_features(frequency, ranking, count, table)
feature_table(ranked, ranked.columns.drop(["rank", "sae"]).tolist())  # the rows' # is the rank

# one section runs at a time (its name is in the URL, `tab`): the three drew two charts and
# three tables on every run
co_firing_tab, category_tab, examples_tab = st.tabs(
    ["Co-activation", "Features of a category", "Features of typed examples"],
    key="tab",
    bind="query-params",
)
if co_firing_tab.open:
    with co_firing_tab:
        first = int(ranked["feature"].iloc[0]) if len(ranked) else 0
        relation_views.show_co_firing(store, sae, first)
if category_tab.open:
    with category_tab:
        relation_views.show_category_concept(store, sae, count)
if examples_tab.open:
    with examples_tab:
        relation_views.show_example_concept(store, sae, count, frequency)
