"""Logit lens: features by their decoder logit effects, which features promote or suppress a
token, whether promoted tokens follow a feature's top contexts (against random directions),
and a diverse selection of features by decoder cosine."""

import re
from functools import partial

import streamlit as st

from explorer.analysis.lens_checks import (
    FEW,
    INPUT_LIKE,
    KINDS,
    OUTPUT_LIKE,
    ConsistencySettings,
    consistency_summary,
    diverse_features,
    example_ranks,
    hit_rate_histogram,
)
from explorer.analysis.logit_lens import MAX_LOOKUP, resolve_token, reverse_lookup
from explorer.charts.feature import token_label
from explorer.charts.lens import (
    consistency_scatter,
    diverse_selection_chart,
    hit_rate_histogram_chart,
    reverse_lookup_chart,
)
from explorer.errors import ExplorerError
from explorer.sources.unembed import unembed_directions
from explorer.store.queries.lens import (
    MAX_OVERVIEW_TOKENS,
    RANKINGS,
    feature_ranking,
)
from explorer.ui import feature_cache as cache
from explorer.ui.params import url_int, url_radio, url_selectbox, url_text
from explorer.ui.state import current_source, current_store
from explorer.ui.tables import feature_table

MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")
VIEWS = {
    "browse": "Browse features",
    "reverse": "Reverse lookup: token → features",
    "consistency": "Consistency with next tokens",
    "diverse": "Diverse selection",
}
TOKEN_LISTS = {
    "promoted": st.column_config.ListColumn("promoted tokens"),
    "suppressed": st.column_config.ListColumn("suppressed tokens"),
}
NUMBERS = {
    name: st.column_config.NumberColumn(name.replace("_", " "), format=fmt)
    for name, fmt in [
        ("max_logit", "%.3f"),
        ("min_logit", "%.3f"),
        ("logit", "%.4f"),
        ("hit_rate", "%.2f"),
        ("input_hit_rate", "%.2f"),
        ("random_hit_rate", "%.2f"),
        ("mean_next_rank", "%.0f"),
        ("score", "%.4g"),
        ("max_cosine", "%.3f"),
    ]
}


st.title("Logit lens")
store = current_store()
saes = store.saes().set_index("sae", drop=False)
names = saes["sae"].tolist()
sae = url_selectbox("SAE", "sae", names, default=names[-1])
view = url_radio("View", "view", VIEWS, default="browse")
d_sae = int(saes.loc[sae, "d_sae"])
table = cache.lens_overview(store, sae, 5)

if view == "browse":
    n_tokens = url_int("Tokens per direction", "n", 5, 1, MAX_OVERVIEW_TOKENS)
    shown = cache.lens_overview(store, sae, n_tokens)
    st.caption(
        f"Every feature of {sae} with the tokens its decoder direction most promotes and "
        "suppresses (W_dec · W_U after the final layer norm's weight, as stored at build; "
        "␣ is a space). Sort by any column; 'open' goes to the feature's page."
    )
    feature_table(
        shown.sort_values(["max_logit", "feature"], ascending=[False, True]),
        ["feature", "promoted", "suppressed", "max_logit", "min_logit", "token_freq", "max_act"]
        + ["label"],
        **TOKEN_LISTS,
        **NUMBERS,
        max_act=st.column_config.NumberColumn("max act", format="%.3g"),
    )
    st.stop()

loaded = current_source()
handle = next((h for h in loaded.saes if h.name == sae and h.sae.cfg.d_sae == d_sae), None)
if handle is None:
    st.info(
        f"The loaded source has no SAE {sae!r} with {d_sae} features, and this view needs its "
        "decoder: load the store's source (sidebar) to use it. 'Browse features' works "
        "from the store alone."
    )
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
        st.warning(MARKDOWN_SPECIAL.sub(r"\\\1", str(error)))  # the message quotes user text
        st.stop()
    lookup = reverse_lookup(loaded, sae, token.token_id, top).merge(
        table[["feature", "promoted", "label", "sae"]], on="feature", how="left"
    )
    st.subheader(f"Features of {sae} that most promote or suppress {token_label(token.token)}")
    st.caption(
        f"Token id {token.token_id}. Each feature's direct effect on this token's logit: one "
        "column of W_dec · W_U (after the final layer norm's weight), computed live. "
        "Click a bar to open the feature."
    )
    chart_data = lookup.assign(promoted=[" ".join(tokens) for tokens in lookup["promoted"]])
    left, right = st.columns(2)
    left.altair_chart(reverse_lookup_chart(chart_data, sae, token.token), width="stretch")
    with right:
        feature_table(
            lookup,
            ["direction", "rank", "feature", "logit", "promoted", "label"],
            **TOKEN_LISTS,
            **NUMBERS,
        )

