"""Cached analysis results of the app's pages, shared by every session.

Owns the `st.cache_data` wrappers around analyses that read a whole table of the store
(specialist measures over every feature x category). Entries are keyed on the store's path
and modification time, so a rebuilt store is never answered from an old entry, and bounded
by `max_entries` and `ttl`. Pages call these instead of the analysis functions directly.
"""

from __future__ import annotations

import streamlit as st

from explorer.analysis.specialists import Specialists, SpecialistSettings, load_specialists
from explorer.store import Store
from explorer.ui.resources import StoreKey, open_store, store_key


@st.cache_data(max_entries=16, ttl=3600, show_spinner="Computing the specialist measures…")
def _specialists(key: StoreKey, settings: SpecialistSettings) -> Specialists:
    path, _ = key  # the modification time is only part of the key
    return load_specialists(open_store(path), settings)


def specialists(store: Store, settings: SpecialistSettings) -> Specialists:
    """`load_specialists(store, settings)`, cached per store file and settings."""
    return _specialists(store_key(store), settings)
