"""The sidebar's choice of a second store to put beside the session's, shared by every page
that compares two stores (token taxonomy, compare SAEs).

Owns the picker (one of the known stores, by file name, bound to the URL parameter
`compare`: a link names a known store, never a path) and opening the choice, with a message
instead of a traceback when the file cannot be read as a store. In the public demo there is
no picker and no second store. What a page does with the second store is its own business.
"""

from __future__ import annotations

import streamlit as st

from explorer.errors import ExplorerError
from explorer.store.reader import Store
from explorer.ui.params import url_selectbox
from explorer.ui.resources import open_store
from explorer.ui.state import known_stores, public_demo

NO_STORE = "none"  # the option for no second store (store names end in .duckdb)


def second_store_path(store: Store) -> str | None:
    """The path of the known store picked in the sidebar (URL `compare`), or None for none
    and in the public demo. An unknown name in the link gets the link warning and none."""
    if public_demo():
        return None
    others = {name: path for name, path in known_stores().items() if path != str(store.path)}
    name = url_selectbox(
        "Second store (optional)",
        "compare",
        [NO_STORE, *others],
        NO_STORE,
        help="A store in the cache folder, by file name, shown beside this one.",
    )
    return others.get(name)


def open_second_store(path: str | None) -> Store | None:
    """The store at `path` (None for none), or None after an error message."""
    if path is None:
        return None
    try:
        return open_store(path)
    except ExplorerError as error:
        st.error(f"Second store: {error} The comparison shows this store only.")
        return None


def second_store(store: Store) -> Store | None:
    """The second store picked in the sidebar and opened (`second_store_path`), or None."""
    return open_second_store(second_store_path(store))


def store_label(store: Store, letter: str) -> str:
    """How a comparison names a store: its letter and file name ("A: demo.duckdb")."""
    return f"{letter}: {store.path.name}"
