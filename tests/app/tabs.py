"""A page's lazy tabs in an AppTest: one tab runs at a time, named by its widget key in the
session state (`st.tabs(..., key=..., bind="query-params")`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
from streamlit.testing.v1 import AppTest


def open_tab(at: AppTest, tab: str, key: str = "tab") -> AppTest:
    """Open one of the page's tabs and run the page."""
    at.session_state[key] = tab
    return at.run()


def table_on_tabs(
    at: AppTest, tabs: Sequence[str], matches: Callable[[pd.DataFrame], bool], key: str = "tab"
):
    """The one dataframe element whose value `matches`, on the tab open now or else on the
    first of `tabs` that shows it (which stays open)."""
    for tab in (None, *tabs):
        if tab is not None:
            open_tab(at, tab, key)
        found = [frame for frame in at.dataframe if matches(frame.value)]
        if found:
            (table,) = found
            return table
    raise AssertionError("no tab shows such a table")
