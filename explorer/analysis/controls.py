"""The chance baseline of the specialist findings: a label-permutation null.

Owns the permutation null (docs/methods.md#chance-baseline): within each family the
categories are shuffled across the family's texts (each text keeps its own activations and
takes another text's category, or set of labels), with a seeded generator, `permutations`
times; each shuffled labelling goes through exactly the same tested cells, test, BH
correction and thresholds as the observed one (`specialist_table`'s steps). What it
returns: how many specialists each (SAE, category) and each frequency band gets by chance
(mean and 95th percentile over the permutations), and each cell's chance of being called.
An observed count beats chance when its permutation p-value, (b + 1) / (B + 1) with b of the
B permutations giving at least as many, is at most 0.05 (Phipson & Smyth 2010).

Each permutation is one sparse product per family (features x texts times the permuted
texts x categories one-hot), never a loop over features. The replication split and the
token confound live in `explorer.analysis.specialists`. It reads no store and draws nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from explorer.analysis.families import Family, category_families
from explorer.analysis.specialists import (
    CELL_KEYS,
    FEATURE_KEYS,
    FamilyActivations,
    SpecialistSettings,
    TextActivations,
    family_cells,
    prepare_family,
    read_activations,
    score_cells,
    scored_activations,
)

if TYPE_CHECKING:
    from explorer.store.reader import Store

CHANCE_QUANTILE = 0.95
CHANCE_ALPHA = 0.05


@dataclass(frozen=True)
class ChanceBaseline:
    """The permutation null of one (store, settings).

    `hits`: sae, feature, family, category, perm for every specialist of every permutation;
    `permutations`: how many were run; `saes`: sae, layer of every SAE; `categories`:
    family, category of every category. Summaries: `by_category`, `by_band`, `cell_chance`.
    """

    hits: pd.DataFrame
    permutations: int
    saes: pd.DataFrame
    categories: pd.DataFrame

    def in_family(self, family: str) -> ChanceBaseline:
        """The null of one family's categories only (counts per band then count a feature
        that is a specialist of at least one category of that family)."""
        return ChanceBaseline(
            self.hits[self.hits["family"] == family],
            self.permutations,
            self.saes,
            self.categories[self.categories["family"] == family],
        )

    def cell_chance(self) -> pd.DataFrame:
        """sae, feature, family, category, chance: the share of the permutations in which
        the cell was a specialist (cells never called by chance are left out: chance 0)."""
        counts = self.hits.groupby(CELL_KEYS).size().rename("chance").reset_index()
        counts["chance"] = counts["chance"] / self.permutations
        return counts

    def by_category(self) -> pd.DataFrame:
        """Per (SAE, family, category): chance_mean (specialists per permutation, on
        average) and chance_p95 (their 95th percentile over the permutations)."""
        keys = ["sae", "family", "category"]
        every = self.saes[["sae"]].merge(self.categories[["family", "category"]], how="cross")
        counts = self.counts(self.hits.groupby([*keys, "perm"]).size(), every, keys)
        return every.assign(**_summary(counts))

    def by_band(self, bands: pd.DataFrame, observed: pd.Series | None = None) -> pd.DataFrame:
        """Per frequency band of `bands` (sae, feature, band; one row per feature, dead
        ones may be left out): chance_mean and chance_p95 of the number of the band's
        features that are a specialist of at least one category; with `observed` (that
        number per band, indexed by band) also observed, chance_p and beats_chance."""
        per_feature = self.hits.drop_duplicates([*FEATURE_KEYS, "perm"])
        banded = per_feature.merge(bands[[*FEATURE_KEYS, "band"]], on=FEATURE_KEYS)
        every = pd.DataFrame({"band": bands["band"].drop_duplicates().to_numpy()})
        counts = self.counts(banded.groupby(["band", "perm"]).size(), every, ["band"])
        summary = every.assign(**_summary(counts))
        if observed is None:
            return summary
        seen = observed.reindex(summary["band"]).fillna(0).to_numpy(np.int64)
        return summary.assign(observed=seen, **_against(counts, seen))

    def counts(self, per_perm: pd.Series, every: pd.DataFrame, keys: list[str]) -> np.ndarray:
        """The count of each row of `every` in each permutation, [rows, permutations], from
        counts given per (keys..., perm) where they are above 0."""
        wide = np.zeros((len(every), self.permutations), dtype=np.int64)
        if per_perm.empty:
            return wide
        frame = per_perm.rename("n").reset_index()
        row = every.reset_index(drop=True).reset_index().merge(frame, on=keys)
        wide[row["index"].to_numpy(), row["perm"].to_numpy(np.int64)] = row["n"].to_numpy()
        return wide


def _summary(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and 95th percentile (linear interpolation) over the permutations."""
    return {
        "chance_mean": counts.mean(axis=1),
        "chance_p95": np.quantile(counts, CHANCE_QUANTILE, axis=1),
    }


