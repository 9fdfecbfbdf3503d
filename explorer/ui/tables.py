"""Tables that name features: a link column to each feature's page and number formats.

Owns how the analysis pages show a DataFrame with `sae` and `feature` columns in
`st.dataframe`: a `link` column holding `explorer.ui.links.feature_url` (shown as the
feature id, clickable) and the column formats of the specialist measures.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer.ui.links import feature_url

LINK = "link"
MEASURE_FORMATS = {
    "score": st.column_config.NumberColumn("score", format="%.3g"),
    "share": st.column_config.NumberColumn("share", format="%.2f"),
    "max_other_share": st.column_config.NumberColumn("max other share", format="%.2f"),
    "auroc": st.column_config.NumberColumn("AUROC", format="%.3f"),
    "enrichment": st.column_config.NumberColumn("enrichment", format="%.2f"),
    "p_value": st.column_config.NumberColumn("p", format="%.2e"),
    "q_value": st.column_config.NumberColumn("q (BH)", format="%.2e"),
    "token_freq": st.column_config.NumberColumn("token freq", format="%.2e"),
    "text_freq": st.column_config.NumberColumn("text freq", format="%.3f"),
    "max": st.column_config.NumberColumn("max act", format="%.3g"),
    "mean_active": st.column_config.NumberColumn("mean act", format="%.3g"),
}


def with_feature_links(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`columns` of `frame` with a first `link` column to each row's feature page."""
    pairs = zip(frame["sae"], frame["feature"], strict=True)
    links = [feature_url(sae, feature) for sae, feature in pairs]
    return frame[columns].assign(**{LINK: links})[[LINK, *columns]]


def feature_table(frame: pd.DataFrame, columns: list[str], **config) -> None:
    """Show `frame` (with sae and feature columns) as a dataframe whose first column links
    to each feature's page; `config` adds column configs by name."""
    st.dataframe(
        with_feature_links(frame, columns),
        hide_index=True,
        column_config={
            LINK: st.column_config.LinkColumn("page", display_text="open", width="small"),
            **{name: fmt for name, fmt in MEASURE_FORMATS.items() if name in columns},
            **config,
        },
    )
