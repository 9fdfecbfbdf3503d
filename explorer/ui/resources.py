"""Process-wide cached resources of the app: the settings, the loaded source and the store.

Everything here is a `st.cache_resource` singleton shared by every session, so callers must
never mutate what they get (no `.to()`, no hooks added, no config changes). The store is
opened read-only once per path and reopened when a rebuild replaced the file (the old one is
dropped, never closed under a running query). One source is
loaded at a time (`max_entries=1`): loading another evicts the first once the new one is in
(both are in memory while it loads), and before a load its memory is estimated
(`explorer.sources.memory`), shown in the spinner and refused with a `SourceError` if it would not
fit. The deployment's settings come from `explorer.settings` (environment variables) plus a
TOML boolean `EXPLORER_PUBLIC_DEMO` in `.streamlit/secrets.toml`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from explorer import settings
from explorer.errors import StoreError, markdown_escaped, quoted
from explorer.settings import Settings
from explorer.sources.source import LoadedSource, Source, load_source
from explorer.store.reader import Store
from explorer.store.schema import SCHEMA_VERSION, stored_schema_version

# torch and the model libraries are imported by the functions that load a source or build
# the demo store, never at import: store pages do without them (tests/unit/test_imports.py).
if TYPE_CHECKING:
    from explorer.sources.memory import MemoryEstimate

DEMO_CORPUS = "bundled+arithmetic"


def app_settings() -> Settings:
    """The deployment's settings: environment variables, and `EXPLORER_PUBLIC_DEMO = true`
    from `.streamlit/secrets.toml` (Streamlit copies only string and number secrets into the
    environment). A bad value raises `SettingsError`."""
    environ = dict(os.environ)
    if settings.PUBLIC_DEMO_VAR not in environ and st.secrets.load_if_toml_exists():
        secret = st.secrets.get(settings.PUBLIC_DEMO_VAR)
        if isinstance(secret, bool):
            environ[settings.PUBLIC_DEMO_VAR] = str(secret)
    return settings.from_environ(environ)


def default_source_spec() -> str:
    """The source a new session starts on: `EXPLORER_SOURCE`, else the demo bundle."""
    return app_settings().source


def default_store_path() -> str:
    """The store a new session starts on: `EXPLORER_STORE`, else the demo store."""
    return app_settings().store


_IMPORT_LOCK = threading.Lock()


def import_model_libraries() -> None:
    """Import sae-lens and transformer-lens, one thread at a time (the entry calls this
    before a page runs).

    The two packages import each other (sae_lens -> transformer_lens.hook_points -> ... ->
    transformer_lens/__init__ -> ... -> hook_points). Two sessions importing them for the
    first time at once from different ends (the feature page reaches transformer_lens, the
    ablation lab sae_lens) deadlock on Python's per-module import locks, which Python breaks
    by handing one of them a half-initialised module: an ImportError on that page. Once both
    are imported this is a lock and two dictionary lookups."""
    with _IMPORT_LOCK:
        import sae_lens  # noqa: F401
        import transformer_lens  # noqa: F401


@st.cache_data(max_entries=16, ttl=600, show_spinner=False)
def memory_estimate(spec: str) -> MemoryEstimate:
    """What loading `spec` would take, from configs on disk (see `explorer.sources.memory`)."""
    from explorer.sources.memory import estimate_source

    return estimate_source(Source.parse(spec))


def loaded_source(spec: str) -> LoadedSource:
    """The source, loaded once per process; the spinner shows its estimated memory."""
    source = Source.parse(spec)
    with st.spinner(f"Loading `{source.spec()}`: {memory_estimate(spec).describe()}…"):
        return _loaded_source(source.spec())


@st.cache_resource(show_spinner=False, max_entries=1)
def _loaded_source(spec: str) -> LoadedSource:
    """Load a source once per process; `max_entries=1` keeps one model in memory. A source
    whose estimated memory does not fit is refused before anything is loaded."""
    import torch

    from explorer.sources.memory import check_fits

    check_fits(memory_estimate(spec))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return load_source(Source.parse(spec))


class _StoreSlot:
    """The open Store of one path, swapped for a fresh one when a rebuild replaced the file.

    A store file changes only by a rebuild's `os.replace` (user data goes to its sidecar), so
    `changed_on_disk` means a new file. The old Store is dropped, never closed: scripts of
    other sessions may still be running queries on it; its connection closes when the last
    of them lets go of it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.store: Store | None = None

    def get(self) -> Store:
        with self.lock:
            if self.store is None or self.store.changed_on_disk():
                self.store = Store.open(self.path)
            return self.store


@st.cache_resource(max_entries=16)
def _store_slot(path: str) -> _StoreSlot:
    # bounded: paths come from users; an evicted slot's Store stays usable by sessions that
    # still hold it and its connection closes when the last reference goes
    return _StoreSlot(path)


@st.cache_resource
def _build_lock() -> threading.Lock:
    return threading.Lock()


StoreKey = tuple[str, tuple[int, ...]]


def store_key(store: Store) -> StoreKey:
    """Cache key of a store's content: its path, and the identity of the file this Store has
    open (a rebuild makes a new one) with its user data's version (a saved label or run
    changes it), so no page reads an old cache entry."""
    return str(store.path), (*store.identity, *store.user_data_version())


def open_store(path: str) -> Store:
    return _store_slot(str(Path(path).absolute())).get()


def demo_store_outdated(path: str) -> bool:
    """True when there is no store at `path` or it has another schema version; a path the
    system refuses (e.g. a name too long) is a StoreError."""
    try:
        return not Path(path).exists() or stored_schema_version(path) not in (
            SCHEMA_VERSION,
            None,
        )
    except OSError as exc:
        raise StoreError(
            f"Cannot use {quoted(path)} as a store path: {markdown_escaped(exc.strerror or exc)}."
        ) from exc


def build_missing_demo_store(path: str, spec: str, progress) -> bool:
    """Build the demo store at `path` if it is missing or of another schema version (one
    `Store.open` refuses; labels and interventions stay in the store's sidecar); True when
    a build ran. A file that is not a readable store is left for `Store.open` to report.

    One build at a time per process: a second session waits, then finds the file.
    """
    from explorer.analysis.precompute import derive
    from explorer.build.single import build_store

    with _build_lock():
        if not demo_store_outdated(path):
            return False
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        build_store(loaded_source(spec), DEMO_CORPUS, path, progress=progress, derive=derive)
        return True
