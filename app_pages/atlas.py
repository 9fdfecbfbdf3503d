"""Feature atlas: a 2-D map of decoder directions (UMAP), coloured, with hover, links and a box."""

import streamlit as st

from explorer.analysis.atlas import DEFAULT_ATLAS
from explorer.charts.atlas import COLOURS
from explorer.methods_doc import methods_link
from explorer.ui.atlas_views import ALL_SAES, atlas_view, show_atlas, show_selection
from explorer.ui.params import specialist_settings_sidebar, url_radio, url_selectbox
from explorer.ui.state import current_store

st.title("Feature atlas")
store = current_store()
saes = store.saes()["sae"].tolist()
scope = url_selectbox("SAE", "sae", [*saes, ALL_SAES], default=saes[-1])
by = url_radio("Colour by", "colour", COLOURS, default="kind")
settings = specialist_settings_sidebar() if by == "category" else None
with st.popover("How the map is made"):
    st.markdown(
        "Each point is one feature's decoder direction (its row of W_dec, scaled to unit "
        "length). UMAP places directions with a high cosine near each other (cosine metric, "
        f"{DEFAULT_ATLAS.n_neighbors:d} neighbours, minimum distance {DEFAULT_ATLAS.min_dist:g}, "
        f"seed {DEFAULT_ATLAS.seed}). Directions that are exactly equal share a point. "
        "Neighbourhoods mean something; distances between far-apart clusters little. "
        + methods_link("feature-atlas")
    )
st.caption(
    "Decoder directions of "
    + ("every SAE of the store in one map" if scope == ALL_SAES else "one SAE")
    + ", laid out by UMAP so that features whose decoders point the same way sit together. "
    + methods_link("feature-atlas")
)

view = atlas_view(store, scope, by, settings)
if view is None:
    st.stop()
atlas = view.table
columns = st.columns(3)
columns[0].metric("features on the map", f"{len(atlas):,}")
columns[1].metric("SAEs", f"{atlas['sae'].nunique():,}")
columns[2].metric("that fire on the corpus", f"{int((atlas['token_freq'] > 0).sum()):,}")
selected = show_atlas(view, by)
st.subheader("Selected features")
show_selection(selected, scope)
