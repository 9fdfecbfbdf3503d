"""Process-wide cached resources of the app: the loaded model + SAEs of a source.

Everything here is a `st.cache_resource` singleton shared by every session, so callers must
never mutate what they get (no `.to()`, no hooks added, no config changes).
"""

from __future__ import annotations

import os

import streamlit as st
import torch

from explorer.sources import LoadedSource, Source, load_source

DEFAULT_SOURCE_SPEC = os.environ.get("EXPLORER_SOURCE", "demo")


@st.cache_resource(show_spinner="Loading the model and its SAEs…", max_entries=1)
def loaded_source(spec: str) -> LoadedSource:
    """Load a source once per process; `max_entries=1` keeps one model in memory."""
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return load_source(Source.parse(spec))
