"""Deep links between pages: every table or chart that names a feature links to its page.

Owns the URL scheme `feature?sae=NAME&feature=ID` (the feature page's `url_path` is
"feature"); the scheme itself is `explorer.charts.feature_href`, shared with the charts. Also
the ablation lab's `ablation?sae=NAME&features=ID`, from a feature page to intervene on it.

Owns the one link behaviour too: a click on a feature in a table (`linked_dataframe`) or a
chart (`feature_chart`) opens its page at once, in the same tab and session, with the shared
sidebar's URL parameters kept (`open_feature`). A plain link would need two clicks in a
table (the first selects the cell) and open a new tab, or reload the tab from a chart.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Sequence
from functools import partial
from typing import Any, NoReturn
from urllib.parse import urlencode

import pandas as pd
import streamlit as st
from pandas.io.formats.style import Styler
from streamlit.delta_generator import DeltaGenerator

from explorer.analysis.specialists import SpecialistSettings
from explorer.charts import click_to_open, feature_href, feature_of_href

FEATURE_PAGE = "app_pages/feature.py"
# URL parameters of the shared sidebar, kept when a link opens a feature's page.
KEPT_PARAMS = tuple(SpecialistSettings.field_names())
Target = tuple[str, int] | None  # (sae, feature) a cell or point opens, or nothing
VALIDATE_CHARTS = "EXPLORER_VALIDATE_CHARTS"  # "1": `show_chart` validates each spec (tests)
ROW_NUMBER = "#"  # the index a linked table shows before a first column that opens features


def feature_url(sae: str, feature: int) -> str:
    """Relative URL of one feature's page, usable in LinkColumn, markdown and altair href."""
    return feature_href(sae, feature)


def ablation_url(sae: str, feature: int) -> str:
    """Relative URL of the ablation lab set to one feature."""
    return f"ablation?{urlencode({'sae': sae, 'features': int(feature)})}"


def open_feature(sae: str, feature: int) -> NoReturn:
    """Switch this tab to the feature's page, keeping the shared sidebar's URL parameters."""
    kept = {name: st.query_params.get_all(name) for name in KEPT_PARAMS if name in st.query_params}
    st.switch_page(FEATURE_PAGE, query_params={**kept, "sae": sae, "feature": str(int(feature))})


def cell_target(cells: Sequence[Any], targets: dict[str, Sequence[Target]]) -> Target:
    """The feature a single-cell selection (`[(row, column)]`, rows as given) opens."""
    if len(cells) != 1:
        return None
    row, column = cells[0]
    column_targets = targets.get(column)
    if column_targets is None or not 0 <= int(row) < len(column_targets):
        return None
    return column_targets[int(row)]


def point_target(selection: dict[str, Any], names: Sequence[str]) -> Target:
    """The feature a chart's click selection (`click_to_open` names) opens."""
    for name in names:
        for point in selection.get(name) or []:
            target = feature_of_href(point.get("href", ""))
            if target is not None:
                return target
    return None


def _follow(target: Target) -> None:
    if target is not None:
        open_feature(*target)


def _follow_cell(key: str, targets: dict[str, Sequence[Target]]) -> None:
    _follow(cell_target(st.session_state[key].selection.get("cells", []), targets))


def _follow_point(key: str, names: Sequence[str]) -> None:
    _follow(point_target(st.session_state[key].selection, names))


def _widget_key(kind: str, *content: Any) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for part in content:
        digest.update(part if isinstance(part, bytes) else repr(part).encode())
        digest.update(b"\0")
    return f"{kind}_{digest.hexdigest()}"


def numbered(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its rows numbered from 1 as its index (`ROW_NUMBER`)."""
    return frame.set_axis(pd.RangeIndex(1, len(frame) + 1, name=ROW_NUMBER), axis="index")


def linked_dataframe(
    shown: pd.DataFrame | Styler,
    targets: dict[str, Sequence[Target]],
    column_config: dict[str, Any],
    place: DeltaGenerator | None = None,
    placeholder: str | None = None,
) -> None:
    """`st.dataframe` of `shown` (a frame or its Styler, `placeholder` in cells with no
    value) where one click on a cell of a `targets` column opens the feature its row names
    there (`targets[column][row]`, None for no feature). A table whose first column is such
    a column comes `numbered` and shows its row numbers first: on a touch screen, Streamlit's
    grid answers a tap on a column header (a sort) by also selecting the first column's top
    cell, which would open that row's feature; a row number there opens nothing. Other
    tables show no index."""
    frame = shown.data if isinstance(shown, Styler) else shown
    first_opens = len(frame.columns) > 0 and frame.columns[0] in targets
    assert not first_opens or frame.index.name == ROW_NUMBER, "number its rows (`numbered`)"
    key = _widget_key("feature_table", list(frame.columns), len(frame), targets)
    (place or st).dataframe(
        shown,
        hide_index=frame.index.name != ROW_NUMBER,
        column_config={"_index": st.column_config.NumberColumn(ROW_NUMBER), **column_config},
        placeholder=placeholder,
        on_select=partial(_follow_cell, key, targets),
        selection_mode="single-cell",
        key=key,
    )


def show_chart(chart: Any, place: DeltaGenerator | None = None, **options: Any) -> Any:
    """`st.altair_chart(chart, width="stretch", **options)`, the one way a page draws a
    chart, without Altair's JSON-schema validation of the whole spec on every run (20-80 ms
    of a warm chart-heavy page, `bench/README.md`): the charts are built by the code, not the
    user, and the tests draw every page with `VALIDATE_CHARTS` set, which validates each spec
    as Streamlit would."""
    if os.environ.get(VALIDATE_CHARTS) != "1":
        chart = chart.copy(deep=False)  # the caller's chart keeps its own `to_dict`
        object.__setattr__(chart, "to_dict", partial(chart.to_dict, validate=False))
    return (place or st).altair_chart(chart, width="stretch", **options)


def feature_chart(chart: Any, place: DeltaGenerator | None = None) -> None:
    """`st.altair_chart` (full width) where one click on a mark with an `href` opens that
    feature's page (`click_to_open`); a chart naming no feature is shown as it is."""
    clickable, names = click_to_open(chart)
    if not names:
        show_chart(chart, place)
        return
    # The key follows the chart's content, read from its pickle: its JSON converted every
    # row of its data to a dict first (a quarter of a warm Frequency run at 4,096 points).
    key = _widget_key("feature_chart", pickle.dumps(clickable, protocol=5))
    show_chart(
        clickable,
        place,
        on_select=partial(_follow_point, key, names),
        selection_mode=names,
        key=key,
    )
