"""Feature dashboard: what one feature responds to, what it promotes, and what it resembles.

Deep-linkable as `feature?sae=NAME&feature=ID`; the widgets and the URL stay in step.
"""

import streamlit as st

from explorer.analysis.feature_data import resolve_feature_request
from explorer.errors import markdown_escaped
from explorer.ui import cached, feature_views, guide_views, lineage_views
from explorer.ui import feature_cache as cache
from explorer.ui.params import url_value
from explorer.ui.state import current_source, current_store, public_demo

SAE_KEY, FEATURE_KEY, APPLIED_KEY = "feature_page.sae", "feature_page.feature", "feature_page.url"

store = current_store()
saes = store.saes()
first_live = {
    name: int(live[0]) if len(live := cache.live_features(store, name)) else 0
    for name in saes["sae"]
}

last = st.session_state.get(APPLIED_KEY)  # the feature this session showed last
url = (url_value("sae"), url_value("feature"))
if url == (None, None) and last is not None:
    url = last  # back from another page: the feature shown before
elif url == (None, None) and (pick := guide_views.default_feature(store)):
    url = (pick[0], str(pick[1]))  # a first visit opens on the best explained feature
# Streamlit drops a widget's state on a run that does not draw it (another page's run).
if last != url or FEATURE_KEY not in st.session_state or SAE_KEY not in st.session_state:
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
sae = sae_column.selectbox("SAE", saes["sae"].tolist(), key=SAE_KEY)
d_sae = store.sae(sae).d_sae
if not 0 <= st.session_state[FEATURE_KEY] < d_sae:
    st.session_state[FEATURE_KEY] = first_live[sae]
feature = int(feature_column.number_input("Feature", 0, d_sae - 1, step=1, key=FEATURE_KEY))
live = cache.live_features(store, sae).tolist()
feature_views.move_buttons(buttons, store, sae, feature, live, go_to)
st.query_params.update({"sae": sae, "feature": str(feature)})
st.session_state[APPLIED_KEY] = (sae, str(feature))

data = cache.feature_data(store, sae, feature, before, after)
st.title(f"{markdown_escaped(sae)} · feature {feature}")
label_line = st.empty()  # filled at the end, so a label saved below shows at once
feature_views.show_description(cached.feature_description(store, sae, feature))
feature_views.show_links(data)
feature_views.show_metrics(data, d_sae)
feature_views.show_responses(data)
loaded = current_source()
handle = loaded.handle_for(store.sae(sae))
feature_views.show_logit_lens(store, data, loaded, handle)
# One tab runs at a time (its name is in the URL, `tab`). The first is the light one (HTML):
# the related features' two linked tables, open by default, were a third of a warm visit
# (0.42 -> 0.31 s in a browser, session 11).
range_tab, related_tab, lineage_tab = st.tabs(
    ["Examples across the activation range", "Related features", "Lineage across layers"],
    key="tab",
    bind="query-params",
)
if range_tab.open:
    with range_tab:
        feature_views.show_range_examples(data)
if related_tab.open:
    with related_tab:
        feature_views.show_related(store, loaded, handle, sae, feature, neighbours_k)
if lineage_tab.open:
    with lineage_tab:
        lineage_views.show_lineage(store, loaded, handle, sae, feature, lineage_views.PER_SAE)
labels = feature_views.label_form(store, sae, feature, read_only=public_demo())
if len(labels):
    label_line.text(f"Label: {labels['label'].iloc[0]}")
feature_views.show_exports(data, labels)
