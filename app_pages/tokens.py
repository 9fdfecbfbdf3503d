"""Token highlighting: a stored or typed text under one or several features, the top features at
each token, and one feature over the texts of a category (others in grey)."""

from dataclasses import replace

import streamlit as st

from explorer.charts.tokens_html import (
    GREY,
    TARGET_COLOR,
    Highlight,
    examples_html,
    feature_highlights,
    highlight_html,
    legend_html,
)
from explorer.errors import ExplorerError
from explorer.live.text import MAX_HIGHLIGHTED, parse_feature_ids
from explorer.ui import feature_cache as cache
from explorer.ui.limits import max_text_chars
from explorer.ui.state import current_source, current_store

TOP_PER_TOKEN = 3
TYPED_KEY = "tokens_page.typed"
FEATURE_HELP = (
    f"Up to {MAX_HIGHLIGHTED} feature ids, separated by commas or spaces. "
    "Empty: the text's strongest features."
)
LINKS = {
    f"feature {rank}": st.column_config.LinkColumn(f"#{rank}", display_text=r"feature=(\d+)$")
    for rank in range(1, TOP_PER_TOKEN + 1)
}


def show_text(acts, features_text: str, d_sae: int, corpus_max) -> None:
    """Highlight `acts` for the typed features (or its strongest) and list the top features."""
    try:
        features = parse_feature_ids(features_text, d_sae) or acts.strongest_features(3)
    except ExplorerError as error:
        st.error(str(error))
        return
    scales = acts.scales(features, corpus_max(features))
    highlights = feature_highlights([f"{acts.sae} #{f}" for f in features], scales)
    st.html(
        legend_html(highlights) + highlight_html(acts.tokens, acts.values(features), highlights)
    )
    st.markdown("**Top features at each token**")
    st.dataframe(acts.top_features_table(TOP_PER_TOKEN), hide_index=True, column_config=LINKS)


store = current_store()
saes = store.saes().set_index("sae", drop=False)
st.title("Token highlighting")
mode = st.radio(
    "Show", ["Stored text", "Typed text", "One feature over a category"], horizontal=True
)

if mode == "Stored text":
    sae_column, category_column, text_column = st.columns([2, 2, 3])
    sae = sae_column.selectbox("SAE", list(saes["sae"]))
    category = category_column.selectbox("Category", list(store.categories()["category"]))
    texts = store.texts(category).set_index("text_id")
    text_id = text_column.selectbox(
        "Text", list(texts.index), format_func=lambda t: f"{t}: {texts.loc[t, 'text'][:60]!r}"
    )
    features_text = st.text_input("Features", max_chars=200, help=FEATURE_HELP)
    show_text(
        cache.stored_text(store, int(text_id), sae),
        features_text,
        int(saes.loc[sae, "d_sae"]),
        lambda features: cache.feature_scales(store, sae, features),
    )

elif mode == "Typed text":
    loaded = current_source()
    with st.form("typed_text"):
        sae = st.selectbox("SAE", [handle.name for handle in loaded.saes])
        text = st.text_area("Text", max_chars=max_text_chars(), height=120)
        features_text = st.text_input("Features", max_chars=200, help=FEATURE_HELP)
        if st.form_submit_button("Run"):
            st.session_state[TYPED_KEY] = (sae, text, features_text)
    if TYPED_KEY in st.session_state:
        sae, text, features_text = st.session_state[TYPED_KEY]
        d_sae = loaded.sae(sae).sae.cfg.d_sae
        in_store = sae in saes.index and int(saes.loc[sae, "d_sae"]) == d_sae
        try:
            acts = cache.typed_text(loaded, sae, text)
        except ExplorerError as error:
            st.error(str(error))
        else:
            show_text(
                acts,
                features_text,
                d_sae,
                lambda features: cache.feature_scales(store, sae, features) if in_store else {},
            )

else:
    sae_column, feature_column, category_column, count_column = st.columns([2, 1, 2, 1])
    sae = sae_column.selectbox("SAE", list(saes["sae"]))
    d_sae = int(saes.loc[sae, "d_sae"])
    live = cache.live_features(store, sae)
    first_live = int(live[0]) if len(live) else 0
    feature = int(feature_column.number_input("Feature", 0, d_sae - 1, first_live, step=1))
    category = category_column.selectbox("Target category", list(store.categories()["category"]))
    n_texts = int(count_column.number_input("Texts per group", 1, 100, 10))
    view = cache.category_view_of(store, sae, feature, category, n_texts)
    if view.scale == 0:
        st.info(f"Feature {feature} of {sae} never fires on this store's corpus.")
    highlight = Highlight(f"{sae} #{feature}", view.scale or 1.0)
    st.caption(
        f"Full colour at the feature's largest activation over the corpus ({view.scale:.3g}); "
        "the strongest token of each text is outlined."
    )
    captions = view.captions()
    for target, heading in [
        (True, "Texts of the target category"),
        (False, "Texts of other categories where the feature fires most, in grey"),
    ]:
        group = view.texts.loc[view.texts["target"] == target, "example"].tolist()
        st.markdown(f"**{heading}** ({len(group)})")
        if group:
            color = TARGET_COLOR if target else GREY
            chosen = {example: captions[example] for example in group}
            st.html(
                examples_html(view.windows, chosen, replace(highlight, color=color), None, "break")
            )
