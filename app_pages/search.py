"""Search: features by their label, by a token they promote, or by a text that activates them.

Shareable as `search?by=token&q=...`; typed texts stay out of the URL.
"""

import streamlit as st

from explorer.analysis.descriptions import search_descriptions
from explorer.analysis.text_activations import TEXT_RANKINGS, rank_text_features, with_share_of_max
from explorer.charts.feature import token_label
from explorer.errors import ExplorerError, markdown_escaped
from explorer.store.queries import search as queries
from explorer.ui import cached
from explorer.ui import feature_cache as cache
from explorer.ui.limits import max_text_chars
from explorer.ui.params import url_int, url_radio, url_selectbox, url_text_query
from explorer.ui.state import current_source, current_store
from explorer.ui.tables import NUMBER, feature_table

ALL = "all SAEs"
MODES = {"label": "label", "token": "promoted token", "text": "a text that activates them"}
TEXT_KEY = "search_page.text"
COLUMNS = {
    "label": ["sae", "feature", "label", "description", "kind", "f1", "match"],
    "token": ["sae", "feature", "rank", "token", "logit", "label"],
    "text": ["feature", "max", "sum", "n_tokens", "peak_token", "share_of_max"],
}

st.title("Search features")
store = current_store()
saes = store.saes()
mode = url_radio("Search by", "by", MODES, default="label")
chosen = url_selectbox("SAE", "sae", [ALL, *saes["sae"]], default=ALL)
sae = None if chosen == ALL else chosen

if mode in ("label", "token"):
    label = "Label or description contains" if mode == "label" else "Token"
    example = "e.g. addition" if mode == "label" else "e.g. the"
    query = url_text_query(label, "q", queries.MAX_QUERY_CHARS, placeholder=example)
    if mode == "token":
        match = url_radio("Token match", "match", queries.TOKEN_MATCHES, default="exact")
        max_rank = url_int("Among each feature's top promoted tokens", "rank", 5, 1, 20)
    if not query.strip():
        st.info(f"Type a {MODES[mode]} to search for: the search is empty.")
        st.stop()
    try:
        if mode == "label":
            described = cached.all_descriptions(store)
            described = described if sae is None else described[described["sae"] == sae]
            results = search_descriptions(described, query).fillna({"label": ""})
        else:
            results = queries.search_tokens(store, query, match, sae, max_rank)
            results["token"] = results["token"].map(token_label)
    except ExplorerError as error:
        st.error(str(error))
        st.stop()
    if results.empty:
        st.info(f"No feature matches this {MODES[mode]} search.")
    else:
        st.caption(f"{len(results):,} results; 'open' goes to the feature's page.")
        feature_table(results, COLUMNS[mode], rank=NUMBER("token rank"))

else:
    loaded = current_source()
    by = url_radio("Rank features by", "rank_by", TEXT_RANKINGS, default="max")
    n = url_int("Features per SAE", "n", 20, 1, 200)
    text = st.text_area("Text", key=TEXT_KEY, max_chars=max_text_chars(), height=120)
    chosen_saes = saes["sae"].tolist() if sae is None else [sae]
    searched = [name for name in chosen_saes if loaded.handle_for(store.sae(name))]
    if not searched:
        st.info("The loaded source has none of the chosen SAEs: load the store's source.")
        st.stop()
    if not text.strip():
        st.info("Type a text: the features most active on it are listed, with links.")
        st.stop()
    try:
        for name in searched:
            ranked = rank_text_features(cache.typed_text(loaded, name, text), by, n)
            corpus_max = cache.feature_scales(store, name, ranked["feature"].tolist())
            ranked["peak_token"] = ranked["peak_token"].map(token_label)
            st.markdown(f"**{markdown_escaped(name)}**")
            if ranked.empty:
                st.info(f"No feature of {markdown_escaped(name)} fires on this text.")
            else:
                shown = with_share_of_max(ranked, corpus_max)
                feature_table(shown, COLUMNS["text"], max=NUMBER("max", format="%.3f"))
    except ExplorerError as error:
        st.error(str(error))
