"""Token taxonomy: which tokens each feature fires on, and what kind of feature that makes it."""

import math

import streamlit as st

from explorer.analysis.enrichment import (
    DEFAULT_MIN_SUPPORT,
    LABELS,
    MONOSEMANTIC_LABELS,
    SHUFFLES,
    TaxonomySettings,
    baseline_table,
    corpus_tokens,
    label_distribution,
    taxonomy_summary,
)
from explorer.charts.marks import thin_marks
from explorer.charts.taxonomy import (
    enrichment_scatter,
    label_distribution_chart,
)
from explorer.errors import markdown_escaped
from explorer.methods_doc import methods_link
from explorer.ui import cached
from explorer.ui.links import feature_chart, show_chart
from explorer.ui.params import url_int, url_selectbox
from explorer.ui.second_store import second_store_path
from explorer.ui.state import current_store, public_demo
from explorer.ui.tables import plain_table
from explorer.ui.taxonomy_views import show_top_features, stores_side_by_side

P_THRESHOLDS = ["0.05", "0.01", "0.001", "0.0001", "1e-06"]
SHUFFLED = ("observed", "shuffled (mean)", "shuffled (max)")


def formatted(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


st.title("Token taxonomy")
store = current_store()
saes = store.saes()
sae = url_selectbox("SAE", "sae", saes["sae"].tolist(), default=saes["sae"].iloc[-1])
settings = TaxonomySettings(
    min_support=url_int(
        "Minimum support (active tokens)", "support", DEFAULT_MIN_SUPPORT, 1, 100_000
    ),
    p_threshold=float(url_selectbox("p threshold (chi-squared)", "p", P_THRESHOLDS, "0.01")),
)
label = url_selectbox("Show label", "label", ["all", *LABELS], default="all")
rows = url_int("Features in the table", "rows", 200, 10, 5000)
demo = public_demo()  # no other stores in the public demo
other_path = second_store_path(store)

features = cached.taxonomy(store, sae, settings)
summary = taxonomy_summary(features)
n_total = corpus_tokens(store)
st.caption(
    f"A token is significant for a feature when its 2 x 2 chi-squared p < {settings.p_threshold:g}"
    f", at least {settings.min_support} of the feature's active tokens are this token and it is "
    "enriched (its share among the feature's active tokens over its share of the corpus > 1). "
    "A feature's label comes from the kinds of its five most active significant tokens; it is "
    "monosemantic when one kind holds at least 75% of their activity "
    f"({', '.join(MONOSEMANTIC_LABELS)}), polysemantic when none does, unlabelled without a "
    "significant token. " + methods_link("labels-and-monosemanticity-one-definition")
)
columns = st.columns(4)
columns[0].metric("features analysed", f"{summary['n_features']:,}")
columns[1].metric("monosemantic rate", formatted(summary["monosemantic_rate"], ".1%"))
columns[2].metric("number features", formatted(summary["number_share"], ".1%"))
columns[3].metric("max enrichment", formatted(summary["max_enrichment"], ",.1f"))
if not summary["n_features"]:
    st.warning(
        f"No feature of {markdown_escaped(sae)} fires on this store's corpus: nothing to classify."
    )

# one section runs at a time (its name is in the URL, `tab`): the four drew three charts and
# three tables on every run
labels_tab, enrichment_tab, top_tab, stores_tab = st.tabs(
    [
        "Labels against shuffled tokens",
        "Enrichment against activity",
        "Top features by enrichment",
        "Stores side by side",
    ],
    key="tab",
    bind="query-params",
)
if labels_tab.open:
    with labels_tab:
        st.caption(
            f"The solid bars are the monosemantic labels: {summary['n_monosemantic']:,} of "
            f"{summary['n_features']:,} live features, the rate above. Faded: polysemantic "
            f"{summary['n_polysemantic']:,}, unlabelled {summary['n_unlabelled']:,}."
        )
        show_chart(label_distribution_chart(label_distribution(features)))
        st.subheader("Against shuffled token labels")
        baseline = cached.taxonomy_baseline(store, sae, settings)
        st.caption(
            "The same taxonomy with the corpus's token labels permuted across its token "
            "positions: each feature keeps its number of active tokens, and which tokens they "
            "are is a seeded draw without replacement from the corpus's token counts (the "
            "permutation's exact distribution for one feature). Mean and largest value over "
            f"{SHUFFLES} shuffles (seeds 0-{SHUFFLES - 1})."
        )
        three_decimals = {
            name: st.column_config.NumberColumn(name, format="%.3f") for name in SHUFFLED
        }
        plain_table(baseline_table(baseline), **three_decimals)
if enrichment_tab.open:
    with enrichment_tab:
        st.caption(
            f"Dashed: the ceiling N / active tokens (N = {n_total:,} corpus tokens), reached "
            "when every active token of a feature is one token found nowhere else. A token's "
            "own ceiling is one over its share of the corpus (in the tooltip)."
        )
        drawn, marks_note = thin_marks(features)
        described, _ = cached.with_descriptions(store, drawn, ["feature"])  # for the tooltips
        feature_chart(enrichment_scatter(described, n_total))
        if marks_note:
            st.caption(marks_note)
if top_tab.open:
    with top_tab:
        show_top_features(
            features if label == "all" else features[features["label"] == label], rows
        )
if stores_tab.open:
    with stores_tab:
        if demo:
            st.caption("Comparing with a second store is switched off in the public demo.")
        stores_side_by_side(store, other_path, settings)
