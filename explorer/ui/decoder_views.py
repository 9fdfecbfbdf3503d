"""The compare page's sections over decoder directions: feature redundancy within each SAE
and the matching of any two SAEs (consistency score, distribution, heatmap of the top
features' matches).

Owns those sections and their caches (keyed on the loaded source's spec and the SAEs). The
store holds no decoder rows, so everything here needs the loaded source's copy of the
store's SAEs (`LoadedSource.handle_for`); importing this module imports torch, which the
compare page does only when the user asks for these sections. Definitions:
docs/methods.md#redundancy and docs/methods.md#matching.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer.analysis import decoder_metrics
from explorer.analysis.field_metrics import MATCH_THRESHOLD, match_summary
from explorer.charts.field_metrics import match_heatmap_chart, max_cosine_histogram
from explorer.errors import markdown_escaped
from explorer.methods_doc import methods_link
from explorer.sources.source import LoadedSource, SaeHandle
from explorer.store.reader import Store
from explorer.ui import cached
from explorer.ui.links import feature_chart
from explorer.ui.state import current_source

MATCHING_HELP = (
    "For each feature of the first SAE, the largest cosine of its decoder direction with a "
    "feature of the second. Consistency score: their mean (1 = every direction found again). "
    f"Share matched: cosine >= {MATCH_THRESHOLD}."
)


def store_handles(store: Store) -> tuple[LoadedSource, list[SaeHandle]]:
    """The loaded source and its copies of the store's SAEs (same name and size), in the
    store's order; SAEs the source lacks are left out."""
    loaded = current_source()
    handles = [loaded.handle_for(ref) for ref in map(store.sae, store.saes()["sae"])]
    return loaded, [handle for handle in handles if handle is not None]


def _key(loaded: LoadedSource, handles: list[SaeHandle]) -> tuple[str, tuple[str, ...]]:
    return loaded.source.spec(), tuple(handle.name for handle in handles)


@st.cache_data(max_entries=8, ttl=3600, show_spinner="Comparing every decoder row…")
def _redundancy(_handles: list[SaeHandle], key: tuple[str, tuple[str, ...]]) -> pd.DataFrame:
    return decoder_metrics.redundancy({h.name: h.sae.W_dec.detach() for h in _handles})


def redundancy(store: Store) -> pd.DataFrame:
    """`decoder_metrics.redundancy` of the store's SAEs in the loaded source, cached."""
    loaded, handles = store_handles(store)
    return _redundancy(handles, _key(loaded, handles))


@st.cache_data(max_entries=32, ttl=3600, show_spinner="Matching the two SAEs' decoders…")
def _matching(_pair: list[SaeHandle], key: tuple[str, tuple[str, ...]]) -> pd.DataFrame:
    first, second = (handle.sae.W_dec.detach() for handle in _pair)
    return decoder_metrics.sae_matching(first, second)


def show_redundancy(table: pd.DataFrame) -> None:
    st.markdown(
        "**Feature redundancy**: each feature's largest decoder cosine with another feature of "
        f"the same SAE (near 0: no two directions alike; >= {MATCH_THRESHOLD}: near-duplicates). "
        + methods_link("redundancy")
    )
    st.altair_chart(
        max_cosine_histogram(table, "max cosine to another feature of the SAE"), width="stretch"
    )


def show_matching(store: Store) -> None:
    """Two SAEs, the consistency score of the first against the second, the distribution
    of best-match cosines and the heatmap of the most frequent features' matches."""
    loaded, handles = store_handles(store)
    st.subheader("Cross-SAE matching", help=MATCHING_HELP)
    st.caption(methods_link("matching"))
    names = [handle.name for handle in handles]
    if len(names) < 2:
        st.info("The loaded source holds fewer than two of this store's SAEs: nothing to match.")
        return
    first_column, second_column = st.columns(2)
    first = first_column.selectbox("SAE", names, index=0, key="compare_page.match_a")
    second = second_column.selectbox("against", names, index=1, key="compare_page.match_b")
    pair = [handles[names.index(first)], handles[names.index(second)]]
    matching = _matching(pair, _key(loaded, pair))
    summary = match_summary(matching.assign(sae=first), "max_cosine").iloc[0]
    numbers = {
        "consistency (mean max cosine)": f"{summary['mean_max_cosine']:.3f}",
        "median max cosine": f"{summary['median_max_cosine']:.3f}",
        f"share matched (>= {MATCH_THRESHOLD})": f"{summary['share_max_cosine_above']:.1%}",
    }
    for column, (name, value) in zip(st.columns(3), numbers.items(), strict=True):
        column.metric(name, value)
    left, right = st.columns(2)
    left.altair_chart(
        max_cosine_histogram(matching.assign(sae=first), f"best-match cosine in {second}"),
        width="stretch",
    )
    frequency = store.frequency_table()
    top = frequency[(frequency["sae"] == first) & (frequency["n_active_tokens"] > 0)]
    features = top.nsmallest(decoder_metrics.HEATMAP_FEATURES, "freq_rank")["feature"].tolist()
    heatmap = decoder_metrics.match_heatmap(
        pair[0].sae.W_dec.detach(), pair[1].sae.W_dec.detach(), features, matching
    )
    described = heatmap.assign(
        description_a=cached.feature_descriptions(store, heatmap.assign(sae=first), "feature_a"),
        description_b=cached.feature_descriptions(store, heatmap.assign(sae=second), "feature_b"),
    )
    right.caption(
        f"The {len(features)} most frequent features of {markdown_escaped(first)} and their "
        f"best matches in {markdown_escaped(second)}; a cell opens the match."
    )
    feature_chart(match_heatmap_chart(described, first, second), right)
