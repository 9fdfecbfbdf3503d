"""The token taxonomy page's comparison of two stores: the chosen known store opened (or a
message), each store's taxonomy summary per SAE side by side, and the chart of one measure."""

import pandas as pd
import streamlit as st

from explorer.analysis.enrichment import TaxonomySettings
from explorer.charts.taxonomy import COMPARED, store_comparison_chart
from explorer.store.reader import Store
from explorer.ui import cached
from explorer.ui.links import show_chart
from explorer.ui.second_store import open_second_store
from explorer.ui.tables import plain_table


def stores_side_by_side(store: Store, other_path: str | None, settings: TaxonomySettings) -> None:
    """The taxonomy summary of `store` and of the store at `other_path` (when one is chosen)
    per SAE, as a table and as a chart of the measure the user picks."""
    other = open_second_store(other_path)
    stores = {f"A: {store.path.name}": store}
    if other is not None:
        stores[f"B: {other.path.name}"] = other
    compared = pd.concat(
        [cached.taxonomy_comparison(s, settings).assign(store=name) for name, s in stores.items()],
        ignore_index=True,
    )[["store", "sae", "layer", "n_features", *COMPARED]]
    plain_table(
        compared,
        n_features=st.column_config.NumberColumn(
            "features analysed", format="%d", help="the SAE's live features"
        ),
    )
    measure = st.radio(
        "Measure", list(COMPARED), format_func=COMPARED.get, horizontal=True, key="taxonomy_measure"
    )
    show_chart(store_comparison_chart(compared, measure))
