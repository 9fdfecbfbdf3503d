"""Limits on live model work: how much runs at once and how long typed text may be.

Owns one process-wide semaphore (`st.cache_resource`, so every session shares it) with
`Settings.live_slots` slots, and `live_model_slot()`, the context manager every live forward
of the pages runs under: typed text on the token, search and rankings pages (through
`explorer.ui.feature_cache.typed_text`) and the ablation lab's text, corpus and re-runs. A run
that cannot get a slot within `LIVE_WAIT_S` seconds shows `BUSY_MESSAGE` as a warning and
stops the page's script, so nothing runs. Outside the public demo there is no limit. Reads
of the store and matrix products of cached weights (logit lens, decoder neighbours) are not
live model work and take no slot. `max_text_chars` is the typed-text bound of the widgets
(smaller in the public demo).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from explorer.analysis.text_activations import MAX_TEXT_CHARS
from explorer.settings import LIVE_WAIT_S
from explorer.ui.resources import app_settings

BUSY_MESSAGE = "The model is busy with other visitors' requests; try again in a moment."


@st.cache_resource
def live_slots(count: int) -> threading.BoundedSemaphore:
    """The process's semaphore of `count` live-model slots (one per distinct count)."""
    return threading.BoundedSemaphore(count)


@contextmanager
def live_model_slot() -> Iterator[None]:
    """Hold a live-model slot while the body runs; busy: warn and stop the script."""
    count = app_settings().live_slots
    if count is None:
        yield
        return
    slots = live_slots(count)
    if not slots.acquire(timeout=LIVE_WAIT_S):
        st.warning(BUSY_MESSAGE, icon=":material/hourglass_top:")
        st.stop()
    try:
        yield
    finally:
        slots.release()


def max_text_chars(default: int = MAX_TEXT_CHARS) -> int:
    """The longest typed text a widget accepts: `default`, at most 500 in the public demo."""
    return app_settings().text_chars(default)
