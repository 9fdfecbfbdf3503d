"""Session state shared across pages: which source and which store the user explores.

Owns the sidebar's source and store pickers and the keys they keep in `st.session_state`;
pages get the loaded source and the open store through `current_source()` and
`current_store()` and never touch the keys directly. Errors become `st.error` messages.
In the public demo mode (`explorer.settings`) the pickers are shown disabled and both
functions use the deployment's source and store whatever the session holds; pages ask
`public_demo()` to switch off what a visitor must not do (saving labels or runs) and
`live_limits()` for the bounds of its corpus runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from explorer.errors import ExplorerError, StoreError, markdown_escaped, quoted
from explorer.settings import LiveLimits
from explorer.sources.source import LoadedSource, Source
from explorer.store.reader import Store, is_store_file, unusable_store_message
from explorer.ui.resources import (
    DemoBuild,
    app_settings,
    demo_build_of,
    demo_store_outdated,
    loaded_source,
    open_store,
    start_demo_build,
)

SOURCE_KEY = "source_spec"
STORE_KEY = "store_path"
DEMO_CHECKED_KEY = "demo_store_checked"  # (path, spec) whose demo store is known current


def sidebar() -> None:
    """Sidebar controls for the source and the store (spec strings as `Source.parse`);
    shown disabled, on the deployment's source and store, in the public demo."""
    try:
        settings = app_settings()
    except ExplorerError as error:
        _stop_with(error)
        raise
    # Each box's value is the session's choice, passed as the widget's default rather than
    # preset in `st.session_state`: Streamlit sends a preset value to the browser once, and a
    # box still loading its code when the next run starts (a click within a second of opening
    # a link) then mounts with the default and sends it back, so a blank default emptied the
    # session's source and store on the next page.
    source, store = _session_choice()
    locked = " Fixed in this public demo." if settings.public_demo else ""
    with st.sidebar:
        st.text_input(
            "Source",
            value=source,
            key=None if settings.public_demo else SOURCE_KEY,  # the demo's is no choice
            max_chars=500,
            disabled=settings.public_demo,
            help=(
                "`demo` (offline bundle), `demo:tiny`, "
                "`registry:RELEASE:SAE_ID[,SAE_ID]` or `saelens:RELEASE:SAE_ID[,SAE_ID]` "
                "(needs the network or a warm cache), "
                "`local:FOLDER[,FOLDER][@MODEL]`, `topk:CHECKPOINT@MODEL#HOOK`." + locked
            ),
        )
        st.text_input(
            "Store",
            value=store,
            key=None if settings.public_demo else STORE_KEY,
            max_chars=500,
            disabled=settings.public_demo,
            help="A DuckDB file built with `python -m explorer build`. "
            "The demo store is built on first run; at another path that does not exist, a "
            "button offers to build it there." + locked,
        )
        if settings.public_demo:
            st.caption("Public demo: the source and store are fixed; nothing is saved.")


def public_demo() -> bool:
    """Whether the app runs as the public demo (a bad setting stops the page with a message)."""
    try:
        return app_settings().public_demo
    except ExplorerError as error:
        _stop_with(error)
        raise


def _confirm_demo_build(path: str) -> None:
    """Return when the demo store may be built at `path`: the deployment's own store path, or
    a path typed in the sidebar once the user asks for it with the button; else stop the
    page with a message (a dangling symlink is refused like any unusable path)."""
    if Path(path).absolute() == Path(app_settings().store).absolute():
        return
    if os.path.lexists(path) and not os.path.exists(path):
        _stop_with(StoreError(unusable_store_message(path)))
    what = "is of an older version" if os.path.exists(path) else "does not exist"
    st.warning(
        f"The store {quoted(path, 200)} {markdown_escaped(what)}. Build the demo store there "
        "(about 25 MB, a "
        "minute or two), or give another store path in the sidebar."
    )
    if not st.button("Build the demo store here", type="primary"):
        st.stop()


def known_stores() -> dict[str, str]:
    """Stores a page may open beside the session's, by file name: the `*.duckdb` regular
    files in the cache folder (`EXPLORER_CACHE_DIR`) and the deployment's store. A link
    names one of these, never a path."""
    settings = app_settings()
    candidates = [settings.store, *sorted(map(str, settings.cache_dir.glob("*.duckdb")))]
    found: dict[str, str] = {}
    for candidate in candidates:
        path = Path(candidate).absolute()
        if is_store_file(path):
            found.setdefault(path.name, str(path))
    return found


def live_limits() -> LiveLimits | None:
    """The bounds of one corpus run (the public demo's), or None."""
    return app_settings().live_limits


def _session_choice() -> tuple[str, str]:
    """(source spec, store path) of this session; the deployment's own in the public demo."""
    settings = app_settings()
    if settings.public_demo:
        return settings.source, settings.store
    return (
        st.session_state.get(SOURCE_KEY, settings.source),
        st.session_state.get(STORE_KEY, settings.store),
    )


def _stop_with(error: ExplorerError) -> None:
    st.error(str(error))
    st.stop()


def current_source() -> LoadedSource:
    """The loaded source, or stop the page with the loader's message (never a traceback)."""
    try:
        spec, _ = _session_choice()
        return loaded_source(spec)
    except ExplorerError as error:
        _stop_with(error)
        raise


def current_store() -> Store:
    """The open store; the demo store is built on first run with a progress bar."""
    try:
        spec, path = _session_choice()
        checked = st.session_state.get(DEMO_CHECKED_KEY) == (path, spec)
        if not checked and Source.parse(spec).kind == "demo" and demo_store_outdated(path):
            _follow(_demo_build(path, spec))
        st.session_state[DEMO_CHECKED_KEY] = (path, spec)
        return open_store(path)
    except ExplorerError as error:
        _stop_with(error)
        raise


def _demo_build(path: str, spec: str) -> DemoBuild:
    """The build of the demo store at `path` this session follows: the one running (started
    by any session), else a new one (after the button for a path typed in the sidebar); a
    failed one shows its message with a button to try again."""
    build = demo_build_of(path)
    if build is not None and not build.finished:
        return build
    if build is not None and build.error is not None:
        failed = st.empty()
        with failed.container():
            st.error(build.error)
            retry = st.button("Try the build again", type="primary")
        if not retry:
            st.stop()
        failed.empty()
    else:
        _confirm_demo_build(path)
    return start_demo_build(path, spec)


def _follow(build: DemoBuild) -> None:
    """Show the build's progress until it has written the store; a failure reruns the page,
    which then shows its message. The build runs in a server thread: closing the tab stops
    only this display, and the next visit follows the same build."""
    bar = st.progress(build.fraction, text=build.text)
    while not build.wait(0.25):
        bar.progress(build.fraction, text=build.text)
    bar.empty()
    if build.error is not None:
        st.rerun()
