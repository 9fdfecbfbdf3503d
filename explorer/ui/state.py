"""Session state shared across pages: which source the user explores.

Owns the sidebar's source picker and the keys it keeps in `st.session_state`; pages read
the chosen source through `current_source()` and never touch the keys directly.
"""

from __future__ import annotations

import streamlit as st

from explorer.errors import ExplorerError
from explorer.sources import LoadedSource
from explorer.ui.resources import DEFAULT_SOURCE_SPEC, loaded_source

SOURCE_KEY = "source_spec"


def source_sidebar() -> None:
    """Sidebar control for the source; the spec strings are those of `Source.parse`."""
    st.session_state.setdefault(SOURCE_KEY, DEFAULT_SOURCE_SPEC)
    with st.sidebar:
        st.text_input(
            "Source",
            key=SOURCE_KEY,
            max_chars=500,
            help=(
                "`demo` (offline bundle), `demo:tiny`, "
                "`registry:RELEASE:SAE_ID[,SAE_ID]` (needs the network or a warm cache), "
                "`local:FOLDER[,FOLDER][@MODEL]`, `topk:CHECKPOINT@MODEL#HOOK`."
            ),
        )


def current_source() -> LoadedSource:
    """The loaded source, or stop the page with the loader's message (never a traceback)."""
    spec = st.session_state.get(SOURCE_KEY, DEFAULT_SOURCE_SPEC)
    try:
        return loaded_source(spec)
    except ExplorerError as error:
        st.error(str(error))
        st.stop()
        raise  # unreachable: st.stop() raises
