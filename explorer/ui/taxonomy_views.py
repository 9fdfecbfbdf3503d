"""The token taxonomy page's sections beyond its headline: the table of top features, and the
comparison of two stores (the chosen known store opened, or a message; each store's taxonomy
summary per SAE side by side, and the chart of one measure)."""

import pandas as pd
import streamlit as st

from explorer.analysis.enrichment import TaxonomySettings
from explorer.charts.taxonomy import COMPARED, store_comparison_chart
from explorer.store.reader import Store
from explorer.ui import cached
from explorer.ui.links import show_chart
from explorer.ui.second_store import open_second_store
from explorer.ui.tables import feature_table, p_value_column, plain_table

TABLE_COLUMNS = ["feature", "label", "top_tokens", "max_enrichment", "ceiling",
                 "p_value", "n_active_tokens", "n_significant"]  # fmt: skip


def show_top_features(shown: pd.DataFrame, rows: int) -> None:
    """The first `rows` of `shown` (a taxonomy's features, by enrichment) as a linked table."""
    st.caption(f"{min(rows, len(shown)):,} of {len(shown):,} features; click a header to sort.")
    feature_table(  # the SAE is the page's: no sae column, so the table fits 1440 px
        shown.head(rows),
        TABLE_COLUMNS,
        label=st.column_config.TextColumn(
            "label", help="monosemantic: a label other than polysemantic and unlabelled"
        ),
        top_tokens=st.column_config.TextColumn("top tokens (enrichment)", width=150),
        max_enrichment=st.column_config.NumberColumn(
            "enrichment",
            format="%.1f",
            help="max enrichment: the largest of its significant tokens'",
        ),
        ceiling=st.column_config.NumberColumn(
            "ceiling",
            format="%.1f",
            help="the enrichment its max-enrichment token would have if every occurrence of it "
            "were active: one over the token's share of the corpus",
        ),
        p_value=p_value_column("p", help="chi-squared p-value of its max-enrichment token"),
    )


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
