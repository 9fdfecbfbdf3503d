"""Session state shared across pages: which source and which store the user explores.

Owns the sidebar's source and store pickers and the keys they keep in `st.session_state`;
pages get the loaded source and the open store through `current_source()` and
`current_store()` and never touch the keys directly. Errors become `st.error` messages.
"""

from __future__ import annotations

import streamlit as st

from explorer.errors import ExplorerError
from explorer.sources import LoadedSource, Source
from explorer.store import Store
from explorer.ui.resources import (
    build_missing_demo_store,
    default_source_spec,
    default_store_path,
    demo_store_outdated,
    loaded_source,
    open_store,
)

SOURCE_KEY = "source_spec"
STORE_KEY = "store_path"
DEMO_CHECKED_KEY = "demo_store_checked"  # (path, spec) whose demo store is known current


def sidebar() -> None:
    """Sidebar controls for the source and the store (spec strings as `Source.parse`)."""
    st.session_state.setdefault(SOURCE_KEY, default_source_spec())
    st.session_state.setdefault(STORE_KEY, default_store_path())
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
        st.text_input(
            "Store",
            key=STORE_KEY,
            max_chars=500,
            help="A DuckDB file built with `python -m explorer build`. "
            "The demo store is built on first run.",
        )


def _stop_with(error: ExplorerError) -> None:
    st.error(str(error))
    st.stop()


def current_source() -> LoadedSource:
    """The loaded source, or stop the page with the loader's message (never a traceback)."""
    spec = st.session_state.get(SOURCE_KEY, default_source_spec())
    try:
        return loaded_source(spec)
    except ExplorerError as error:
        _stop_with(error)
        raise


def current_store() -> Store:
    """The open store; the demo store is built on first run with a progress bar."""
    path = st.session_state.get(STORE_KEY, default_store_path())
    spec = st.session_state.get(SOURCE_KEY, default_source_spec())
    try:
        checked = st.session_state.get(DEMO_CHECKED_KEY) == (path, spec)
        if not checked and Source.parse(spec).kind == "demo" and demo_store_outdated(path):
            bar = st.progress(0.0, text="Building the demo store (first run)…")

            def progress(done: int, total: int, seconds: float) -> None:
                rate = done / max(seconds, 1e-9)
                left = (total - done) / max(rate, 1e-9)
                bar.progress(
                    min(done / max(total, 1), 1.0),
                    text=f"Building the demo store: {done:,}/{total:,} tokens, "
                    f"{rate:,.0f} tokens/s, about {left:,.0f} s left",
                )

            build_missing_demo_store(path, spec, progress)
            bar.empty()
        st.session_state[DEMO_CHECKED_KEY] = (path, spec)
        return open_store(path)
    except ExplorerError as error:
        _stop_with(error)
        raise
