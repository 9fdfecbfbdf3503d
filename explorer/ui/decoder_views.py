"""The compare page's sections over decoder directions: feature redundancy within each SAE
and the matching of any two SAEs, of one store or of two (consistency score, distribution,
one-to-one matching, heatmap of the top features' matches).

Owns those sections and their caches (keyed on the loaded source's spec and the SAEs). The
store holds no decoder rows, so everything here needs the loaded source's copy of a store's
SAEs (`LoadedSource.handle_for`: same name and size); a second store's SAEs are matched only
when the loaded source holds them, and the page says so otherwise. Importing this module
imports torch, which the compare page does only when the user asks for these sections.
Definitions: docs/methods.md#redundancy, #matching and #one-to-one-matching.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from explorer.analysis import decoder_metrics
from explorer.analysis.field_metrics import (
    MATCH_THRESHOLD,
    MATCH_THRESHOLDS,
    STORE_SEPARATOR,
    match_summary,
    matching_comparison,
    share_column,
)
from explorer.charts.field_metrics import match_heatmap_chart, max_cosine_histogram
from explorer.errors import ExplorerError, markdown_escaped, quoted
from explorer.methods_doc import methods_link
from explorer.number_style import percent_text
from explorer.sources.source import LoadedSource, SaeHandle
from explorer.store.reader import Store
from explorer.ui import cached
from explorer.ui.links import feature_chart, show_chart
from explorer.ui.state import current_source
from explorer.ui.tables import percent_column, plain_table

NUMBER = st.column_config.NumberColumn
COUNT = "localized"  # a count with the reader's thousands separator ("1,024"); printf has none
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


def redundancy(store: Store) -> pd.DataFrame | None:
    """`decoder_metrics.redundancy` of the store's SAEs in the loaded source, cached; None
    when the source holds none of them."""
    loaded, handles = store_handles(store)
    return _redundancy(handles, _key(loaded, handles)) if handles else None


@st.cache_data(max_entries=32, ttl=3600, show_spinner="Matching the two SAEs' decoders…")
def _matching(_pair: list[SaeHandle], key: tuple[str, tuple[str, ...]]) -> pd.DataFrame:
    first, second = (handle.sae.W_dec.detach() for handle in _pair)
    return decoder_metrics.sae_matching(first, second)


@st.cache_data(max_entries=32, ttl=3600, show_spinner="Matching the decoders one to one…")
def _one_to_one(
    _pair: list[SaeHandle],
    key: tuple[str, tuple[str, ...]],
    features_a: tuple[int, ...],
    features_b: tuple[int, ...],
) -> pd.DataFrame:
    first, second = (handle.sae.W_dec.detach() for handle in _pair)
    return decoder_metrics.one_to_one_matching(first, second, features_a, features_b)


@dataclass(frozen=True)
class MatchSide:
    """One SAE the matching section offers: its label in the pickers (the SAE's name, after
    its store's label when two stores are compared), its store and the loaded copy."""

    label: str
    store: Store
    handle: SaeHandle


def match_sides(stores: Mapping[str, Store]) -> tuple[LoadedSource, list[MatchSide], list[str]]:
    """The SAEs of `stores` (label -> store; one store: label "") the loaded source holds,
    in store then build order, and a Markdown sentence for each further store whose SAEs
    cannot be matched (the source holds none) or are taken by name from another source."""
    loaded = current_source()
    spec = loaded.source.spec()
    sides: list[MatchSide] = []
    notes: list[str] = []
    for position, (label, store) in enumerate(stores.items()):
        _, handles = store_handles(store)
        prefix = f"{label}{STORE_SEPARATOR}" if label else ""
        sides += [MatchSide(prefix + handle.name, store, handle) for handle in handles]
        if position == 0:
            continue
        built = store.meta().get("source", "")
        if not handles:
            names = ", ".join(store.saes()["sae"])
            notes.append(
                f"Store {markdown_escaped(label)} cannot be matched: the loaded source "
                f"{quoted(spec)} holds none of its SAEs ({markdown_escaped(names)}; built from "
                f"{quoted(built)}), and the store keeps no decoder directions. Load a source "
                "that holds both stores' SAEs to match across them."
            )
        elif built != spec:
            notes.append(
                f"Store {markdown_escaped(label)} was built from {quoted(built)}, not the loaded "
                f"source {quoted(spec)}: {len(handles)} of its SAEs are taken from the loaded "
                "source by name and size."
            )
    return loaded, sides, notes


def show_redundancy(tables: Mapping[str, pd.DataFrame | None]) -> None:
    """The distribution of each SAE's max decoder cosine within the SAE, one chart per store
    of `tables` (label -> `redundancy` rows, None where the loaded source holds none of the
    store's SAEs; one store: label ""), side by side."""
    found = {label: table for label, table in tables.items() if table is not None}
    if not found:
        st.info("The loaded source holds none of this store's SAEs: no redundancy to show.")
        return
    st.markdown(
        "**Feature redundancy**: each feature's largest decoder cosine with another feature of "
        f"the same SAE (near 0: no two directions alike; >= {MATCH_THRESHOLD}: near-duplicates). "
        + methods_link("redundancy")
    )
    for column, (label, table) in zip(st.columns(len(found)), found.items(), strict=True):
        if label:
            column.caption(markdown_escaped(label))
        show_chart(max_cosine_histogram(table, "max cosine to another feature of the SAE"), column)


def show_matching(stores: Mapping[str, Store]) -> None:
    """Two SAEs of `stores` (label -> store, the explored one first; one store: label ""),
    the consistency score of the first against the second, the one-to-one matching beside
    it, the distribution of best-match cosines and the heatmap of the most frequent
    features' matches."""
    loaded, sides, notes = match_sides(stores)
    st.subheader("Cross-SAE matching", help=MATCHING_HELP)
    st.caption(methods_link("matching") + " · " + methods_link("one-to-one-matching"))
    for note in notes:
        st.info(note)
    labels = [side.label for side in sides]
    if len(labels) < 2:
        st.info("The loaded source holds fewer than two of these SAEs: nothing to match.")
        return
    first_column, second_column = st.columns(2)
    first = first_column.selectbox("SAE", labels, index=0, key="compare_page.match_a")
    second = second_column.selectbox("against", labels, index=1, key="compare_page.match_b")
    pair = [sides[labels.index(first)], sides[labels.index(second)]]
    handles = [side.handle for side in pair]
    try:
        matching = _matching(handles, _key(loaded, handles))
    except ExplorerError as error:  # e.g. two widths
        st.warning(str(error))
        return
    summary = match_summary(matching.assign(sae=first), "max_cosine").iloc[0]
    numbers = {
        "consistency (mean max cosine)": f"{summary['mean_max_cosine']:.3f}",
        "median max cosine": f"{summary['median_max_cosine']:.3f}",
        f"share matched (>= {MATCH_THRESHOLD})": percent_text(summary["share_max_cosine_above"]),
    }
    for column, (name, value) in zip(st.columns(3), numbers.items(), strict=True):
        column.metric(name, value)
    show_one_to_one(pair, loaded, matching)
    left, right = st.columns(2)
    histogram = max_cosine_histogram(matching.assign(sae=first), f"best-match cosine in {second}")
    show_chart(histogram, left)
    show_heatmap(pair, matching, next(iter(stores.values())), right)


def side_frequency(side: MatchSide) -> pd.DataFrame:
    """The frequency rows (`Store.frequency_table`) of one side's SAE in its store."""
    frequency = side.store.frequency_table()
    return frequency[frequency["sae"] == side.handle.name]


def show_one_to_one(pair: list[MatchSide], loaded: LoadedSource, matching: pd.DataFrame) -> None:
    """The Hungarian assignment of the pair's decoder directions beside the best match: one
    row per measure, with the bound on the features it takes stated."""
    handles = [side.handle for side in pair]
    frequencies = [side_frequency(side) for side in pair]
    features = [decoder_metrics.one_to_one_features(rows) for rows in frequencies]
    pairs = _one_to_one(handles, _key(loaded, handles), *map(tuple, features))
    sizes = [handle.sae.cfg.d_sae for handle in handles]
    subset = any(len(taken) < size for taken, size in zip(features, sizes, strict=True))
    limit = decoder_metrics.MAX_ONE_TO_ONE
    taken = " and ".join(
        f"{len(chosen):,} of {size:,} features of {side.label}"
        for chosen, size, side in zip(features, sizes, pair, strict=True)
    )
    st.markdown(
        "**One-to-one matching**: each feature of the first SAE paired with at most one of "
        "the second, the pairs chosen to maximise the sum of their decoder cosines (the "
        "Hungarian algorithm). Where the best match lets several features share one "
        "counterpart, one-to-one does not, so it is lower when directions are duplicated. "
        + methods_link("one-to-one-matching")
    )
    st.caption(
        f"It needs the whole cosine matrix, so it takes every feature of an SAE up to "
        f"{limit:,} and the {limit:,} most frequent beyond that: here "
        f"{markdown_escaped(taken)}."
    )
    shares = {
        share_column(threshold): percent_column(f"share >= {threshold}")
        for threshold in MATCH_THRESHOLDS
    }
    plain_table(
        matching_comparison(matching, pairs, subset),
        pairs=NUMBER("pairs", format=COUNT),
        mean_cosine=NUMBER("mean cosine", format="%.3f"),
        median_cosine=NUMBER("median cosine", format="%.3f"),
        **shares,
    )


def show_heatmap(
    pair: list[MatchSide], matching: pd.DataFrame, explored: Store, column: DeltaGenerator
) -> None:
    """The cosines of the first SAE's most frequent live features with their best matches,
    each side described from its own store; a cell opens the match in the `explored` store
    (feature links name an SAE of the explored store)."""
    first, second = pair
    top = side_frequency(first)
    top = top[top["n_active_tokens"] > 0]
    features = top.nsmallest(decoder_metrics.HEATMAP_FEATURES, "freq_rank")["feature"].tolist()
    heatmap = decoder_metrics.match_heatmap(
        first.handle.sae.W_dec.detach(), second.handle.sae.W_dec.detach(), features, matching
    )
    described = heatmap.assign(
        description_a=cached.feature_descriptions(
            first.store, heatmap.assign(sae=first.handle.name), "feature_a"
        ),
        description_b=cached.feature_descriptions(
            second.store, heatmap.assign(sae=second.handle.name), "feature_b"
        ),
    )
    where = "" if second.store is explored else f" in this store's {second.handle.name}"
    column.caption(
        f"Rows: the {len(features)} most frequent features of {markdown_escaped(first.label)}; "
        f"columns: their best matches in {markdown_escaped(second.label)}; a cell opens the "
        f"match{markdown_escaped(where)}."
    )
    chart = match_heatmap_chart(described, first.handle.name, second.handle.name)
    feature_chart(chart, column)
