"""Search: features by their label, by a token they promote, or by a text that activates them.

Shareable as `search?by=token&q=...`; typed texts stay out of the URL.
"""

import streamlit as st

from explorer.charts.feature import token_label
from explorer.errors import ExplorerError
from explorer.store.queries.search import (
    MAX_QUERY_CHARS,
    TEXT_RANKINGS,
    TOKEN_MATCHES,
    rank_text_features,
    search_labels,
    search_tokens,
    with_share_of_max,
)
from explorer.ui import feature_cache as cache
from explorer.ui.limits import max_text_chars
from explorer.ui.params import url_int, url_radio, url_selectbox
from explorer.ui.state import current_source, current_store
from explorer.ui.tables import feature_table

ALL = "all SAEs"
MODES = {"label": "label", "token": "promoted token", "text": "a text that activates them"}
QUERY_KEY, TEXT_KEY = "search_page.query", "search_page.text"
NUMBERS = {
    name: st.column_config.NumberColumn(name.replace("_", " "), format=fmt)
    for name, fmt in [("logit", "%.4f"), ("max", "%.3f"), ("sum", "%.3f")]
}

st.title("Search features")
store = current_store()
saes = store.saes().set_index("sae", drop=False)
mode = url_radio("Search by", "by", MODES, default="label")
chosen = url_selectbox("SAE", "sae", [ALL, *saes["sae"]], default=ALL)
sae = None if chosen == ALL else chosen

if mode in ("label", "token"):
    st.session_state.setdefault(QUERY_KEY, st.query_params.get("q", "")[:MAX_QUERY_CHARS])
    placeholder = "e.g. addition" if mode == "label" else "e.g. the"
    query = st.text_input(
        "Label contains" if mode == "label" else "Token",
        key=QUERY_KEY,
        max_chars=MAX_QUERY_CHARS,
        placeholder=placeholder,
    )
    if query:
        st.query_params["q"] = query
    elif "q" in st.query_params:
        del st.query_params["q"]
    if mode == "token":
        match = url_radio("Token match", "match", TOKEN_MATCHES, default="exact")
        max_rank = url_int("Among each feature's top promoted tokens", "rank", 5, 1, 20)
    if not query.strip():
        st.info(f"Type a {MODES[mode]} to search for: the search is empty.")
        st.stop()
    try:
        if mode == "label":
            results = search_labels(store, query, sae)
            columns = ["sae", "feature", "label", "note"]
        else:
            results = search_tokens(store, query, match, sae, max_rank)
            results["token"] = results["token"].map(token_label)
            columns = ["sae", "feature", "rank", "token", "logit", "label"]
    except ExplorerError as error:
        st.error(str(error))
        st.stop()
    if results.empty:
        st.info(f"No feature matches this {MODES[mode]} search.")
    else:
        st.caption(f"{len(results):,} results; 'open' goes to the feature's page.")
        feature_table(results, columns, **NUMBERS, rank=st.column_config.NumberColumn("token rank"))

else:
    loaded = current_source()
    by = url_radio("Rank features by", "rank_by", TEXT_RANKINGS, default="max")
    n = url_int("Features per SAE", "n", 20, 1, 200)
    text = st.text_area("Text", key=TEXT_KEY, max_chars=max_text_chars(), height=120)
    in_store = [
        h.name
        for h in loaded.saes
        if h.name in saes.index and int(saes.loc[h.name, "d_sae"]) == h.sae.cfg.d_sae
    ]
    searched = in_store if sae is None else [s for s in in_store if s == sae]
    if not searched:
        st.info("The loaded source has none of the chosen SAEs: load the store's source.")
        st.stop()
    if not text.strip():
        st.info("Type a text: the features most active on it are listed, with links.")
        st.stop()
    frames = []
    try:
        for name in searched:
            acts = cache.typed_text(loaded, name, text)
            ranked = rank_text_features(acts, by, n)
            corpus_max = cache.feature_scales(store, name, ranked["feature"].tolist())
            ranked["peak_token"] = ranked["peak_token"].map(token_label)
            frames.append(with_share_of_max(ranked, corpus_max))
    except ExplorerError as error:
        st.error(str(error))
        st.stop()
    for name, frame in zip(searched, frames, strict=True):
        st.markdown(f"**{name}**")
        if frame.empty:
            st.info(f"No feature of {name} fires on this text.")
            continue
        feature_table(
            frame,
            ["feature", "max", "sum", "n_tokens", "peak_token", "share_of_max"],
            **NUMBERS,
            n_tokens=st.column_config.NumberColumn("active tokens"),
            peak_token="strongest token",
            share_of_max=st.column_config.NumberColumn(
                "share of its corpus max", format="%.2f", help="max here / max over the corpus"
            ),
        )
