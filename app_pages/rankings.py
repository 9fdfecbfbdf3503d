"""Rankings and relations: one SAE's features ranked, the features that fire with one feature,
and the features of a concept (a category of the corpus, or a few typed examples)."""

import streamlit as st

from explorer.analysis.concepts import (
    MAX_EXAMPLE_CHARS,
    MAX_EXAMPLES,
    category_concept,
    example_concept,
    parse_examples,
    stack_examples,
)
from explorer.analysis.rankings import MAX_RANKED, RANKINGS, rank_features
from explorer.charts.rankings import feature_bar_chart
from explorer.errors import ExplorerError, SourceError
from explorer.store.queries.relations import categories, category_contrast
from explorer.ui import feature_cache as cache
from explorer.ui.cached import specialists
from explorer.ui.limits import max_text_chars
from explorer.ui.params import specialist_settings_sidebar, url_int, url_selectbox
from explorer.ui.state import current_source, current_store
from explorer.ui.tables import feature_table

EXAMPLES_KEY = "rankings_page.examples"
MAX_FEATURE_INPUT = 10_000_000
NUMBER = st.column_config.NumberColumn
FORMATS = {
    "composite": NUMBER("token freq x mean act", format="%.3g"),
    "max_text_act": NUMBER("max text act", format="%.3g"),
    "concept_score": NUMBER("concept score", format="%.4g"),
    "mean_in": NUMBER("mean act in category", format="%.4f"),
    "mean_out": NUMBER("mean act outside", format="%.4f"),
    "coverage": NUMBER("coverage", format="%.2f"),
    "example_mean": NUMBER("mean act on examples", format="%.4f"),
    "corpus_mean": NUMBER("corpus mean act", format="%.4f"),
    "lift": NUMBER("lift", format="%.3g"),
    "active_share": NUMBER("active share", format="%.2f"),
    "jaccard": NUMBER("Jaccard", format="%.3f"),
    "n_both": NUMBER("together"),
    "n_active": NUMBER("active"),
    "is_specialist": st.column_config.CheckboxColumn("specialist"),
}

st.title("Rankings and relations")
store = current_store()
saes = store.saes().set_index("sae", drop=False)
sae = url_selectbox("SAE", "sae", saes["sae"].tolist(), default=saes["sae"].iloc[-1])
ranking = url_selectbox("Ranking", "ranking", list(RANKINGS), default="strongest")
count = url_int("Features shown", "n", default=25, low=10, high=MAX_RANKED)
settings = specialist_settings_sidebar()
frequency = store.frequency_table()
frequency = frequency[frequency["sae"] == sae]

st.subheader(f"{ranking.capitalize()} features of {sae}")
st.caption(f"Ranked by {RANKINGS[ranking]}; dead features are left out.")
table = specialists(store, settings).table if ranking == "most selective" else None
ranked = rank_features(
    frequency, ranking, count, None if table is None else table[table["sae"] == sae]
)
feature_table(ranked, ranked.columns.drop("sae").tolist(), **FORMATS)

st.subheader("Co-activation")
feature_column, level_column, k_column = st.columns(3)
feature = feature_column.number_input(
    "Feature",
    min_value=0,
    max_value=MAX_FEATURE_INPUT,
    value=int(ranked["feature"].iloc[0]) if len(ranked) else 0,
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
else:
    cofiring = cache.co_firing(store, sae, feature, k, level)
    st.caption(
        f"Features of {sae} that fire on the same {level}s as feature {feature}, by Jaccard "
        "similarity (both / either)."
    )
    if cofiring.empty:
        st.info(f"Feature {feature} of {sae} never fires with another feature on this corpus.")
    else:
        table_column, chart_column = st.columns(2)
        with table_column:
            feature_table(cofiring, ["feature", "jaccard", "n_both", "n_active"], **FORMATS)
        chart = feature_bar_chart(
            cofiring, "jaccard", "Jaccard similarity", {"n_both": f"{level}s together"}
        )
        chart_column.altair_chart(chart, width="stretch")

st.subheader("Features for a concept")
from_category, from_examples = st.tabs(["From a category", "From typed examples"])
with from_category:
    category = st.selectbox("Category", categories(store), key="rankings_page.category")
    concept = category_concept(category_contrast(store, sae, category), count).assign(sae=sae)
    st.caption(
        "Score = (mean text activation in the category - mean outside) x AUROC of the text "
        "activation, one vs rest; from the store's per-category tables."
    )
    if concept.empty:
        st.info(f"No feature of {sae} fires more on {category} texts than on the others.")
    else:
        feature_table(concept, [*concept.columns.drop("sae")], **FORMATS)
        st.altair_chart(
            feature_bar_chart(concept, "concept_score", "concept score", {"auroc": "AUROC"}),
            width="stretch",
        )

with from_examples:
    with st.form("concept_examples"):
        text = st.text_area(
            f"Examples, one per line (at most {MAX_EXAMPLES} lines of {MAX_EXAMPLE_CHARS} "
            "characters)",
            max_chars=max_text_chars(MAX_EXAMPLES * (MAX_EXAMPLE_CHARS + 1)),
            height=160,
            key="rankings_page.examples_text",
        )
        if st.form_submit_button("Find features"):
            st.session_state[EXAMPLES_KEY] = text
    if EXAMPLES_KEY in st.session_state:
        try:
            lines = parse_examples(st.session_state[EXAMPLES_KEY])
            loaded = current_source()
            d_sae = int(saes.loc[sae, "d_sae"])
            if not any(h.name == sae and h.sae.cfg.d_sae == d_sae for h in loaded.saes):
                raise SourceError(
                    f"The loaded source has no SAE {sae!r} with {d_sae} features: load the "
                    "store's source to run typed examples."
                )
            acts, n_tokens = stack_examples([cache.typed_text(loaded, sae, t) for t in lines])
            found = example_concept(acts, n_tokens, frequency, count).assign(sae=sae)
        except ExplorerError as error:
            st.error(str(error))
        else:
            st.caption(
                f"{len(lines)} examples, {n_tokens} tokens. Score = mean activation per token "
                "on the examples x ln(that mean / the corpus mean per token)."
            )
            if found.empty:
                st.info("No feature fires more on these examples than on the corpus.")
            else:
                feature_table(found, [*found.columns.drop("sae")], **FORMATS)
                st.altair_chart(
                    feature_bar_chart(found, "concept_score", "concept score", {"lift": "lift"}),
                    width="stretch",
                )
