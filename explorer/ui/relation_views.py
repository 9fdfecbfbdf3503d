"""How the rankings page shows relations between features: co-firing with one feature, and
the features of a concept (a corpus category, or typed examples).

Owns the widgets and layout of those three sections; the scores come from the store's
relation queries (`explorer.store.queries.relations`, `co_firing`) and
`explorer.analysis.concepts`, and every table links to the feature pages.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer.analysis import concepts
from explorer.errors import ExplorerError, SourceError, markdown_escaped
from explorer.store.queries.relations import categories, category_contrast
from explorer.store.reader import Store
from explorer.ui import feature_cache as cache
from explorer.ui.limits import max_text_chars
from explorer.ui.loaded import missing_sae_message
from explorer.ui.state import current_source
from explorer.ui.tables import features_with_chart

EXAMPLES_KEY = "rankings_page.examples"
# the category concept's table; its text counts are in the caption (coverage is their ratio)
CATEGORY_CONCEPT_COLUMNS = ["feature", "concept_score", "mean_in", "mean_out", "auroc",
                            "coverage", "share"]  # fmt: skip
MAX_FEATURE_INPUT = 10_000_000
EXAMPLES_LABEL = (
    f"Examples, one per line (at most {concepts.MAX_EXAMPLES} lines of "
    f"{concepts.MAX_EXAMPLE_CHARS} characters)"
)


def show_co_firing(store: Store, sae: str, first: int) -> None:
    """A feature (from `first`), the level and how many; the features that fire with it."""
    feature_column, level_column, k_column = st.columns(3)
    feature = feature_column.number_input(
        "Feature",
        min_value=0,
        max_value=MAX_FEATURE_INPUT,
        value=first,
        step=1,
        key=f"rankings_page.feature.{sae}",
    )
    level = level_column.radio(
        "Fire together on the same", ["token", "text"], horizontal=True, key="rankings_page.level"
    )
    k = k_column.slider("Co-firing features shown", 5, 50, 15, key="rankings_page.k")
    try:
        feature = store.check_feature(sae, int(feature))
    except ExplorerError as error:
        st.error(str(error))
        return
    st.caption(
        f"Features of {markdown_escaped(sae)} that fire on the same {markdown_escaped(level)}s as "
        f"feature {feature}, by Jaccard similarity (both / either)."
    )
    features_with_chart(
        cache.co_firing(store, sae, feature, k, level),
        ["feature", "jaccard", "n_both", "n_active"],
        ("jaccard", "Jaccard similarity", {"n_both": f"{level}s together"}),
        f"Feature {feature} of {markdown_escaped(sae)} never fires with another feature on "
        "this corpus.",
    )


def show_category_concept(store: Store, sae: str, count: int) -> None:
    category = st.selectbox("Category", categories(store), key="rankings_page.category")
    contrast = category_contrast(store, sae, category)
    concept = concepts.category_concept(contrast, count).assign(sae=sae)
    n_texts = int(contrast["n_in"].iloc[0]) if len(contrast) else 0
    st.caption(
        "Score = (mean text activation in the category - mean outside) x AUROC of the text "
        f"activation, one vs rest; coverage: of the category's {n_texts:,} texts, those where "
        "the feature fires; share: of the texts where it fires, those in the category. From "
        "the store's per-category tables."
    )
    features_with_chart(
        concept,
        CATEGORY_CONCEPT_COLUMNS,
        ("concept_score", "concept score", {"auroc": "AUROC"}),
        f"No feature of {markdown_escaped(sae)} fires more on {markdown_escaped(category)} "
        "texts than on the others.",
    )


def show_example_concept(store: Store, sae: str, count: int, frequency: pd.DataFrame) -> None:
    """Typed examples (one per line), encoded live by the loaded source's copy of `sae`,
    against the corpus (`frequency`: the SAE's rows of `Store.frequency_table()`)."""
    with st.form("concept_examples"):
        limit = max_text_chars(concepts.MAX_EXAMPLES * (concepts.MAX_EXAMPLE_CHARS + 1))
        text = st.text_area(
            EXAMPLES_LABEL, max_chars=limit, height=160, key="rankings_page.examples_text"
        )
        if st.form_submit_button("Find features"):
            st.session_state[EXAMPLES_KEY] = text
    if EXAMPLES_KEY not in st.session_state:
        return
    try:
        lines = concepts.parse_examples(st.session_state[EXAMPLES_KEY])
        loaded = current_source()
        if loaded.handle_for(store.sae(sae)) is None:
            raise SourceError(missing_sae_message(store, sae, "typed examples need it"))
        texts = [cache.typed_text(loaded, sae, line) for line in lines]
        acts, n_tokens = concepts.stack_examples(texts)
        found = concepts.example_concept(acts, n_tokens, frequency, count).assign(sae=sae)
    except ExplorerError as error:
        st.error(str(error))
        return
    st.caption(
        f"{len(lines)} examples, {n_tokens} tokens. Score = mean activation per token "
        "on the examples x ln(that mean / the corpus mean per token)."
    )
    features_with_chart(
        found,
        found.columns.drop("sae").tolist(),
        ("concept_score", "concept score", {"lift": "lift"}),
        "No feature fires more on these examples than on the corpus.",
    )
