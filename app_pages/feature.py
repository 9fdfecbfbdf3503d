"""Feature dashboard: what one feature responds to, what it promotes, and what it resembles.

Deep-linkable as `feature?sae=NAME&feature=ID`; the widgets and the URL stay in step.
"""

import random
from dataclasses import replace

import streamlit as st

from explorer.analysis.descriptions import corpus_only, score_summary
from explorer.analysis.feature_data import resolve_feature_request
from explorer.charts.feature import (
    CATEGORY_MEASURES,
    activation_histogram_chart,
    category_chart,
    logit_histogram_chart,
    logit_lens_chart,
)
from explorer.charts.tokens_html import Highlight, examples_html
from explorer.errors import ExplorerError, markdown_escaped, quoted
from explorer.store.queries.descriptions import corpus_token_ids
from explorer.store.queries.feature import adjacent_live_feature
from explorer.store.schema import MAX_LABEL_CHARS, MAX_NOTE_CHARS
from explorer.ui import cached
from explorer.ui import feature_cache as cache
from explorer.ui.links import ablation_url, feature_url
from explorer.ui.state import current_source, current_store, public_demo

SAE_KEY, FEATURE_KEY, APPLIED_KEY = "feature_page.sae", "feature_page.feature", "feature_page.url"
LINK = st.column_config.LinkColumn("feature", display_text=r"feature=(\d+)$")
METRIC_HELP = {"frequency rank": "1 = the most frequent of the SAE's {d_sae:,} features."}

store = current_store()
saes = store.saes().set_index("sae", drop=False)
first_live = {
    name: int(live[0]) if len(live := cache.live_features(store, name)) else 0
    for name in saes["sae"]
}

url = (st.query_params.get("sae"), st.query_params.get("feature"))
if st.session_state.get(APPLIED_KEY) != url:
    request = resolve_feature_request(saes, *url, default_features=first_live)
    st.session_state[SAE_KEY], st.session_state[FEATURE_KEY] = request.sae, request.feature
    for problem in request.problems:
        st.warning(problem)


def go_to(feature: int | None) -> None:
    if feature is not None:
        st.session_state[FEATURE_KEY] = int(feature)


with st.sidebar:
    st.subheader("Feature page")
    before = st.slider("Context tokens before", 0, 32, 12)
    after = st.slider("Context tokens after", 0, 16, 4)
    neighbours_k = st.slider("Related features shown", 3, 30, 10)

sae_column, feature_column, *buttons = st.columns([3, 2, 1, 1, 1], vertical_alignment="bottom")
sae = sae_column.selectbox("SAE", list(saes["sae"]), key=SAE_KEY)
d_sae = int(saes.loc[sae, "d_sae"])
if not 0 <= st.session_state[FEATURE_KEY] < d_sae:
    st.session_state[FEATURE_KEY] = first_live[sae]
feature = int(feature_column.number_input("Feature", 0, d_sae - 1, step=1, key=FEATURE_KEY))
previous_live = adjacent_live_feature(store, sae, feature, -1)
next_live = adjacent_live_feature(store, sae, feature, 1)
live = cache.live_features(store, sae)
buttons[0].button(
    "Previous",
    icon=":material/chevron_left:",
    on_click=go_to,
    args=(previous_live,),
    disabled=previous_live is None,
    help="The previous feature that fires in this store",
    width="stretch",
)
buttons[1].button(
    "Next",
    icon=":material/chevron_right:",
    on_click=go_to,
    args=(next_live,),
    disabled=next_live is None,
    help="The next feature that fires in this store",
    width="stretch",
)
buttons[2].button(
    "Random",
    icon=":material/shuffle:",
    on_click=lambda: go_to(random.choice(live.tolist())),
    disabled=len(live) == 0,
    help="A random live feature",
    width="stretch",
)
st.query_params.update({"sae": sae, "feature": str(feature)})
st.session_state[APPLIED_KEY] = (sae, str(feature))

data = cache.feature_data(store, sae, feature, before, after)
labels = store.labels(sae, feature)
st.title(f"{sae} · feature {feature}")
label_line = st.empty()  # filled at the end, so a label saved below shows at once
described = cached.descriptions(store, sae).set_index("feature").loc[feature]
st.caption(
    markdown_escaped(f"Automatic description ({described['kind']}): {described['description']}")
    + "  \n"
    + score_summary(described)
)
link_columns = st.columns([1, 1, 4])
link_columns[0].link_button(
    "Ablate or steer it", ablation_url(sae, feature), icon=":material/science:", width="stretch"
)
if data.neuronpedia_url:
    link_columns[1].link_button("Open on Neuronpedia", data.neuronpedia_url, width="stretch")

stats = data.stats
metrics = {
    "token frequency": f"{stats['token_freq']:.3%}",
    "text frequency": f"{stats['text_freq']:.1%}",
    "frequency rank": f"{int(stats['freq_rank']):,}",
    "max activation": f"{stats['max']:.4g}",
    "mean when active": f"{stats['mean_active']:.4g}",
    "active tokens": f"{int(stats['n_active_tokens']):,}",
}
for column, (name, value) in zip(st.columns(len(metrics)), metrics.items(), strict=True):
    column.metric(name, value, help=METRIC_HELP.get(name, "").format(d_sae=d_sae))

