"""Cached reads and computations of the feature and token pages (`st.cache_data`).

Owns the cache keys: a store is keyed by its path and the file's modification time, so a
rebuild or a saved label (both rewrite the file) starts fresh entries; a loaded source is
keyed by its spec. The `Store` and `LoadedSource` objects themselves are passed with a
leading underscore (not hashed). Every cache is bounded (`max_entries`, `ttl`). Labels are
not cached: they are read on each run so a saved label shows at once. Typed text is encoded
under a live-model slot (`explorer.ui.limits`) and bounded to the deployment's length.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from explorer.analysis.feature_data import (
    CategoryView,
    FeatureData,
    category_view,
    load_feature_data,
)
from explorer.analysis.histograms import value_histogram
from explorer.analysis.text_activations import TextActivations, stored_text_activations
from explorer.charts.feature import token_label
from explorer.sources.source import LoadedSource
from explorer.store.queries import feature as feature_queries
from explorer.store.queries import lens as lens_queries
from explorer.store.queries.feature import CoFiringLevel
from explorer.store.reader import Store
from explorer.ui.limits import live_model_slot, max_text_chars
from explorer.ui.resources import StoreKey, store_key

# The functions that run the model import torch and the model code when called: a page that
# only reads the store never imports them (tests/unit/test_imports.py).
if TYPE_CHECKING:
    from explorer.analysis.lens_checks import ConsistencySettings

TTL_S = 3600


def source_key(loaded: LoadedSource) -> str:
    return loaded.source.spec()


@st.cache_data(max_entries=64, ttl=TTL_S, show_spinner=False)
def _feature_data(
    _store: Store, key: StoreKey, sae: str, feature: int, before: int, after: int
) -> FeatureData:
    return load_feature_data(_store, sae, feature, before, after)


def feature_data(store: Store, sae: str, feature: int, before: int, after: int) -> FeatureData:
    return _feature_data(store, store_key(store), sae, feature, before, after)


@st.cache_data(max_entries=16, ttl=TTL_S, show_spinner=False)
def _live_features(_store: Store, key: StoreKey, sae: str) -> np.ndarray:
    return feature_queries.live_features(_store, sae)


def live_features(store: Store, sae: str) -> np.ndarray:
    return _live_features(store, store_key(store), sae)


@st.cache_data(max_entries=128, ttl=TTL_S, show_spinner=False)
def _co_firing(
    _store: Store,
    key: StoreKey,
    sae: str,
    feature: int,
    k: int,
    level: CoFiringLevel,
    other_sae: str | None,
) -> pd.DataFrame:
    return feature_queries.co_firing(_store, sae, feature, k, level, other_sae)


def co_firing(
    store: Store,
    sae: str,
    feature: int,
    k: int,
    level: CoFiringLevel = "token",
    other_sae: str | None = None,
) -> pd.DataFrame:
    return _co_firing(store, store_key(store), sae, feature, k, level, other_sae)


@st.cache_data(max_entries=128, ttl=TTL_S, show_spinner=False)
def _decoder_neighbours(_loaded: LoadedSource, key: str, sae: str, feature: int, k: int):
    from explorer.analysis.similarity import decoder_neighbours

    decoders = {handle.name: handle.sae.W_dec.detach() for handle in _loaded.saes}
    return decoder_neighbours(decoders, sae, [feature], k).drop(columns="query")


def decoder_neighbours_of(loaded: LoadedSource, sae: str, feature: int, k: int) -> pd.DataFrame:
    """sae, feature, cosine, rank of the k nearest decoder directions in every SAE."""
    return _decoder_neighbours(loaded, source_key(loaded), sae, feature, k)


@st.cache_data(max_entries=64, ttl=TTL_S, show_spinner=False)
def _logit_histogram(
    _loaded: LoadedSource, key: str, sae: str, feature: int, bins: int
) -> pd.DataFrame:
    from explorer.analysis.logit_lens import feature_logits

    return value_histogram(feature_logits(_loaded, sae, feature), bins)


def logit_histogram(loaded: LoadedSource, sae: str, feature: int, bins: int = 60) -> pd.DataFrame:
    return _logit_histogram(loaded, source_key(loaded), sae, feature, bins)


@st.cache_data(max_entries=64, ttl=TTL_S, show_spinner=False)
def _stored_text(_store: Store, key: StoreKey, text_id: int, sae: str) -> TextActivations:
    return stored_text_activations(_store, text_id, sae)


def stored_text(store: Store, text_id: int, sae: str) -> TextActivations:
    return _stored_text(store, store_key(store), text_id, sae)


@st.cache_data(max_entries=32, ttl=TTL_S, show_spinner=False)
def _typed_text(
    _loaded: LoadedSource, key: str, sae: str, text: str, max_chars: int
) -> TextActivations:
    from explorer.live.text import encode_text

    with live_model_slot():
        return encode_text(_loaded, sae, text, max_chars)


def typed_text(loaded: LoadedSource, sae: str, text: str) -> TextActivations:
    """Typed text encoded live (under a live-model slot; bounded to the deployment's length);
    a text seen before comes from the cache without a slot."""
    return _typed_text(loaded, source_key(loaded), sae, text, max_text_chars())


@st.cache_data(max_entries=64, ttl=TTL_S, show_spinner=False)
def _category_view(
    _store: Store, key: StoreKey, sae: str, feature: int, category: str, n_texts: int
) -> CategoryView:
    return category_view(_store, sae, feature, category, n_texts)


def category_view_of(
    store: Store, sae: str, feature: int, category: str, n_texts: int
) -> CategoryView:
    return _category_view(store, store_key(store), sae, feature, category, n_texts)


@st.cache_data(max_entries=64, ttl=TTL_S, show_spinner=False)
def _feature_scales(
    _store: Store, key: StoreKey, sae: str, features: tuple[int, ...]
) -> dict[int, float]:
    return feature_queries.feature_scales(_store, sae, list(features))


def feature_scales(store: Store, sae: str, features: list[int]) -> dict[int, float]:
    return _feature_scales(store, store_key(store), sae, tuple(features))


@st.cache_data(max_entries=16, ttl=TTL_S, show_spinner=False)
def _lens_overview(_store: Store, key: StoreKey, sae: str, n_tokens: int) -> pd.DataFrame:
    table = lens_queries.lens_overview(_store, sae, n_tokens)
    for column in ("promoted", "suppressed"):
        table[column] = [
            [] if tokens is None else [token_label(t) for t in tokens] for tokens in table[column]
        ]
    return table.assign(sae=sae)


def lens_overview(store: Store, sae: str, n_tokens: int) -> pd.DataFrame:
    """Every feature of `sae` with its top promoted / suppressed tokens (display labels)."""
    return _lens_overview(store, store_key(store), sae, n_tokens)


@st.cache_data(max_entries=16, ttl=TTL_S, show_spinner="Ranking every feature's next tokens…")
def _lens_consistency(
    _store: Store,
    _loaded: LoadedSource,
    keys: tuple[StoreKey, str],
    sae: str,
    settings: ConsistencySettings,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    from explorer.analysis.lens_checks import consistency
    from explorer.sources.unembed import unembed_directions

    examples = lens_queries.top_examples_with_next(_store, sae)
    unembed = partial(unembed_directions, _loaded.model)
    return examples, consistency(examples, _loaded.sae(sae).sae.W_dec, unembed, settings)


def lens_consistency(
    store: Store, loaded: LoadedSource, sae: str, settings: ConsistencySettings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The top examples with their next tokens, and every feature's consistency check."""
    return _lens_consistency(store, loaded, (store_key(store), source_key(loaded)), sae, settings)