def _against(counts: np.ndarray, observed: np.ndarray) -> dict[str, np.ndarray]:
    """The permutation p-value of each observed count, (b + 1) / (B + 1) with b of the B
    permutations giving at least as many (Phipson & Smyth 2010), and beats_chance: p <= 0.05
    and the count above 0. With fewer than 19 permutations nothing can beat chance."""
    at_least = (counts >= observed[:, None]).sum(axis=1)
    p = (at_least + 1) / (counts.shape[1] + 1)
    return {"chance_p": p, "beats_chance": (p <= CHANCE_ALPHA) & (observed > 0)}


def permutation_null(
    acts: TextActivations,
    families: list[Family],
    settings: SpecialistSettings,
    scored_on: FamilyActivations | None = None,
) -> ChanceBaseline:
    """Run `settings.permutations` shuffles of every family's labels (seed `settings.seed`)
    through the same cells, test, BH correction and thresholds as the observed table (a
    family named in `scored_on` scored on those activations, as `specialist_table`)."""
    scored_on = scored_on or {}
    prepared = [
        prepare_family(scored_on.get(family.name, acts), family, settings) for family in families
    ]
    rng = np.random.default_rng(settings.seed)
    hits = []
    for perm in range(settings.permutations):
        cells = []
        for index, family in enumerate(prepared):
            shuffled = family.membership[rng.permutation(family.membership.shape[0])]
            cells.append(
                family_cells(
                    family, acts.features, settings, membership=shuffled, full=False
                ).assign(family_index=index)
            )
        table = score_cells(pd.concat(cells, ignore_index=True), settings, every_p=False)
        hits.append(
            table.loc[table["is_specialist"], ["row", "family_index", "category_index"]].assign(
                perm=perm
            )
        )
    found = pd.concat(hits, ignore_index=True)
    names = acts.features.iloc[found["row"].to_numpy()]
    categories_of = [np.asarray(family.categories, dtype=object) for family in families]
    hits = pd.DataFrame(
        {
            "sae": names["sae"].to_numpy(),
            "feature": names["feature"].to_numpy(np.int64),
            "family": np.asarray([family.name for family in families], dtype=object)[
                found["family_index"].to_numpy(np.int64)
            ],
            "category": [
                categories_of[f][c]
                for f, c in zip(found["family_index"], found["category_index"], strict=True)
            ],
            "perm": found["perm"].to_numpy(np.int64),
        }
    )
    saes = acts.features[["sae", "layer"]].drop_duplicates(ignore_index=True)
    categories = pd.DataFrame(
        [(family.name, category) for family in families for category in family.categories],
        columns=["family", "category"],
    )
    return ChanceBaseline(hits, settings.permutations, saes, categories)


def observed_vs_chance(
    matrix: pd.DataFrame, baseline: ChanceBaseline, value: str = "n_specialists"
) -> pd.DataFrame:
    """`category_matrix` rows with chance_mean and chance_p95 of the null, chance_p (the
    permutation p-value of the observed `value`) and beats_chance (chance_p <= 0.05)."""
    keys = ["sae", "family", "category"]
    rows = matrix.reset_index(drop=True)
    counts = baseline.counts(baseline.hits.groupby([*keys, "perm"]).size(), rows, keys)
    observed = rows[value].to_numpy(np.int64)
    return rows.assign(**_summary(counts), **_against(counts, observed))


def load_chance_baseline(store: Store, settings: SpecialistSettings) -> ChanceBaseline:
    """`permutation_null` of the store's text activations and families."""
    acts = read_activations(store)
    families = category_families(acts.texts, settings.contrast)
    scored_on = scored_activations(store, acts, families, settings)
    return permutation_null(acts, families, settings, scored_on)


FINDINGS_COLUMNS = [
    "sae", "layer", "feature", "category", "family", "measure", "score", "support", "auroc",
    "q_value", "chance", "replicated", "token_explained", "is_specialist", "selectivity",
    "lift", "notebook_score", "share", "enrichment", "p_value", "n_texts", "n_texts_active",
    "n_active", "n_total", "discovered", "token", "token_share", "token_auroc",
]  # fmt: skip


def findings(table: pd.DataFrame, baseline: ChanceBaseline, measure: str) -> pd.DataFrame:
    """One row per tested (SAE, feature, family, category) with the columns of
    `FINDINGS_COLUMNS`: the measure's name and value (score, higher = more specialised),
    its controls (chance: the share of label permutations in which the cell was a
    specialist; replicated; token_explained) and the other measures for reference."""
    chance = baseline.cell_chance()
    if chance.empty:  # no shuffle called any cell
        rows = table.assign(chance=0.0)
    else:
        rows = table.merge(chance, on=CELL_KEYS, how="left")
        rows["chance"] = rows["chance"].fillna(0.0)
    rows["measure"] = measure
    ordered = rows.sort_values(["layer", "sae", "family", "category", "feature"])
    return ordered[FINDINGS_COLUMNS].reset_index(drop=True)
