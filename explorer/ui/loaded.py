"""The loaded model's copy of a store's SAE, as the pages that need its weights ask for it.

Owns the one message a page shows when the loaded source lacks the store's SAE (same name
and number of features, `LoadedSource.handle_for`): views that need the decoder or a live
encode say so and point to the sidebar, instead of each page wording it.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from explorer.errors import quoted
from explorer.sources.source import LoadedSource, SaeHandle
from explorer.store.reader import Store


def missing_sae_message(store: Store, sae: str, needs: str) -> str:
    ref = store.sae(sae)
    return (
        f"The loaded source has no SAE {quoted(sae)} with {ref.d_sae:,} features, and {needs}: "
        "load the store's source (sidebar) to use it."
    )


def loaded_sae(
    loaded: LoadedSource, store: Store, sae: str, needs: str, where: Any = st
) -> SaeHandle | None:
    """The loaded handle of the store's SAE `sae`, or None after an `info` in `where` (a
    column or container; the page by default) saying that `needs` it."""
    handle = loaded.handle_for(store.sae(sae))
    if handle is None:
        where.info(missing_sae_message(store, sae, needs))
    return handle
