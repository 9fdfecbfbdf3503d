"""The first visit's guide on Home, and the feature the feature page opens on without a link.

Owns how `explorer.analysis.guide` shows: the features worth opening as a feature table
(description and one-click link) and one line per page with the question it answers. The
description scores come from `cached.descriptions` (kept in the store, or scored on view for
an SAE small enough, `cached.scores_ready`); the specialists from `cached.specialists` under
the default settings, so both are computed once per store and shared with the other pages.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.errors import StreamlitAPIException

from explorer.analysis.guide import PAGE_QUESTIONS
from explorer.analysis.specialists import MEASURES, SpecialistSettings
from explorer.errors import markdown_escaped
from explorer.methods_doc import methods_link
from explorer.store.reader import Store
from explorer.ui import cached
from explorer.ui.tables import feature_table


def default_feature(store: Store) -> tuple[str, int] | None:
    """The feature the feature page opens on without a link (`guide.first_pick`)."""
    return cached.guide_picks(store)[0]


def show_features_worth_opening(store: Store) -> None:
    settings = SpecialistSettings()
    picks = cached.guide_picks(store)[1]
    st.caption(
        "Each SAE's best explained feature (its description predicts best where it fires on "
        "held-out texts) and each category's strongest specialist by "
        f"{MEASURES[settings.measure]} (the default measure). Click a feature to open its "
        "page. " + methods_link("features-worth-opening")
    )
    if picks.empty:
        st.info("No feature is scored or specialised in this store yet.")
        return
    feature_table(picks, ["why", "sae", "feature"], why=st.column_config.TextColumn("why open it"))


def show_page_questions() -> None:
    """One line per page: a link to it and the question it answers."""
    for path, question in PAGE_QUESTIONS.items():
        link, text = st.columns([1, 3], vertical_alignment="center")
        try:
            link.page_link(path)
        except StreamlitAPIException:  # a page run on its own, outside the entry's navigation
            link.markdown(markdown_escaped(Path(path).stem))
        text.markdown(question)
