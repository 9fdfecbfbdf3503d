"""Logit lens: features by their decoder logit effects, which features promote or suppress a
token, whether promoted tokens follow a feature's top contexts (against random directions),
and a diverse selection of features by decoder cosine."""

import streamlit as st

from explorer.analysis.lens_checks import (
    INPUT_LIKE,
    KINDS,
    OUTPUT_LIKE,
    ConsistencySettings,
    diverse_features,
)
from explorer.analysis.logit_lens import MAX_LOOKUP, resolve_token, reverse_lookup
from explorer.charts.feature import token_label
from explorer.charts.lens import diverse_selection_chart, reverse_lookup_chart
from explorer.errors import ExplorerError, markdown_escaped
from explorer.store.queries.lens import MAX_OVERVIEW_TOKENS, RANKINGS, feature_ranking
from explorer.ui import cached
from explorer.ui import feature_cache as cache
from explorer.ui.lens_views import BROWSE_ROWS, show_browse, show_consistency, show_feature_examples
from explorer.ui.links import feature_chart
from explorer.ui.loaded import loaded_sae
from explorer.ui.params import url_int, url_radio, url_selectbox, url_text
from explorer.ui.state import current_source, current_store
from explorer.ui.tables import feature_table

VIEWS = {
    "browse": "Browse features",
    "reverse": "Reverse lookup: token → features",
    "consistency": "Consistency with next tokens",
    "diverse": "Diverse selection",
}


st.title("Logit lens")
store = current_store()
names = store.saes()["sae"].tolist()
sae = url_selectbox("SAE", "sae", names, default=names[-1])
view = url_radio("View", "view", VIEWS, default="browse")
d_sae = store.sae(sae).d_sae
if view == "browse":
    n_tokens = url_int("Tokens per direction", "n", 5, 1, MAX_OVERVIEW_TOKENS)
    rows = url_int("Features shown", "rows", min(BROWSE_ROWS, d_sae), 1, d_sae)
    show_browse(store, sae, n_tokens, rows)
    st.stop()

# the other views' features, with their promoted tokens, label and description (after the
# browse view: it has its own, and built this for 24,576 features on every run)
overview = cache.lens_overview(store, sae, 5)[["feature", "promoted", "label", "sae"]]
overview["description"] = cached.feature_descriptions(store, overview)


def with_overview(frame):
    """`frame` (with feature) and each feature's promoted tokens, label, description, sae."""
    return frame.merge(overview, on="feature", how="left")


loaded = current_source()
handle = loaded_sae(
    loaded, store, sae, "this view needs its decoder ('Browse features' works from the store alone)"
)
if handle is None:
    st.stop()

if view == "reverse":
    given_as = url_radio("Token given as", "given", {"text": "text", "id": "token id"}, "text")
    typed = url_text(
        "Token",
        "token",
        default=" the",
        check=str,
        help="One token of the model's tokenizer; a leading space is part of it (' the' and "
        "'the' differ). Or its id, with 'token id' above.",
    )
    top = url_int("Features per direction", "top", 20, 1, MAX_LOOKUP)
    try:
        token = resolve_token(loaded.tokenizer, loaded.model.cfg.d_vocab, typed, given_as)
    except ExplorerError as error:
        st.warning(str(error))  # the library's message escapes what the user typed
        st.stop()
    lookup = with_overview(reverse_lookup(loaded, sae, token.token_id, top))
    st.subheader(
        f"Features of {markdown_escaped(sae)} that most promote or suppress "
        f"{markdown_escaped(token_label(token.token))}"
    )
    st.caption(
        f"Token id {token.token_id}. Each feature's direct effect on this token's logit: one "
        "column of W_dec · W_U (after the final layer norm's weight), computed live. "
        "Click a bar to open the feature."
    )
    chart_data = lookup.assign(promoted=[" ".join(tokens) for tokens in lookup["promoted"]])
    left, right = st.columns(2)
    feature_chart(reverse_lookup_chart(chart_data, sae, token.token), left)
    with right:
        feature_table(
            lookup,
            ["direction", "rank", "feature", "logit", "promoted", "label"],
        )

elif view == "consistency":
    k = url_int("Top promoted tokens that count (k)", "k", 10, 1, 100)
    min_examples = url_int("Minimum examples with a next token", "min_examples", 5, 1, 100)
    seed = url_int("Random baseline seed", "seed", 0, 0, 2**31 - 1)
    threshold = st.sidebar.slider("Hit rate marking a kind", 0.05, 1.0, 0.5, 0.05)
    settings = ConsistencySettings(k=k, threshold=threshold, min_examples=min_examples, seed=seed)
    examples, checks = cache.lens_consistency(store, loaded, sae, settings)
    show_consistency(with_overview(checks), sae, k, seed)
    kinds = st.multiselect("Kinds shown", KINDS, default=[OUTPUT_LIKE, INPUT_LIKE])
    by_hit_rate = checks.sort_values(["hit_rate", "feature"], ascending=[False, True])
    feature_table(
        with_overview(by_hit_rate[by_hit_rate["kind"].isin(kinds)]),
        ["feature", "kind", "hit_rate", "input_hit_rate", "random_hit_rate", "mean_next_rank"]
        + ["n_next", "promoted", "label"],
    )
    show_feature_examples(by_hit_rate, examples, loaded.model, handle.sae, k, min_examples)

else:
    by = url_radio("Rank candidates by", "rank_by", RANKINGS, "max_logit")
    n_candidates = url_int("Candidates (first of the ranking)", "candidates", 200, 1, d_sae)
    threshold = st.sidebar.slider("Largest decoder cosine allowed", 0.05, 1.0, 0.7, 0.05)
    ranking = feature_ranking(store, sae, by, n_candidates)
    selection = diverse_features(handle.sae.W_dec, ranking["feature"].tolist(), threshold)
    selection = with_overview(selection.merge(ranking, on="feature"))
    chosen = selection[selection["chosen"]]
    st.metric(
        "diverse features",
        f"{len(chosen):,} of {len(selection):,}",
        help=f"Walking the first {len(selection)} features by {RANKINGS[by]}, a feature is "
        f"kept when its decoder cosine with every feature kept before it is below {threshold}.",
    )
    feature_chart(diverse_selection_chart(selection, sae, threshold))
    feature_table(
        chosen,
        ["position", "feature", "score", "max_cosine", "promoted", "label"],
    )
