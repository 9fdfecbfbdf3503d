"""How the token page shows a text's activations and one feature over a category.

Owns the layout of `explorer.analysis.text_activations.TextActivations` (tokens coloured by
each chosen feature, at the scale of its corpus maximum when the store has the SAE, and the
top features at each token as links) and of `explorer.analysis.feature_data.CategoryView`
(the target category's texts, then the other texts where the feature fires most, in grey).
The HTML is escaped by `explorer.charts.tokens_html`.
"""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from explorer.analysis.feature_data import CategoryView
from explorer.analysis.text_activations import TextActivations
from explorer.charts.tokens_html import (
    GREY,
    TARGET_COLOR,
    Highlight,
    examples_html,
    feature_highlights,
    highlight_html,
    legend_html,
)
from explorer.errors import markdown_escaped
from explorer.store.reader import Store
from explorer.ui import feature_cache as cache
from explorer.ui.tables import top_features_table

TOP_PER_TOKEN = 3
GROUPS = {
    True: "Texts of the target category",
    False: "Texts of other categories where the feature fires most, in grey",
}


def show_text(acts: TextActivations, features: list[int], store: Store | None) -> None:
    """Highlight `features` on the text (full colour at each feature's corpus max when
    `store` has the SAE, else at its max on this text) and list the top features per token."""
    corpus_max = {} if store is None else cache.feature_scales(store, acts.sae, features)
    highlights = feature_highlights(
        [f"{acts.sae} #{f}" for f in features], acts.scales(features, corpus_max)
    )
    values = acts.values(features)
    st.html(legend_html(highlights) + highlight_html(acts.tokens, values, highlights))
    st.markdown("**Top features at each token**")
    top_features_table(acts.top_features_table(TOP_PER_TOKEN), acts.sae, TOP_PER_TOKEN)


def show_category_view(view: CategoryView, sae: str, feature: int) -> None:
    if view.scale == 0:
        st.info(f"Feature {feature} of {markdown_escaped(sae)} never fires on this store's corpus.")
    highlight = Highlight(f"{sae} #{feature}", view.scale or 1.0)
    st.caption(
        f"Full colour at the feature's largest activation over the corpus ({view.scale:.3g}); "
        "the strongest token of each text is outlined."
    )
    captions = view.captions()
    for target, heading in GROUPS.items():
        group = view.texts.loc[view.texts["target"] == target, "example"].tolist()
        st.markdown(f"**{heading}** ({len(group)})")
        if group:
            chosen = replace(highlight, color=TARGET_COLOR if target else GREY)
            examples = {example: captions[example] for example in group}
            st.html(examples_html(view.windows, examples, chosen, None, "break"))
