"""Replication of the specialist findings on another store: a user corpus as replication set.

Owns the re-test of the specialists found on one store's texts on the texts of a second store
built from another corpus with the same source (the same SAEs), so a finding can be checked
on texts it was not found on without loading a model (docs/methods.md#replication-store):
each specialist (SAE, feature, category) is looked up in the second store's own tested cells
(its category matched by name, in the family of the same name if there is one, else in the
one family that has it), and is *replicated* when it is a specialist there under the same
measure and thresholds, with Benjamini-Hochberg q-values over the re-tested findings only.
The split-half replication inside one store lives in `explorer.analysis.specialists`. It
reads stores only through `explorer.analysis.specialists`' loaders and `Store`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from explorer.analysis.families import category_families
from explorer.analysis.specialists import (
    CELL_KEYS,
    Specialists,
    SpecialistSettings,
    TextActivations,
    family_categories,
    read_activations,
    replication_rates,
    retest_findings,
    scored_activations,
    specialist_table,
)
from explorer.errors import InputError, markdown_escaped

if TYPE_CHECKING:
    from explorer.store.reader import Store

SAE_KEYS = ["sae", "hook_name", "d_sae"]
EXTERNAL_COLUMNS = ["external_tested", "external_replicated", "external_score"]


@dataclass(frozen=True)
class StoreReplication:
    """The findings of one store re-tested on another (`replicate_on_store`).

    `cells`: sae, feature, family, category of every specialist with external_tested (its
    category exists in the other store), external_replicated and external_score (the
    measure there, NaN where untested); `rates`: per (family, category) of the first store,
    discovered (tested findings), replicated, replication_rate; `categories`: family,
    category, n_texts of the other store's categories; `store`: the other store's file name.
    """

    cells: pd.DataFrame
    rates: pd.DataFrame
    categories: pd.DataFrame
    store: str


def check_same_source(store: Store, other: Store) -> None:
    """Raise `InputError` unless `other` was built with the same source and SAEs as `store`
    (meta source, and every SAE's name, hook and width): only then are its features the same
    features."""
    if other.path.resolve() == store.path.resolve():
        raise InputError("Pick another store than the one explored to replicate on.")
    source, other_source = store.meta().get("source"), other.meta().get("source")
    saes = store.saes()[SAE_KEYS].reset_index(drop=True)
    other_saes = other.saes()[SAE_KEYS].reset_index(drop=True)
    if source != other_source or not saes.equals(other_saes):
        raise InputError(
            f"{markdown_escaped(other.path.name)} was built with another source or other SAEs "
            f"({markdown_escaped(other_source)}: {markdown_escaped(', '.join(other_saes['sae']))}"
            f") than {markdown_escaped(store.path.name)} ({markdown_escaped(source)}: "
            f"{markdown_escaped(', '.join(saes['sae']))}); build the replication corpus with "
            "the same source: python -m explorer build --source SOURCE --corpus FILE --out "
            "STORE."
        )


def target_families(found: pd.DataFrame, categories: pd.DataFrame) -> pd.Series:
    """For each finding (family, category), the family of the other store whose category it
    is re-tested in: the family of the same name if it has the category, else the only family
    that has it; None when no family or several have it."""
    pairs = set(zip(categories["family"], categories["category"], strict=True))
    holders = categories.groupby("category")["family"].agg(list)
    targets = []
    for family, category in zip(found["family"], found["category"], strict=True):
        if (family, category) in pairs:
            targets.append(family)
        else:
            names = holders.get(category, [])
            targets.append(names[0] if len(names) == 1 else None)
    return pd.Series(targets, index=found.index, dtype=object)


def replicate_on_store(
    table: pd.DataFrame,
    other_table: pd.DataFrame,
    other_categories: pd.DataFrame,
    settings: SpecialistSettings,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells, rates) of `StoreReplication`: the specialists of `table` (`specialist_table`
    of the first store) re-tested in `other_table` (`specialist_table` of the other store's
    texts, same settings; `other_categories` its `family_categories`). A finding whose
    category the other store lacks is not tested and left out of the rates; one tested but
    below the minimum support there is not replicated."""
    found = table.loc[table["is_specialist"], CELL_KEYS].reset_index(drop=True)
    found["target"] = target_families(found, other_categories)
    cells = retest_findings(
        found,
        other_table.rename(columns={"family": "target"}),
        settings,
        ["sae", "feature", "target", "category"],
        "external_replicated",
        "external_score",
    )
    cells["external_tested"] = cells["target"].notna()
    cells = cells[[*CELL_KEYS, *EXTERNAL_COLUMNS]]
    tested = cells[cells["external_tested"]]
    rates = replication_rates(
        tested.assign(discovered=True, replicated=tested["external_replicated"])
    )
    return cells, rates


def other_store_table(
    other: Store, settings: SpecialistSettings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`specialist_table` of `other`'s texts under `settings` (the operation family scored
    where the settings say) and its `family_categories`."""
    acts: TextActivations = read_activations(other)
    families = category_families(acts.texts, settings.contrast)
    scored_on = scored_activations(other, acts, families, settings)
    return specialist_table(acts, families, settings, scored_on=scored_on), family_categories(
        families
    )


def load_store_replication(
    store: Store, other: Store, table: pd.DataFrame, settings: SpecialistSettings
) -> StoreReplication:
    """The specialists of `table` (`Specialists.table` of `store` under `settings`) re-tested
    on `other`, after `check_same_source`."""
    check_same_source(store, other)
    other_table, other_categories = other_store_table(other, settings)
    cells, rates = replicate_on_store(table, other_table, other_categories, settings)
    return StoreReplication(cells, rates, other_categories, other.path.name)


def with_store_replication(table: pd.DataFrame, replication: StoreReplication) -> pd.DataFrame:
    """`table` whose `discovered` / `replicated` columns say whether each specialist was
    re-tested on the other store and replicated there (what the pages count and filter on
    when a replication store is chosen), with the `EXTERNAL_COLUMNS` beside them."""
    merged = table.drop(columns=EXTERNAL_COLUMNS, errors="ignore").merge(
        replication.cells, on=CELL_KEYS, how="left"
    )
    merged["external_tested"] = merged["external_tested"].fillna(False).astype(bool)
    merged["external_replicated"] = merged["external_replicated"].fillna(False).astype(bool)
    merged["discovered"] = merged["external_tested"]
    merged["replicated"] = merged["external_replicated"]
    merged.index = table.index
    return merged.assign(external_score=merged["external_score"].astype(np.float64))


def replicated_on(result: Specialists, replication: StoreReplication) -> Specialists:
    """`result` with its replication taken from the other store: the table as
    `with_store_replication`, the replication rates those of `replication`."""
    return replace(
        result,
        table=with_store_replication(result.table, replication),
        replication=replication.rates,
    )
