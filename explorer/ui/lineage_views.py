"""How the feature page shows a feature's lineage: its best counterparts in the other SAEs
(layers) by decoder cosine and by activation correlation, one table under the other, and the
best match's similarity by depth.

Owns that section's layout. The correlations come from `cached.correlation_lineage` (every
feature of the store at once, over the stored activations); the cosines from the loaded
source's decoders (`feature_cache.decoder_neighbours_of`), so without the loaded SAE only the
correlation side shows. Definitions: docs/methods.md#lineage.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer.analysis.lineage import FEATURE_MATCH_COLUMNS, depth_profile
from explorer.charts.field_metrics import depth_chart
from explorer.methods_doc import methods_link
from explorer.sources.source import LoadedSource, SaeHandle
from explorer.store.reader import Store
from explorer.ui import cached
from explorer.ui import feature_cache as cache
from explorer.ui.links import feature_chart
from explorer.ui.loaded import missing_sae_message
from explorer.ui.tables import feature_table

LINEAGE_HELP = (
    "Decoder cosine: the cosine of the two features' decoder directions. Activation "
    "correlation: Pearson's r of the two features' activations over every token of the corpus, "
    "zeros included."
)
COLUMNS = ["sae", "similarity", "feature"]  # the description follows the feature
PER_SAE = 3  # counterparts shown per other SAE


def _number(label: str) -> st.column_config.NumberColumn:
    return st.column_config.NumberColumn(label, format="%.3f")


def decoder_counterparts(
    store: Store, loaded: LoadedSource, sae: str, feature: int, k: int
) -> pd.DataFrame:
    """The k nearest decoder directions of the feature in each other SAE of the store that
    the loaded source holds (`feature_matches` columns)."""
    neighbours = cache.decoder_neighbours_of(loaded, sae, feature, k)
    others = set(store.saes()["sae"]) - {sae}
    rows = neighbours[neighbours["sae"].isin(others)]
    return rows.rename(columns={"cosine": "similarity"})[FEATURE_MATCH_COLUMNS]


def show_lineage(
    store: Store, loaded: LoadedSource, handle: SaeHandle | None, sae: str, feature: int, k: int
) -> None:
    """The two tables of counterparts (k per other SAE) and the chart of the best match's
    similarity by the other SAE's layer."""
    st.subheader("Lineage across layers", help=LINEAGE_HELP)
    if len(store.saes()) < 2:
        st.info("This store has one SAE: there are no other layers to follow the feature into.")
        return
    computed = cached.lineage_ready(store) or st.toggle(
        "Correlate every feature over the corpus's tokens (this store keeps no lineage and "
        "holds many activations: minutes, once per store)",
        key="lineage_compute",
    )
    correlated = (
        cached.feature_lineage(store, sae, feature, k)
        if computed
        else pd.DataFrame(columns=FEATURE_MATCH_COLUMNS)
    )
    # one table under the other: side by side, a half-width column (480 px at 1440) cuts the
    # similarity off behind the page link, SAE, id and description
    st.markdown("**By decoder cosine**")
    if handle is None:
        st.info(missing_sae_message(store, sae, "decoder cosines need its decoder"))
        cosines = pd.DataFrame(columns=FEATURE_MATCH_COLUMNS)
    else:
        cosines = decoder_counterparts(store, loaded, sae, feature, k)
        feature_table(cosines, COLUMNS, similarity=_number("cosine"))
    st.markdown("**By activation correlation over tokens**")
    if not computed:
        st.info(
            "Not computed: a build keeps the lineage (python -m explorer derive adds it to "
            "this store), or switch on the toggle above."
        )
    elif correlated.empty:
        st.info("This feature never fires on the corpus: it correlates with nothing.")
    else:
        feature_table(correlated, COLUMNS, similarity=_number("Pearson r"))
    profile = depth_profile(
        store.saes(), {"decoder cosine": cosines, "activation correlation": correlated}
    )
    if len(profile):
        profile = profile.assign(description=cached.feature_descriptions(store, profile))
        st.caption(
            "The best match in each other SAE, by that SAE's layer; a point opens it. "
            + methods_link("lineage")
        )
        feature_chart(depth_chart(profile))
