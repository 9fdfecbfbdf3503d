"""Cached analysis results of the app's pages, shared by every session.

Owns the `st.cache_data` wrappers around analyses that read a whole table of the store
(specialist measures over every feature x category with their permutation null, token
enrichment of every feature).
Entries are keyed on the store's path and modification time, so a rebuilt store is never
answered from an old entry, and bounded by `max_entries` and `ttl`. Pages call these
instead of the analysis functions directly. The specialists, the largest result (a row per
tested feature x category), are one `st.cache_resource` object every session reads and
none modifies, not a copy per call.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import streamlit as st

from explorer.analysis import field_metrics, guide, lineage, precompute
from explorer.analysis.atlas import DEFAULT_ATLAS, AtlasSettings, atlas_coordinates
from explorer.analysis.controls import ChanceBaseline
from explorer.analysis.descriptions import (
    DescriptionSettings,
    compare_scores,
    described_features,
    with_user_labels,
)
from explorer.analysis.enrichment import TaxonomySettings
from explorer.analysis.frequency import BandTables, FrequencyView
from explorer.analysis.frequency import band_tables as compute_band_tables
from explorer.analysis.frequency import frequency_view as compute_frequency_view
from explorer.analysis.specialists import Specialists, SpecialistSettings, family_names, in_family
from explorer.charts.feature import token_label
from explorer.sources.source import LoadedSource, SaeHandle
from explorer.store.queries.descriptions import lens_tokens_in_corpus
from explorer.store.reader import Store
from explorer.ui.resources import StoreKey, open_store, store_key

DEFAULT_DESCRIPTIONS = DescriptionSettings()
MAX_SCAN_ROWS_ON_VIEW = 5_000_000  # the demo's 0.54M rows score in < 1 s; 12.5M took 21 s


@st.cache_resource(max_entries=4, ttl=3600, show_spinner="Computing the specialist measures…")
def _shared_specialists(
    path: str, identity: tuple[int, int], settings: SpecialistSettings
) -> Specialists:
    # One copy shared by every session, never modified (pandas copies on write: the pages'
    # filters, merges and assigns make new frames). st.cache_data pickled the table of cells
    # (143k rows x 31 columns, 35 MB on the demo store) into its cache and unpickled a new
    # copy on every call, ~+70 MB of a page's peak (bench/README.md). Keyed by the store's
    # file, not its user data: labels and runs do not change the specialists.
    return precompute.specialists(open_store(path), settings)


def _specialists(key: StoreKey, settings: SpecialistSettings) -> Specialists:
    store = open_store(key[0])
    return _shared_specialists(str(store.path), store.identity, settings)


def specialists(store: Store, settings: SpecialistSettings) -> Specialists:
    """`precompute.specialists(store, settings)` (kept in the store for the default
    settings), computed or read once per store file and settings and shared by every
    session: a caller never modifies it."""
    return _shared_specialists(str(store.path), store.identity, settings)


T = TypeVar("T")
_OF_SHARED: dict[tuple[int, str], Any] = {}  # `of_shared`'s results, by (id of object, name)
_OF_SHARED_LOCK = threading.Lock()


def of_shared(shared: object, name: str, compute: Callable[[], T]) -> T:
    """`compute()` once per `shared` object and `name`, forgotten when `shared` is. For a
    page's views of an object every session reads and none modifies (the `st.cache_resource`
    specialists): a warm run reuses them instead of recomputing (Specialists sorted the
    family's 20k cells for its category matrix on every run). The name must say everything
    else the result depends on, and differ from every other page's name for another
    computation: pages share the object (Specialist heatmaps and Compare read one specialists
    object), so one name for two computations hands either page the other's. A frame comes
    back as a shallow copy (pandas copies on write, so no caller's change reaches the kept
    one)."""
    key = (id(shared), name)
    with _OF_SHARED_LOCK:
        found = _OF_SHARED.get(key, _OF_SHARED)
    if found is _OF_SHARED:
        found = compute()
        with _OF_SHARED_LOCK:
            if key not in _OF_SHARED:
                weakref.finalize(shared, _OF_SHARED.pop, key, None)
            _OF_SHARED[key] = found
    return found.copy(deep=False) if isinstance(found, pd.DataFrame) else found


@st.cache_resource(max_entries=8, ttl=3600, show_spinner="Reading the family's specialists…")
def _shared_family_specialists(
    path: str, identity: tuple[int, int], settings: SpecialistSettings, family: str
) -> Specialists:
    # Shared and never modified, as `_shared_specialists`; from the kept table's rows of the
    # family alone when the store keeps the specialists under `settings`.
    kept = precompute.family_specialists(open_store(path), settings, family)
    if kept is not None:
        return kept
    return in_family(_shared_specialists(path, identity, settings), family)


def family_specialists(store: Store, settings: SpecialistSettings, family: str) -> Specialists:
    """`in_family(specialists(store, settings), family)`, without the other families' rows
    when the store keeps the specialists under `settings` (`precompute.family_specialists`);
    once per store file, settings and family, shared by every session."""
    return _shared_family_specialists(str(store.path), store.identity, settings, family)


@st.cache_data(max_entries=32, ttl=3600, show_spinner="Answering under every measure…")
def _frequency_view(
    key: StoreKey, settings: SpecialistSettings, sae: str, family: str
) -> FrequencyView:
    store = open_store(key[0])
    kept = precompute.kept_frequency_view(store, settings, sae, family)
    if kept is not None:
        return kept
    d_sae = int(store.saes().set_index("sae").at[sae, "d_sae"])
    return compute_frequency_view(_specialists(key, settings), sae, family, d_sae)


def frequency_view(
    store: Store, settings: SpecialistSettings, sae: str, family: str
) -> FrequencyView:
    """The frequency page's view of `sae` under `family` (`frequency.frequency_view`): kept
    in the store for the default settings (the table of cells is then never read), else
    computed from `specialists`; cached per store file, settings, SAE and family."""
    return _frequency_view(store_key(store), settings, sae, family)


def band_tables(
    store: Store,
    settings: SpecialistSettings,
    sae: str,
    family: str,
    ranges: list[tuple[int, int]],
) -> BandTables:
    """`frequency.band_tables` of `frequency_view(store, settings, sae, family)` against the
    family's `chance_baseline`, over the rank `ranges` (`parse_rank_ranges`); cached
    per store file, settings, SAE, family and ranges: a warm visit to the Frequency page
    recomputed them from the view and the null (a third of its run)."""
    bounds = tuple((int(first), int(last)) for first, last in ranges)
    return _band_tables(store_key(store), settings, sae, family, bounds)


@st.cache_data(max_entries=64, ttl=3600, show_spinner=False)
def _band_tables(
    key: StoreKey,
    settings: SpecialistSettings,
    sae: str,
    family: str,
    ranges: tuple[tuple[int, int], ...],
) -> BandTables:
    view = _frequency_view(key, settings, sae, family)
    null = _chance_baseline(key, settings).in_family(family)
    return compute_band_tables(view, null.by_band, list(ranges))


@st.cache_data(max_entries=16, ttl=3600, show_spinner=False)
def _specialist_families(key: StoreKey, settings: SpecialistSettings) -> list[str]:
    kept = precompute.kept_families(open_store(key[0]), settings)
    return family_names(_specialists(key, settings).categories) if kept is None else kept


def specialist_families(store: Store, settings: SpecialistSettings) -> list[str]:
    """The families of `specialists(store, settings)` in the pages' order
    (`specialists.family_names`), without reading the specialists when the store keeps the
    frequency views; cached per store file and settings."""
    return _specialist_families(store_key(store), settings)


@st.cache_data(
    max_entries=8,
    ttl=3600,
    show_spinner="Computing the chance baseline (label permutations, once per store and "
    "settings; a build keeps the default settings' baseline in the store)…",
)
def _chance_baseline(key: StoreKey, settings: SpecialistSettings) -> ChanceBaseline:
    return precompute.chance_baseline(open_store(key[0]), settings)


def chance_baseline(store: Store, settings: SpecialistSettings) -> ChanceBaseline:
    """`precompute.chance_baseline(store, settings)` (kept in the store for the default
    settings), cached per store file and settings."""
    return _chance_baseline(store_key(store), settings)


@st.cache_data(max_entries=32, ttl=3600, show_spinner="Computing token enrichment…")
def _taxonomy(key: StoreKey, sae: str, settings: TaxonomySettings) -> pd.DataFrame:
    return precompute.taxonomy(open_store(key[0]), sae, settings)


def taxonomy(store: Store, sae: str, settings: TaxonomySettings) -> pd.DataFrame:
    """`precompute.taxonomy(store, sae, settings)` (kept in the store for the default
    settings), cached per store file, SAE and settings."""
    return _taxonomy(store_key(store), sae, settings)


@st.cache_data(max_entries=16, ttl=3600, show_spinner="Comparing the SAEs…")
def _taxonomy_comparison(key: StoreKey, settings: TaxonomySettings) -> pd.DataFrame:
    return precompute.taxonomy_comparison(open_store(key[0]), settings)


def taxonomy_comparison(store: Store, settings: TaxonomySettings) -> pd.DataFrame:
    """`precompute.taxonomy_comparison(store, settings)`, cached per store file and settings."""
    return _taxonomy_comparison(store_key(store), settings)


@st.cache_data(max_entries=32, ttl=3600, show_spinner="Shuffling token labels…")
def _taxonomy_baseline(key: StoreKey, sae: str, settings: TaxonomySettings) -> pd.DataFrame:
    return precompute.taxonomy_baseline(open_store(key[0]), sae, settings)


def taxonomy_baseline(store: Store, sae: str, settings: TaxonomySettings) -> pd.DataFrame:
    """`precompute.taxonomy_baseline(store, sae, settings)` (kept in the store for the default
    settings), cached per store file, SAE and settings."""
    return _taxonomy_baseline(store_key(store), sae, settings)


@st.cache_data(max_entries=64, ttl=3600, show_spinner="Describing the features…")
def _descriptions(
    path: str, identity: tuple[int, int], sae: str, settings: DescriptionSettings
) -> pd.DataFrame:
    return precompute.descriptions(open_store(path), sae, settings)


@st.cache_data(max_entries=64, ttl=3600, show_spinner="Scoring the descriptions on held-out texts…")
def _description_scores(
    path: str, identity: tuple[int, int], sae: str, settings: DescriptionSettings
) -> pd.DataFrame:
    return precompute.description_scores(open_store(path), sae, settings)


def descriptions(
    store: Store,
    sae: str,
    settings: DescriptionSettings = DEFAULT_DESCRIPTIONS,
    *,
    scored: bool = True,
) -> pd.DataFrame:
    """Every feature of `sae` with its description, its held-out score (`scored`: one scan of
    the SAE's activations the first time) and the user's current label
    (`descriptions.described_features`). Computed once per store file, SAE and settings; a
    saved label makes a new merge of them (the key holds the user data's version), never a
    new computation."""
    return _labelled_descriptions(store_key(store), sae, settings, scored)


@st.cache_data(max_entries=128, ttl=3600, show_spinner=False)
def _labelled_descriptions(
    key: StoreKey, sae: str, settings: DescriptionSettings, scored: bool
) -> pd.DataFrame:
    # Keyed by the store's user-data version too (`store_key`): a saved label makes a new
    # entry, and the labels are not re-read and merged on every call (a page calls this
    # once per table that names features: 0.7 s of a 1.1 s warm Home run before).
    store = open_store(key[0])
    inner = (key[0], store.identity, sae, settings)
    table = _descriptions(*inner)
    if scored:
        table = described_features(table, _description_scores(*inner))
    return with_user_labels(table, store.labels(sae))


def feature_description(store: Store, sae: str, feature: int) -> pd.Series:
    """One feature's `descriptions` row for its page: with the held-out score when the SAE's
    scores are kept in the store or fast enough to compute on a page view (`scores_ready`),
    without the score columns otherwise (`score_summary` says so)."""
    return _descriptions_by_feature(store_key(store), sae, scores_ready(store, sae)).loc[feature]


@st.cache_resource(max_entries=64, ttl=3600, show_spinner=False)
def _descriptions_by_feature(key: StoreKey, sae: str, scored: bool) -> pd.DataFrame:
    # One shared table indexed by feature, never modified: a feature page reads its row
    # without unpickling the SAE's whole description table from the cache on every view.
    table = _labelled_descriptions(key, sae, DEFAULT_DESCRIPTIONS, scored)
    return table.set_index("feature")


def scores_ready(
    store: Store, sae: str, settings: DescriptionSettings = DEFAULT_DESCRIPTIONS
) -> bool:
    """Whether `sae`'s description scores can be shown on a page view: the store keeps them,
    or its activations are few enough to score at once (`MAX_SCAN_ROWS_ON_VIEW`)."""
    if precompute.has_description_scores(store, settings):
        return True
    table = descriptions(store, sae, settings, scored=False)
    return int(table["n_active_tokens"].sum()) <= MAX_SCAN_ROWS_ON_VIEW


def description_summary(store: Store) -> pd.DataFrame | None:
    """`field_metrics.description_medians` of the SAEs of `store` whose description scores
    can be shown (`scores_ready`), None when none can: computed once per store file and user
    data, not from every SAE's description table on each view (Compare read four of them out
    of the cache, twice, on every run)."""
    return _description_summary(store_key(store))


@st.cache_data(max_entries=16, ttl=3600, show_spinner=False)
def _description_summary(key: StoreKey) -> pd.DataFrame | None:
    store = open_store(key[0])
    ready = [sae for sae in store.saes()["sae"] if scores_ready(store, sae)]
    if not ready:
        return None
    return field_metrics.description_medians({sae: descriptions(store, sae) for sae in ready})


def guide_picks(store: Store) -> tuple[tuple[str, int] | None, pd.DataFrame]:
    """The feature the feature page opens on without a link (`guide.first_pick`) and the
    features worth opening (`guide.features_worth_opening`), from every SAE's descriptions
    (scored where `scores_ready`) and the default settings' specialists: once per store
    file and user data, not on every visit to Home or the feature page."""
    return _guide_picks(store_key(store))


@st.cache_data(max_entries=16, ttl=3600, show_spinner=False)
def _guide_picks(key: StoreKey) -> tuple[tuple[str, int] | None, pd.DataFrame]:
    store = open_store(key[0])
    described = pd.concat(
        [descriptions(store, sae, scored=scores_ready(store, sae)) for sae in store.saes()["sae"]],
        ignore_index=True,
    )
    table = specialists(store, SpecialistSettings()).table
    return guide.first_pick(described), guide.features_worth_opening(described, table)


def description_score_table(store: Store) -> pd.DataFrame:
    """`descriptions.compare_scores` of every SAE's scored descriptions (one scan of each
    SAE's activations the first time), once per store file and user data: Compare unpickled
    every SAE's description table from the cache on each run to summarise them."""
    return _description_score_table(store_key(store))


@st.cache_data(max_entries=16, ttl=3600, show_spinner=False)
def _description_score_table(key: StoreKey) -> pd.DataFrame:
    store = open_store(key[0])
    return compare_scores({sae: descriptions(store, sae) for sae in store.saes()["sae"]})


def all_descriptions(
    store: Store, settings: DescriptionSettings = DEFAULT_DESCRIPTIONS, *, scored: bool = True
) -> pd.DataFrame:
    """`descriptions` of every SAE of `store`, in build order."""
    return pd.concat(
        [descriptions(store, sae, settings, scored=scored) for sae in store.saes()["sae"]],
        ignore_index=True,
    )


def feature_descriptions(store: Store, frame: pd.DataFrame, column: str = "feature") -> list[str]:
    """For each row of `frame` (with an sae column), the description of the feature in
    `column`: the user's label (marked as such) or the automatic description; "" where the
    row names no feature of the store."""
    names = set(store.saes()["sae"])
    key = store_key(store)
    shown = np.full(len(frame), "", dtype=object)
    saes = frame["sae"].to_numpy()
    features = pd.to_numeric(frame[column], errors="coerce").fillna(-1).astype("int64").to_numpy()
    for sae in pd.unique(saes):
        if sae not in names:
            continue
        rows = np.flatnonzero(saes == sae)
        by_feature = _shown_by_feature(key, sae)
        ids = features[rows]
        known = (ids >= 0) & (ids < len(by_feature))
        shown[rows[known]] = by_feature[ids[known]]
    return shown.tolist()


@st.cache_resource(max_entries=128, ttl=3600, show_spinner=False)
def _shown_by_feature(key: StoreKey, sae: str) -> np.ndarray:
    # Each feature's shown description at its id ("" for none): one array every session
    # reads and none modifies. A table beside feature ids looks its rows up by position; a
    # cached frame was unpickled, concatenated and reindexed on every call (~10% of a warm
    # Feature or Specialists run).
    table = _labelled_descriptions(key, sae, DEFAULT_DESCRIPTIONS, False)
    by_feature = np.full(open_store(key[0]).sae(sae).d_sae, "", dtype=object)
    by_feature[table["feature"].to_numpy(dtype="int64")] = table["shown"].fillna("").to_numpy()
    return by_feature


def with_descriptions(
    store: Store, frame: pd.DataFrame, columns: list[str]
) -> tuple[pd.DataFrame, list[str]]:
    """`frame` (with sae and feature columns) and `columns` with a `description` column after
    `feature` (`feature_descriptions`). Unchanged when `columns` has one already or lacks
    `feature`."""
    if "description" in columns or "feature" not in columns:
        return frame, columns
    described = frame.assign(description=feature_descriptions(store, frame))
    at = columns.index("feature") + 1
    return described, [*columns[:at], "description", *columns[at:]]


@st.cache_data(max_entries=64, ttl=3600, show_spinner=False)
def _lens_in_corpus(path: str, identity: tuple[int, int], sae: str, n_tokens: int) -> pd.DataFrame:
    table = lens_tokens_in_corpus(open_store(path), sae, n_tokens)
    for column in ("promoted", "suppressed"):
        table[column] = [[token_label(token) for token in tokens] for tokens in table[column]]
    return table


def lens_in_corpus(store: Store, sae: str, n_tokens: int) -> pd.DataFrame:
    """`lens_tokens_in_corpus(store, sae, n_tokens)` with display labels for the tokens, cached
    per store file, SAE and count."""
    return _lens_in_corpus(str(store.path), store.identity, sae, n_tokens)


@st.cache_data(
    max_entries=8,
    ttl=3600,
    show_spinner="Laying out the decoder directions with UMAP (once per source and SAEs)…",
)
def _atlas(
    _handles: list[SaeHandle], spec: str, saes: tuple[tuple[str, int], ...], settings: AtlasSettings
) -> pd.DataFrame:
    decoders = {handle.name: handle.sae.W_dec.detach().float().cpu().numpy() for handle in _handles}
    return atlas_coordinates(decoders, settings)


def atlas(
    loaded: LoadedSource, handles: list[SaeHandle], settings: AtlasSettings = DEFAULT_ATLAS
) -> pd.DataFrame:
    """`atlas_coordinates` of the decoders of `handles` (SAEs of the loaded source) in one
    map, cached per source, SAEs and settings: sae, feature, x, y."""
    saes = tuple((handle.name, int(handle.sae.cfg.d_sae)) for handle in handles)
    return _atlas(handles, loaded.source.spec(), saes, settings)


@st.cache_resource(
    max_entries=4,
    show_spinner="Correlating every feature with the other SAEs' features (once per store)…",
)
def _lineage_by_sae(path: str, identity: tuple[int, int]) -> dict[str, pd.DataFrame]:
    # One shared copy, each SAE's rows indexed by feature: a feature page reads its few
    # rows without copying the whole table (millions of rows at GPT-2 size) out of a cache
    # on every view. Never modified after it is built.
    table = precompute.lineage(open_store(path))
    return {
        str(sae): rows.set_index("feature", drop=False).sort_index(kind="stable")
        for sae, rows in table.groupby("sae", sort=False)
    }


def lineage_ready(store: Store) -> bool:
    """Whether the correlation lineage can be shown on a page view: the store keeps it, or
    its activations are few enough to correlate at once (`MAX_SCAN_ROWS_ON_VIEW`; it reads
    every SAE's rows)."""
    if precompute.is_kept(store, precompute.LINEAGE, lineage.DEFAULT_LINEAGE):
        return True
    return int(store.frequency_table()["n_active_tokens"].sum()) <= MAX_SCAN_ROWS_ON_VIEW


def feature_lineage(store: Store, sae: str, feature: int, k: int) -> pd.DataFrame:
    """`lineage.feature_matches` of one feature in `lineage.correlation_lineage(store)`
    (kept in the store, else computed once per store file): its k most correlated features
    in each other SAE."""
    rows = _lineage_by_sae(str(store.path), store.identity).get(sae)
    if rows is None or feature not in rows.index:
        rows = pd.DataFrame(columns=lineage.MATCH_COLUMNS)
    else:
        rows = rows.loc[[feature]].reset_index(drop=True)
    return lineage.feature_matches(rows, sae, feature, k)


@st.cache_data(max_entries=8, ttl=3600, show_spinner="Probing the corpus's categories…")
def _sparse_probing(
    path: str, identity: tuple[int, int], settings: field_metrics.ProbingSettings
) -> pd.DataFrame:
    return precompute.probing(open_store(path), settings)


def sparse_probing(
    store: Store, settings: field_metrics.ProbingSettings = field_metrics.DEFAULT_PROBING
) -> pd.DataFrame:
    """`field_metrics.sparse_probing(store, settings)`, cached per store file and settings."""
    return _sparse_probing(str(store.path), store.identity, settings)
