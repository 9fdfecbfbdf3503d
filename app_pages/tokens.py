"""Token highlighting: a stored or typed text under one or several features, the top features at
each token, and one feature over the texts of a category (others in grey)."""

import streamlit as st

from explorer.analysis.text_activations import MAX_HIGHLIGHTED, TextActivations, parse_feature_ids
from explorer.errors import ExplorerError
from explorer.store.reader import Store
from explorer.ui import feature_cache as cache
from explorer.ui.limits import max_text_chars
from explorer.ui.state import current_source, current_store
from explorer.ui.token_views import show_category_view, show_text

MODES = ["Stored text", "Typed text", "One feature over a category"]
TYPED_KEY = "tokens_page.typed"
FEATURE_HELP = (
    f"Up to {MAX_HIGHLIGHTED} feature ids, separated by commas or spaces. "
    "Empty: the text's strongest features."
)


def highlight(acts: TextActivations, features_text: str, d_sae: int, store: Store | None):
    """The typed features (or the text's three strongest) highlighted, or the message."""
    try:
        features = parse_feature_ids(features_text, d_sae) or acts.strongest_features(3)
    except ExplorerError as error:
        st.error(str(error))
    else:
        show_text(acts, features, store)


store = current_store()
saes = store.saes()["sae"].tolist()
categories = store.categories()["category"].tolist()
st.title("Token highlighting")
mode = st.radio("Show", MODES, horizontal=True)

if mode == "Stored text":
    sae_column, category_column, text_column = st.columns([2, 2, 3])
    sae = sae_column.selectbox("SAE", saes)
    texts = store.texts(category_column.selectbox("Category", categories)).set_index("text_id")
    text_id = text_column.selectbox(
        "Text", list(texts.index), format_func=lambda t: f"{t}: {texts.loc[t, 'text'][:60]!r}"
    )
    features_text = st.text_input("Features", max_chars=200, help=FEATURE_HELP)
    acts = cache.stored_text(store, int(text_id), sae)
    highlight(acts, features_text, store.sae(sae).d_sae, store)

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
        handle = loaded.sae(sae)
        in_store = sae in saes and loaded.handle_for(store.sae(sae)) is handle
        try:
            acts = cache.typed_text(loaded, sae, text)
        except ExplorerError as error:
            st.error(str(error))
        else:
            highlight(acts, features_text, handle.sae.cfg.d_sae, store if in_store else None)

else:
    sae_column, feature_column, category_column, count_column = st.columns([2, 1, 2, 1])
    sae = sae_column.selectbox("SAE", saes)
    live = cache.live_features(store, sae)
    first_live = int(live[0]) if len(live) else 0
    feature = int(feature_column.number_input("Feature", 0, store.sae(sae).d_sae - 1, first_live))
    category = category_column.selectbox("Target category", categories)
    n_texts = int(count_column.number_input("Texts per group", 1, 100, 10))
    show_category_view(cache.category_view_of(store, sae, feature, category, n_texts), sae, feature)
