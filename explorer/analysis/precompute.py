"""The whole-store analyses a build computes once and keeps in the store, and their loaders.

Owns which analyses are kept (the specialist table, its permutation null and the frequency
page's view of every SAE and family (`frequency.frequency_views`: its features, replication
and answer under every measure, so the page never decodes the table of cells) under the
default `SpecialistSettings`, every SAE's automatic descriptions and their held-out scores
under the default `DescriptionSettings`, every SAE's token taxonomy and its shuffle baseline
under the default `TaxonomySettings`, every feature's most correlated features in the other
SAEs, the k-sparse probes of every category, and, when the build passes the SAEs' decoders,
the feature atlas's maps), the key each is kept under (its settings and
`VERSION`), `derive(path)`, the callback a build hands to `StoreWriter`, and the loaders the
app calls: each returns the kept result when the store holds one computed under the settings
asked for, and computes it otherwise (other settings, or a store built before; the frequency
views' and families' loaders return None instead, and the app computes them from its cached
specialists). A kept result equals a fresh computation (tested), so a page cannot tell them
apart except by speed.
How they are stored is `explorer.store.derived`'s business.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from explorer.analysis.atlas import atlas_entry
from explorer.analysis.controls import ChanceBaseline, load_chance_baseline
from explorer.analysis.descriptions import DescriptionSettings, load_descriptions, load_scores
from explorer.analysis.enrichment import (
    TaxonomySettings,
    load_taxonomy,
    shuffle_baseline,
    taxonomy_summary,
)
from explorer.analysis.field_metrics import DEFAULT_PROBING, ProbingSettings, sparse_probing
from explorer.analysis.frequency import FrequencyView, frequency_views, view_of
from explorer.analysis.lineage import DEFAULT_LINEAGE, LineageSettings, correlation_lineage
from explorer.analysis.specialists import (
    Specialists,
    SpecialistSettings,
    family_names,
    in_family,
    load_specialists,
)
from explorer.store.derived import Derived, read_derived
from explorer.store.reader import Store

logger = logging.getLogger(__name__)

# Bump when what an analysis returns changes, so a store built before is recomputed on
# demand instead of answered from its kept tables.
VERSION = 1
SPECIALISTS = "specialists"
CHANCE = "chance"
DESCRIPTIONS = "descriptions"
TAXONOMY = "taxonomy"
LINEAGE = "lineage"
PROBING = "probing"
FREQUENCY = "frequency"


def key(settings: Any) -> str:
    """The key a result computed under `settings` (a settings dataclass) is kept under."""
    return json.dumps({"version": VERSION, "settings": asdict(settings)}, sort_keys=True)


# --- loaders: the kept result when there is one -------------------------------------------


def specialists(store: Store, settings: SpecialistSettings) -> Specialists:
    """`load_specialists(store, settings)`, read from the store when it keeps them."""
    kept = store.derived(SPECIALISTS, key(settings))
    return load_specialists(store, settings) if kept is None else _kept_specialists(kept, settings)


def family_specialists(
    store: Store, settings: SpecialistSettings, family: str
) -> Specialists | None:
    """`specialists.in_family(specialists(store, settings), family)` when the store keeps
    the specialists computed under `settings`, reading only the family's rows of the table
    of cells (on the demo store the default family's 20k of 143k rows: a page showing one
    family never holds the whole table); None when the store keeps none."""
    with store.cursor() as cursor:
        kept = read_derived(cursor, SPECIALISTS, key(settings), where=("family", family))
    return None if kept is None else in_family(_kept_specialists(kept, settings), family)


def _kept_specialists(kept: Derived, settings: SpecialistSettings) -> Specialists:
    frames = kept.frames
    return Specialists(
        settings,
        frames["cells"],
        frames["features"],
        frames["categories"],
        frames["replication"],
        frozenset(kept.values["operation_categories"]),
    )


def chance_baseline(store: Store, settings: SpecialistSettings) -> ChanceBaseline:
    """`load_chance_baseline(store, settings)`, read from the store when it keeps it."""
    kept = store.derived(CHANCE, key(settings))
    if kept is None:
        return load_chance_baseline(store, settings)
    frames = kept.frames
    return ChanceBaseline(
        frames["hits"], int(kept.values["permutations"]), frames["saes"], frames["categories"]
    )


def kept_families(store: Store, settings: SpecialistSettings) -> list[str] | None:
    """The families of the specialists computed under `settings` in the order the pages
    offer them (`specialists.family_names`), read from the meta row of the kept frequency
    views (no frame is decoded), or from the kept specialists' small table of categories
    in a store built before the frequency views were kept; None when the store keeps
    neither."""
    kept = store.derived(FREQUENCY, key(settings), parts=[])
    if kept is not None:
        return list(kept.values["families"])
    categories = store.derived(SPECIALISTS, key(settings), parts=["categories"])
    return None if categories is None else family_names(categories.frames["categories"])


def kept_frequency_view(
    store: Store, settings: SpecialistSettings, sae: str, family: str
) -> FrequencyView | None:
    """The frequency page's `FrequencyView` of `sae` under `family` when the store keeps the
    views computed under `settings` (a few small frames, not the table of cells); else None,
    and the caller computes it from the specialists (`frequency.frequency_view`)."""
    kept = store.derived(FREQUENCY, key(settings))
    return None if kept is None else view_of(kept.frames, sae, family)


def descriptions(store: Store, sae: str, settings: DescriptionSettings) -> pd.DataFrame:
    """`load_descriptions(store, sae, settings)`, read from the store when it keeps them."""
    kept = _kept_part(store, DESCRIPTIONS, settings, "descriptions", sae)
    return load_descriptions(store, sae, settings) if kept is None else kept


def description_scores(store: Store, sae: str, settings: DescriptionSettings) -> pd.DataFrame:
    """`load_scores(store, sae, settings)` (one scan of the SAE's activations), read from the
    store when it keeps them."""
    kept = _kept_part(store, DESCRIPTIONS, settings, "scores", sae)
    return load_scores(store, sae, settings) if kept is None else kept.drop(columns="sae")


def has_description_scores(store: Store, settings: DescriptionSettings) -> bool:
    """Whether the store keeps the description scores under `settings` (no scan to show
    them)."""
    return is_kept(store, DESCRIPTIONS, settings)


def taxonomy(store: Store, sae: str, settings: TaxonomySettings) -> pd.DataFrame:
    """`load_taxonomy(store, sae, settings)`, read from the store when it keeps it."""
    kept = _kept_part(store, TAXONOMY, settings, "taxonomy", sae)
    return load_taxonomy(store, sae, settings) if kept is None else kept


def taxonomy_baseline(store: Store, sae: str, settings: TaxonomySettings) -> pd.DataFrame:
    """`shuffle_baseline(store, sae, settings)` (its default shuffles and seed), read from
    the store when it keeps it."""
    kept = _kept_part(store, TAXONOMY, settings, "baseline", sae)
    return shuffle_baseline(store, sae, settings) if kept is None else kept.drop(columns="sae")


def taxonomy_comparison(store: Store, settings: TaxonomySettings) -> pd.DataFrame:
    """sae, layer and the `taxonomy_summary` of every SAE of `store`, in build order (as
    `enrichment.compare_saes`), from the kept taxonomies when the store has them."""
    saes = store.saes()
    rows = [
        {"sae": sae, "layer": layer, **taxonomy_summary(taxonomy(store, sae, settings))}
        for sae, layer in zip(saes["sae"], saes["layer"], strict=True)
    ]
    return pd.DataFrame(rows)


def lineage(store: Store, settings: LineageSettings = DEFAULT_LINEAGE) -> pd.DataFrame:
    """`lineage.correlation_lineage(store, settings)`, read from the store when it keeps it."""
    kept = _kept_part(store, LINEAGE, settings, "matches")
    return correlation_lineage(store, settings) if kept is None else kept


def probing(store: Store, settings: ProbingSettings = DEFAULT_PROBING) -> pd.DataFrame:
    """`field_metrics.sparse_probing(store, settings)`, read from the store when it keeps
    it."""
    kept = _kept_part(store, PROBING, settings, "probes")
    return sparse_probing(store, settings) if kept is None else kept


def is_kept(store: Store, kind: str, settings: Any) -> bool:
    """Whether the store keeps `kind` computed under `settings` (a read of one meta row)."""
    return store.derived_kinds().get(kind) == key(settings)


def _kept_part(
    store: Store, kind: str, settings: Any, part: str, sae: str | None = None
) -> pd.DataFrame | None:
    """The one frame `part` of `kind` kept under `settings` (only it is read and decoded),
    cut to `sae`'s rows when given; None when the store keeps no such result."""
    kept = store.derived(kind, key(settings), parts=[part])
    if kept is None:
        return None
    frame = kept.frames[part]
    return frame if sae is None else frame.loc[frame["sae"] == sae].reset_index(drop=True)


# --- what a build keeps -------------------------------------------------------------------


def derived_entries(
    store: Store, decoders: Mapping[str, np.ndarray] | None = None
) -> list[Derived]:
    """Every analysis a build keeps, computed on `store` under the default settings; the
    atlas only with `decoders` (each SAE's W_dec as [d_sae, d_in], the store has none)."""
    steps = [
        (f"{SPECIALISTS} and {FREQUENCY}", _specialists_entries),
        (CHANCE, _chance_entry),
        (DESCRIPTIONS, _descriptions_entry),
        (TAXONOMY, _taxonomy_entry),
        (LINEAGE, _lineage_entry),
        (PROBING, _probing_entry),
    ]
    if decoders:
        steps.append(("atlas", lambda _: atlas_entry(decoders)))
    entries = []
    for name, compute in steps:
        started = time.perf_counter()
        computed = compute(store)
        entries += computed if isinstance(computed, list) else [computed]
        logger.info("derived %s in %.1f s", name, time.perf_counter() - started)
    return entries


def derive(path: Path, decoders: Mapping[str, np.ndarray] | None = None) -> list[Derived]:
    """The `StoreWriter(derive=...)` callback: `derived_entries` of the store file `path`
    (a build passes its SAEs' decoders for the atlas)."""
    with Store.open(path) as store:
        return derived_entries(store, decoders)


def _specialists_entries(store: Store) -> list[Derived]:
    """The specialists and, from the same computation, the frequency page's views."""
    settings = SpecialistSettings()
    found = load_specialists(store, settings)
    saes = store.saes()
    d_saes = dict(zip(saes["sae"], saes["d_sae"].astype(int), strict=True))
    return [
        Derived(
            SPECIALISTS,
            key(settings),
            {
                "cells": found.table,
                "features": found.features,
                "categories": found.categories,
                "replication": found.replication,
            },
            {"operation_categories": sorted(found.operation_categories)},
        ),
        Derived(
            FREQUENCY,
            key(settings),
            frequency_views(found, d_saes),
            {"families": family_names(found.categories)},
        ),
    ]


def _chance_entry(store: Store) -> Derived:
    settings = SpecialistSettings()
    null = load_chance_baseline(store, settings)
    return Derived(
        CHANCE,
        key(settings),
        {"hits": null.hits, "saes": null.saes, "categories": null.categories},
        {"permutations": null.permutations},
    )


def _descriptions_entry(store: Store) -> Derived:
    settings = DescriptionSettings()
    saes = list(store.saes()["sae"])
    described = [load_descriptions(store, sae, settings) for sae in saes]
    scores = [load_scores(store, sae, settings).assign(sae=sae) for sae in saes]
    return Derived(
        DESCRIPTIONS,
        key(settings),
        {
            "descriptions": pd.concat(described, ignore_index=True),
            "scores": pd.concat(scores, ignore_index=True),
        },
    )


def _taxonomy_entry(store: Store) -> Derived:
    settings = TaxonomySettings()
    saes = list(store.saes()["sae"])
    return Derived(
        TAXONOMY,
        key(settings),
        {
            "taxonomy": pd.concat(
                [load_taxonomy(store, sae, settings) for sae in saes], ignore_index=True
            ),
            "baseline": pd.concat(
                [shuffle_baseline(store, sae, settings).assign(sae=sae) for sae in saes],
                ignore_index=True,
            ),
        },
    )


def _lineage_entry(store: Store) -> Derived:
    return Derived(
        LINEAGE, key(DEFAULT_LINEAGE), {"matches": correlation_lineage(store, DEFAULT_LINEAGE)}
    )


def _probing_entry(store: Store) -> Derived:
    return Derived(
        PROBING, key(DEFAULT_PROBING), {"probes": sparse_probing(store, DEFAULT_PROBING)}
    )