elif view == "consistency":
    k = url_int("Top promoted tokens that count (k)", "k", 10, 1, 100)
    min_examples = url_int("Minimum examples with a next token", "min_examples", 5, 1, 100)
    seed = url_int("Random baseline seed", "seed", 0, 0, 2**31 - 1)
    threshold = st.sidebar.slider("Hit rate marking a kind", 0.05, 1.0, 0.5, 0.05)
    settings = ConsistencySettings(k=k, threshold=threshold, min_examples=min_examples, seed=seed)
    examples, checks = cache.lens_consistency(store, loaded, sae, settings)
    summary = consistency_summary(checks)
    st.caption(
        f"For each feature's stored top examples: is the next token among the {k} tokens its "
        "decoder most promotes (hit rate)? Output-like features predict what follows; "
        "input-like ones promote the token they fire on. The baseline gives every feature a "
        f"random direction of the same norm (seed {seed})."
    )
    metrics = {
        "features checked": f"{summary['n_features']:,}",
        "mean hit rate": f"{summary['mean_hit_rate']:.3f}",
        "random baseline": f"{summary['mean_random_hit_rate']:.3f}",
        "beat their random direction": f"{summary['share_beating_random']:.1%}",
        "median next-token rank": f"{summary['median_next_rank']:,.0f}",
        "random median rank": f"{summary['median_random_rank']:,.0f}",
        OUTPUT_LIKE: f"{summary[OUTPUT_LIKE]:,}",
        INPUT_LIKE: f"{summary[INPUT_LIKE]:,}",
    }
    for column, (name, value) in zip(st.columns(4) * 2, metrics.items(), strict=True):
        column.metric(name, value)
    left, right = st.columns(2)
    left.markdown("**Hit rate: SAE decoder against random directions**")
    left.altair_chart(hit_rate_histogram_chart(hit_rate_histogram(checks), k), width="stretch")
    right.markdown("**Next-token against activating-token hit rate** (click a point)")
    right.altair_chart(consistency_scatter(checks, sae, k), width="stretch")

    kinds = st.multiselect("Kinds shown", KINDS, default=[OUTPUT_LIKE, INPUT_LIKE])
    rows = checks[checks["kind"].isin(kinds)].merge(
        table[["feature", "promoted", "label", "sae"]], on="feature", how="left"
    )
    by_hit_rate = checks.sort_values(["hit_rate", "feature"], ascending=[False, True])
    feature_table(
        rows.sort_values(["hit_rate", "feature"], ascending=[False, True]),
        ["feature", "kind", "hit_rate", "input_hit_rate", "random_hit_rate", "mean_next_rank"]
        + ["n_next", "promoted", "label"],
        **TOKEN_LISTS,
        **NUMBERS,
    )
    st.subheader("One feature's examples")
    kind_of = dict(zip(by_hit_rate["feature"], by_hit_rate["kind"], strict=True))
    feature = st.selectbox(
        "Feature",
        list(kind_of),
        format_func=lambda f: f"{f} ({kind_of[f]})",
        help=f"Features with stored examples, by hit rate; '{FEW}': under {min_examples} next "
        "tokens.",
    )
    if feature is not None:
        unembed = partial(unembed_directions, loaded.model)
        ranked = example_ranks(examples, handle.sae.W_dec, unembed, int(feature), k)
        ranked["token"] = ranked["token"].map(token_label)
        ranked["next_token"] = ranked["next_token"].map(token_label, na_action="ignore")
        ranked["next_token"] = ranked["next_token"].fillna("(end of text)")
        st.dataframe(
            ranked[["rank", "value", "token", "input_rank", "next_token", "next_rank"]],
            hide_index=True,
            column_config={
                "rank": "example",
                "value": st.column_config.NumberColumn("activation", format="%.3f"),
                "token": "activating token",
                "input_rank": st.column_config.NumberColumn("its logit rank", format="%d"),
                "next_token": "next token",
                "next_rank": st.column_config.NumberColumn("its logit rank", format="%d"),
            },
        )

else:
    by = url_radio("Rank candidates by", "rank_by", RANKINGS, "max_logit")
    n_candidates = url_int("Candidates (first of the ranking)", "candidates", 200, 1, d_sae)
    threshold = st.sidebar.slider("Largest decoder cosine allowed", 0.05, 1.0, 0.7, 0.05)
    ranking = feature_ranking(store, sae, by, n_candidates)
    selection = diverse_features(handle.sae.W_dec, ranking["feature"].tolist(), threshold)
    selection = selection.merge(ranking, on="feature").merge(
        table[["feature", "promoted", "label", "sae"]], on="feature", how="left"
    )
    chosen = selection[selection["chosen"]]
    st.metric(
        "diverse features",
        f"{len(chosen):,} of {len(selection):,}",
        help=f"Walking the first {len(selection)} features by {RANKINGS[by]}, a feature is "
        f"kept when its decoder cosine with every feature kept before it is below {threshold}.",
    )
    st.altair_chart(diverse_selection_chart(selection, sae, threshold), width="stretch")
    feature_table(
        chosen,
        ["position", "feature", "score", "max_cosine", "promoted", "label"],
        **TOKEN_LISTS,
        **NUMBERS,
    )
