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

import atexit
import gc
import logging
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from explorer import settings
from explorer.build.stages import ANALYSES, STAGES
from explorer.corpus import DEMO_CORPUS
from explorer.errors import ExplorerError, StoreError, markdown_escaped, quoted
from explorer.settings import Settings
from explorer.sources.source import LoadedSource, Source, load_source
from explorer.store.reader import Store
from explorer.store.schema import SCHEMA_VERSION, stored_schema_version

# torch and the model libraries are imported by the functions that load a source or build
# the demo store, never at import: store pages do without them (tests/unit/test_imports.py).
if TYPE_CHECKING:
    from explorer.sources.memory import MemoryEstimate
    from explorer.store.derived import Derived

logger = logging.getLogger(__name__)


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
_FROZEN: set[str] = set()  # what `freeze_long_lived` has frozen


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

        freeze_long_lived("model libraries")


def freeze_long_lived(what: str) -> None:
    """Take every object alive now (the libraries just imported: `what`) out of the cyclic
    garbage collector's passes, once per `what` (`gc.collect`, then `gc.freeze`).

    With DuckDB, pandas and pyarrow imported, and torch, transformer-lens and sae-lens after a
    model page, the collector's full passes walked their millions of objects during script
    runs: every warm page navigation took ~0.2 s longer than a bare Streamlit app's (0.33 s
    against 0.12 s with pages cut to their title; 0.06 s frozen; bench/README.md). Objects
    made later are collected as before; `_release_stores` unfreezes them at exit."""
    if what in _FROZEN:
        return
    _FROZEN.add(what)
    gc.collect()
    gc.freeze()


@st.cache_data(max_entries=16, ttl=600, show_spinner=False)
def memory_estimate(spec: str) -> MemoryEstimate:
    """What loading `spec` would take, from configs on disk (see `explorer.sources.memory`)."""
    from explorer.sources.memory import estimate_source

    return estimate_source(Source.parse(spec))


def loaded_source(spec: str) -> LoadedSource:
    """The source, loaded once per process; the spinner shows its estimated memory. The
    model libraries are imported first under their lock: pages that import none of them
    (the entry's STORE_PAGES) reach them here, when the user asks for live work."""
    import_model_libraries()
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


@atexit.register
def _release_stores() -> None:
    """Let go of the open stores when the server stops, before Python tears modules down.

    DuckDB's Python module is a nanobind extension: at shutdown nanobind lists every one of
    its objects still alive (~30 lines of `nanobind: leaked ... instances`: the connection,
    the 27 `duckdb.sqltypes` constants, its types and functions). Two references outlived
    the module teardown: the cached store slots, and the page's own `store` global in the
    `__main__` module Streamlit runs each page in and keeps after the run. Dropped here,
    the connection closes normally and nothing is reported (tests/e2e/test_server_stop.py).
    Every other `st.cache_resource` object goes too (a kept analysis may hold what a store
    read returned), and a garbage collection frees their cycles while DuckDB is still whole.
    """
    gc.unfreeze()  # the frozen objects too are collected at exit (`freeze_long_lived`)
    _store_slot.clear()
    page = sys.modules.get("__main__")
    for name, value in list(vars(page).items() if page is not None else ()):
        if isinstance(value, Store) or type(value).__module__.startswith(("duckdb", "_duckdb")):
            delattr(page, name)
    st.cache_resource.clear()
    gc.collect()


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


def _failed(what: str, error: Exception) -> str:
    """`what`, the unexpected error's type and message (escaped), for the page."""
    return f"{what}: {markdown_escaped(type(error).__name__)}: {markdown_escaped(error)}."