if data.is_dead:
    st.info("This feature never fires on the store's corpus: no examples or histogram to show.")
else:
    left, right = st.columns(2)
    left.subheader("Activation histogram")
    left.altair_chart(activation_histogram_chart(data.histogram, stats["max"]), width="stretch")
    right.subheader("Categories")
    measure = right.selectbox("Measure", list(CATEGORY_MEASURES), format_func=CATEGORY_MEASURES.get)
    right.altair_chart(category_chart(data.categories, measure), width="stretch")

    highlight = Highlight(f"{sae} #{feature}", float(stats["max"]))
    st.subheader("Top activations")
    st.html(examples_html(data.windows, data.top_captions(), highlight))
    st.subheader("Examples across the activation range")
    st.html(examples_html(data.windows, data.quantile_captions(), highlight))

st.subheader("Decoder logit lens")
lens = data.logit_lens
in_corpus = st.toggle(
    "Hide tokens that never occur in the corpus",
    value=True,
    key="feature_page.in_corpus",
    help="Under-trained embeddings of tokens the corpus never holds often top W_dec @ W_U.",
)
if in_corpus:
    lens, n_hidden = corpus_only(lens, corpus_token_ids(store, lens["token_id"].tolist()))
    if n_hidden:
        st.caption(f"{n_hidden} stored tokens that never occur in the corpus are hidden.")
promoted_column, suppressed_column, histogram_column = st.columns(3)
promoted = logit_lens_chart(lens[lens["rank"] > 0], "Promoted tokens")
suppressed = logit_lens_chart(lens[lens["rank"] < 0], "Suppressed tokens")
promoted_column.altair_chart(promoted, width="stretch")
suppressed_column.altair_chart(suppressed, width="stretch")
loaded = current_source()
handle = next((h for h in loaded.saes if h.name == sae and h.sae.cfg.d_sae == d_sae), None)
if handle is None:
    histogram_column.info(
        f"The loaded source has no SAE {sae!r} of this size: load the store's "
        "source to see the logit histogram and decoder neighbours."
    )
else:
    histogram = cache.logit_histogram(loaded, sae, feature)
    chart = logit_histogram_chart(histogram, "All tokens of the vocabulary")
    histogram_column.altair_chart(chart, width="stretch")

st.subheader("Related features")
cosine_column, cofiring_column = st.columns(2)
if handle is not None:
    neighbours = cache.decoder_neighbours_of(loaded, sae, feature, neighbours_k)
    neighbours["page"] = [
        feature_url(s, f) for s, f in zip(neighbours["sae"], neighbours["feature"], strict=True)
    ]
    same = neighbours["sae"] == sae
    others = neighbours[~same].sort_values("cosine", ascending=False).head(neighbours_k)
    for title, rows in [("in this SAE", neighbours[same]), ("in the other SAEs", others)]:
        cosine_column.markdown(f"**Nearest by decoder cosine {title}**")
        cosine_column.dataframe(
            rows[["sae", "page", "cosine"]],
            hide_index=True,
            column_config={"page": LINK, "cosine": st.column_config.NumberColumn(format="%.3f")},
        )
cofiring_column.markdown("**Co-firing features** (Jaccard)")
level = cofiring_column.radio("Co-firing over", ["token", "text"], horizontal=True)
other_sae = cofiring_column.selectbox(
    "Candidates from", list(saes["sae"]), index=list(saes["sae"]).index(sae)
)
cofiring = cache.co_firing(store, sae, feature, neighbours_k, level, other_sae)
cofiring["page"] = [
    feature_url(s, f) for s, f in zip(cofiring["sae"], cofiring["feature"], strict=True)
]
cofiring_column.dataframe(
    cofiring[["sae", "page", "jaccard", "n_both", "n_active"]],
    hide_index=True,
    column_config={"page": LINK, "jaccard": st.column_config.NumberColumn(format="%.3f")},
)

st.subheader("Label and notes")
read_only = public_demo()
if read_only:
    st.caption("Labels are read-only in the public demo: the form is switched off.")
with st.form(f"label.{sae}.{feature}"):
    label = st.text_input("Label", max_chars=MAX_LABEL_CHARS, disabled=read_only)
    note = st.text_area("Notes", max_chars=MAX_NOTE_CHARS, disabled=read_only)
    saved = st.form_submit_button("Save label", disabled=read_only)
if saved and not read_only:
    try:
        store.save_label(sae, feature, label, note)
        labels = store.labels(sae, feature)
        st.success(f"Saved the label {quoted(label.strip(), MAX_LABEL_CHARS)}.")
    except ExplorerError as error:
        st.error(str(error))
st.dataframe(labels[["label", "note", "created_at"]], hide_index=True)
if len(labels):
    label_line.text(f"Label: {labels['label'].iloc[0]}")

st.subheader("Export")
export = replace(data, labels=labels)
csv_column, json_column = st.columns(2)
csv_column.download_button(
    "Examples (CSV)",
    export.to_csv(),
    f"{sae}_{feature}_examples.csv",
    "text/csv",
    on_click="ignore",
)
json_column.download_button(
    "Everything (JSON)",
    export.to_json(),
    f"{sae}_{feature}.json",
    "application/json",
    on_click="ignore",
)
