"""Views of the feature atlas page: the map's table, the map, and the box selection's list.

Owns what joins the UMAP coordinates (the map the store keeps, else `explorer.ui.cached.atlas`
from the loaded source's decoders) to what a reader needs beside each point (description,
its kind and score, token frequency, specialist category), and how the page shows the map
with its counts and the features a box selection covers, exportable as CSV. The layout itself is
`explorer.analysis.atlas` and `explorer.charts.atlas`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from explorer.analysis.atlas import AtlasMarks, atlas_marks, features_in_box, kept_atlas
from explorer.analysis.specialists import SpecialistSettings
from explorer.charts import click_to_open
from explorer.charts.atlas import BOX, COLOURS, ColourBy, atlas_chart
from explorer.errors import csv_safe
from explorer.store.reader import Store
from explorer.ui import cached
from explorer.ui.links import open_feature, point_target, show_chart
from explorer.ui.loaded import loaded_sae
from explorer.ui.resources import StoreKey, demo_build_of, store_key
from explorer.ui.state import current_source
from explorer.ui.tables import feature_table

ALL_SAES = "all SAEs together"
MAX_POINTS = 5000  # points drawn; beyond, a seeded sample (the grid cells count every feature)
BINS = 60
SELECTION_COLUMNS = ["sae", "feature", "description", "kind", "token_freq", "f1"]


@dataclass(frozen=True)
class AtlasView:
    """One map as the page shows it: `table` (`atlas_table`), the `marks` drawn, and the
    clickable `chart` with its click selections' names (`click_to_open`). Shared by every
    session (never modified)."""

    table: pd.DataFrame
    marks: AtlasMarks
    chart: Any
    clicks: list[str]


@st.cache_resource(max_entries=16, ttl=3600, show_spinner=False)
def _kept_coordinates(
    path: str, identity: tuple[int, int], names: tuple[str, ...], _store: Store
) -> pd.DataFrame | None:
    # once per store file (a rebuild, the first-run build's map included, opens a new one)
    return kept_atlas(_store, list(names))


def atlas_coordinates_of(store: Store, names: list[str]) -> pd.DataFrame | None:
    """sae, feature, x, y of the map of `names`: the one the store keeps
    (`atlas.kept_atlas`, read once per store file), else laid out from the loaded source's
    decoders (`cached.atlas`; loads the source). None after a message when the loaded source
    lacks one of the SAEs."""
    kept = _kept_coordinates(str(store.path), store.identity, tuple(names), store)
    if kept is not None:
        return kept
    build = demo_build_of(str(store.path))
    if build is not None and build.atlas_pending:  # the first-run build lays it out now
        with st.spinner("The first-run build is laying out the map (about a minute)…"):
            build.wait_for_atlas()
        if build.atlas_error is None:
            st.rerun()  # the store now keeps it
        st.warning(build.atlas_error)
    loaded = current_source()
    handles = [loaded_sae(loaded, store, name, "the atlas needs its decoder") for name in names]
    if any(handle is None for handle in handles):
        return None
    return cached.atlas(loaded, handles)


def atlas_view(
    store: Store,
    scope: str,
    by: ColourBy,
    specialist_settings: SpecialistSettings | None = None,
) -> AtlasView | None:
    """The map of the SAE `scope` (or of every SAE, `ALL_SAES`) coloured `by`: made once per
    store content (`store_key`: a saved label changes a description), scope, colouring and
    specialist settings, and shared, since its table and chart took most of a warm run (the
    kept map's read, the joins, Altair's layer and click selections). None after a message
    when the map cannot be made (`atlas_coordinates_of`)."""
    names = store.saes()["sae"].tolist() if scope == ALL_SAES else [scope]
    coordinates = atlas_coordinates_of(store, names)
    if coordinates is None:
        return None
    settings = (specialist_settings or SpecialistSettings()) if by == "category" else None
    return _atlas_view(store_key(store), tuple(names), by, settings, store, coordinates)


@st.cache_resource(max_entries=8, ttl=3600, show_spinner=False)
def _atlas_view(
    key: StoreKey,
    names: tuple[str, ...],
    by: ColourBy,
    settings: SpecialistSettings | None,
    _store: Store,
    _coordinates: pd.DataFrame,
) -> AtlasView:
    # `_coordinates` follow from the key: the store's kept map, else the source's layout of
    # the same SAEs (seeded)
    table = atlas_table(_store, list(names), _coordinates, by, settings)
    marks = atlas_marks(table, max_points=MAX_POINTS, bins=BINS)
    cells = marks.cells if marks.sampled else marks.cells.iloc[:0]
    chart, clicks = click_to_open(atlas_chart(marks.points, cells, by))
    return AtlasView(table, marks, chart, clicks)


def atlas_table(
    store: Store,
    names: list[str],
    coordinates: pd.DataFrame,
    by: ColourBy,
    specialist_settings: SpecialistSettings | None = None,
) -> pd.DataFrame:
    """sae, feature, x, y (`coordinates` of the SAEs `names`) with each feature's
    description, kind, token frequency, description score (f1, when the store's activations
    are few enough to score on a page view, `cached.MAX_SCAN_ROWS_ON_VIEW`) and, colouring by
    category, its specialist category."""
    rows = int(store.frequency_table()["n_active_tokens"].sum())
    scored = rows <= cached.MAX_SCAN_ROWS_ON_VIEW
    described = pd.concat(
        [cached.descriptions(store, name, scored=scored).assign(sae=name) for name in names],
        ignore_index=True,
    )
    columns = ["sae", "feature", "shown", "kind", "token_freq", *(["f1"] if scored else [])]
    table = coordinates.merge(
        described[columns].rename(columns={"shown": "description"}), on=["sae", "feature"]
    )
    if by == "category":
        specialists = cached.specialists(store, specialist_settings or SpecialistSettings())
        categories = specialists.features[["sae", "feature", "specialist_category"]]
        table = table.merge(categories, on=["sae", "feature"], how="left")
    return table


def show_atlas(view: AtlasView, by: ColourBy) -> pd.DataFrame:
    """The map of `view` (`atlas_view`) coloured `by`, with how many features its marks stand
    for; returns the features inside the user's box selection (every one, drawn or not)."""
    atlas, marks = view.table, view.marks
    drawn = (
        f"{len(marks.points):,} points stand for a seeded random sample of the "
        f"{marks.n_features:,} features; the {len(marks.cells):,} grey cells of a {BINS} x {BINS} "
        "grid count every feature"
        if marks.sampled
        else f"{marks.n_features:,} points, one per feature"
    )
    st.caption(
        drawn + f". Colour: {COLOURS[by]}; size: token frequency. Click a point to open its "
        "feature; drag a box to list the features inside it, drawn or not (double-click "
        "clears it)."
    )
    if by == "score" and "f1" not in atlas:
        st.info(
            "Description scores are not computed on a page view for a store this large "
            f"(more than {cached.MAX_SCAN_ROWS_ON_VIEW:,} activation rows): every point is "
            "'not scored'. The Compare page scores every SAE on request."
        )
    event = show_chart(
        view.chart,
        on_select="rerun",
        selection_mode=[*view.clicks, BOX],
        key="atlas_map",
    )
    clicked = point_target(event.selection, view.clicks) if event else None
    if clicked is not None:
        open_feature(*clicked)
    box = event.selection.get(BOX) if event else None
    if not box or "x" not in box or "y" not in box:
        return atlas.iloc[:0]
    return features_in_box(atlas, tuple(box["x"]), tuple(box["y"]))


def show_selection(selected: pd.DataFrame, scope: str) -> None:
    """The features of a box selection with their descriptions and links, and a CSV file."""
    if selected.empty:
        st.info("Drag a box on the map to list the features inside it here.")
        return
    columns = [column for column in SELECTION_COLUMNS if column in selected]
    st.markdown(f"**{len(selected):,} features in the box**")
    feature_table(selected, columns)
    st.download_button(
        "Download the selection (CSV)",
        csv_safe(selected[[*columns, "x", "y"]]).to_csv(index=False),
        file_name=f"atlas_selection_{re.sub(r'[^A-Za-z0-9._-]+', '_', scope)}.csv",
        mime="text/csv",
    )