class DemoBuild:
    """One build of the demo store at `path`, run by a server thread: it finishes whatever
    happens to the session that started it (a closed tab no longer throws it away), and any
    session asking for the same path meanwhile follows this one instead of starting another.

    `fraction` and `text` tell where it is, for a progress bar that ends only when the store
    is written: the forward passes (with their rate and time left), then the reconstruction
    quality, the logit lens, the writing and the analyses the store keeps
    (`explorer.build.stages.STAGES`), which the bar used to leave out: it sat at "0 s left"
    while they ran.
    `error` is the message of a failed build, shown until a user retries.

    The atlas is laid out after the store is written (`atlas_pending`): its UMAP fits took
    61-86 s of a ~110 s first run, and every other page can open without it. The thread then
    adds it to the store (`add_derived`, a copy swapped in; open sessions reopen the new file)
    and the atlas page waits for it rather than computing a second one.
    """

    # Share of the bar the forward passes fill; the steps after them fill the rest in turn.
    FORWARD_SHARE = 0.8

    def __init__(self, path: str) -> None:
        self.path = path
        self.fraction = 0.0
        self.text = "Building the demo store (first run): loading the model…"
        self.error: str | None = None
        self.atlas_error: str | None = None
        self._done = threading.Event()
        self._atlas_done = threading.Event()

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    @property
    def atlas_pending(self) -> bool:
        """The store is written and the atlas is still being laid out for it."""
        return self._done.is_set() and not self._atlas_done.is_set()

    def wait_for_atlas(self, timeout: float | None = None) -> bool:
        """True once the atlas step has ended (kept, or failed with `atlas_error`)."""
        return self._atlas_done.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """True once the build has finished (written the store or failed)."""
        return self._done.wait(timeout)

    def forward(self, done: int, total: int, seconds: float) -> None:
        rate = done / max(seconds, 1e-9)
        left = (total - done) / max(rate, 1e-9)
        self.fraction = self.FORWARD_SHARE * min(done / max(total, 1), 1.0)
        self.text = (
            f"Building the demo store (step 1 of {1 + len(STAGES)}, forward passes): "
            f"{done:,}/{total:,} tokens, {rate:,.0f} tokens/s, about {left:,.0f} s left "
            "for this step"
        )

    def stage(self, name: str, done: int, total: int) -> None:
        index = STAGES.index(name)
        share = (1 - self.FORWARD_SHARE) / len(STAGES)
        self.fraction = self.FORWARD_SHARE + share * (index + done / max(total, 1))
        parts = f" ({done + 1} of {total})" if total > 1 else ""
        self.text = (
            f"Building the demo store (step {index + 2} of {1 + len(STAGES)}, {name}{parts})…"
        )

    def run(self, loaded: LoadedSource) -> None:
        """The thread's body: build, record a failure's message, mark it finished, then keep
        the atlas."""
        from explorer.analysis.precompute import derive
        from explorer.build.single import build_store

        atlas_decoders: dict[str, Any] = {}  # the build's SAE decoders, for the atlas

        def reported_derive(path: Path, decoders: Any = None) -> list[Derived]:
            self.stage(ANALYSES, 0, 1)
            atlas_decoders.update(decoders or {})
            return derive(path)  # the atlas comes after the store is written

        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            build_store(
                loaded,
                DEMO_CORPUS,
                self.path,
                progress=self.forward,
                derive=reported_derive,
                stage=self.stage,
            )
            self.fraction, self.text = 1.0, "The demo store is built."
        except ExplorerError as error:
            self.error = str(error)
        except Exception as error:  # noqa: BLE001 - a failed build must reach the page
            logger.exception("The demo store build at %s failed", self.path)
            self.error = (
                _failed("The demo store build failed", error)
                + " Try again, or build it with `python -m explorer build demo "
                "bundled+arithmetic`."
            )
        finally:
            self._done.set()
        try:
            if self.error is None and atlas_decoders:
                self._keep_atlas(atlas_decoders)
        finally:
            self._atlas_done.set()

    def _keep_atlas(self, decoders: dict[str, Any]) -> None:
        from explorer.analysis.atlas import atlas_entry
        from explorer.store.writer import add_derived

        try:
            add_derived(self.path, [atlas_entry(decoders)])
        except ExplorerError as error:
            self.atlas_error = str(error)
        except Exception as error:  # noqa: BLE001 - the atlas page says what went wrong
            logger.exception("Laying out the atlas of %s failed", self.path)
            self.atlas_error = _failed("Laying out the atlas failed", error)


class _DemoBuilds:
    """The demo builds of this process by store path, and how many were started."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_path: dict[str, DemoBuild] = {}
        self.started = 0


@st.cache_resource
def demo_builds() -> _DemoBuilds:
    return _DemoBuilds()


def demo_build_of(path: str) -> DemoBuild | None:
    """The running or last build of the demo store at `path` in this process, if any."""
    return demo_builds().by_path.get(str(Path(path).absolute()))


def start_demo_build(path: str, spec: str) -> DemoBuild:
    """Start building the demo store at `path` in a server thread, or join the build of that
    path already running; one build runs at a time across sessions (the source is loaded
    first, in this session, with its memory shown)."""
    loaded = loaded_source(spec)
    builds = demo_builds()
    key = str(Path(path).absolute())
    with builds.lock:
        running = builds.by_path.get(key)
        if running is not None and not running.finished:
            return running
        build = builds.by_path[key] = DemoBuild(path)
        builds.started += 1
        threading.Thread(
            target=_run_in_slot, args=(build, loaded), name="demo-store-build", daemon=True
        ).start()
        return build


_BUILD_SLOT = threading.Lock()  # one build's memory at a time, whatever its path


def _run_in_slot(build: DemoBuild, loaded: LoadedSource) -> None:
    if not _BUILD_SLOT.acquire(blocking=False):
        build.text = "Waiting for another store build of this server to finish…"
        _BUILD_SLOT.acquire()
    try:
        build.run(loaded)
    finally:
        _BUILD_SLOT.release()


def build_missing_demo_store(path: str, spec: str) -> bool:
    """Build the demo store at `path` if it is missing or of another schema version (one
    `Store.open` refuses; labels and interventions stay in the store's sidecar) and wait for
    it; True when a build ran. A file that is not a readable store is left for `Store.open`
    to report; a failed build raises its message as a StoreError."""
    if not demo_store_outdated(path):
        return False
    build = start_demo_build(path, spec)
    build.wait()
    if build.error is not None:
        raise StoreError(build.error)
    return True


# The entry imports this module first: Streamlit, DuckDB, pandas and pyarrow are in by now.
freeze_long_lived("store libraries")
