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

Each batch of permutations is one product per family and block of features (the permuted
texts x categories one-hots side by side, times the features x texts activity), never a
loop over features. The replication split and the token confound live in
`explorer.analysis.specialists`. It reads no store and draws nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from explorer.analysis.families import Family, category_families
from explorer.analysis.specialists import (
    CELL_KEYS,
    EFFECT_COLUMNS,
    FEATURE_KEYS,
    TESTED_MEASURES,
    FamilyActivations,
    PreparedFamily,
    SpecialistSettings,
    TextActivations,
    cell_measures,
    chi2_pvalue,
    fisher_greater,
    max_other_share,
    passes_effect,
    passing_q_values,
    prepare_family,
    read_activations,
    scored_activations,
)

if TYPE_CHECKING:
    from scipy import sparse

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


NULL_BATCH = 50
"""Permutations counted together: their shuffled memberships are stacked column-wise, so each
family takes one sparse product per batch (and per block of features) instead of one per
permutation."""
NULL_BLOCK_ENTRIES = 4 * 2**20
"""Entries of one dense block (float64, 32 MiB). A family's features are counted in row
blocks such that both the counts (shuffles x categories, by the block's features) and the
dense copy of the block (texts x features) hold at most this many; a block keeps a few
such arrays alive at once (the dense copy or the sparse product, the counts, a second
count for the notebook score or AUROC, the indices of the tested cells), so the null's
working memory stays under ~200 MB whatever the store: at GPT-2 size (24,576 features x 4
SAEs) and 50 permutations, a family of 438 categories is counted 191 features at a time."""
DENSE_FROM = 0.05
"""Share of nonzero (feature, text) entries from which a block is multiplied dense: the cost
of the sparse product grows with the nonzeros of the block, that of the dense one with its
size, and on the demo store (24% nonzero) the dense one is 7 times faster."""


def permutation_null(
    acts: TextActivations,
    families: list[Family],
    settings: SpecialistSettings,
    scored_on: FamilyActivations | None = None,
) -> ChanceBaseline:
    """Run `settings.permutations` shuffles of every family's labels (seed `settings.seed`)
    through the same cells, test, BH correction and thresholds as the observed table (a
    family named in `scored_on` scored on those activations, as `specialist_table`).

    The draws are those of a plain loop (one `rng.permutation` per family per permutation,
    permutation by permutation). They are counted `NULL_BATCH` permutations at a time, each
    family in blocks of features of at most `NULL_BLOCK_ENTRIES` (see there for memory);
    only the cells that pass the measure's effect and support thresholds are kept, with the
    number of tested cells of each permutation, which is all the BH correction over that
    permutation's tested cells needs (`passing_q_values`)."""
    scored_on = scored_on or {}
    prepared = [
        prepare_family(scored_on.get(family.name, acts), family, settings) for family in families
    ]
    rng = np.random.default_rng(settings.seed)
    hits = []
    for start in range(0, settings.permutations, NULL_BATCH):
        perms = range(start, min(start + NULL_BATCH, settings.permutations))
        orders = [
            [rng.permutation(family.membership.shape[0]) for family in prepared] for _ in perms
        ]
        n_tested = np.zeros(len(perms), dtype=np.int64)
        passing = []
        for index, family in enumerate(prepared):
            cells, tested = _passing_cells(family, [order[index] for order in orders], settings)
            passing.append(cells.assign(family_index=index))
            n_tested += tested
        cells = pd.concat(passing, ignore_index=True)
        is_specialist = _decide_each(cells, n_tested, settings)
        cells["perm"] += start
        hits.append(cells.loc[is_specialist, ["row", "family_index", "category_index", "perm"]])
    found = pd.concat(hits, ignore_index=True).sort_values(
        ["perm", "family_index", "row", "category_index"], ignore_index=True
    )  # the plain loop's order
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


def _passing_cells(
    family: PreparedFamily, orders: list[np.ndarray], settings: SpecialistSettings
) -> tuple[pd.DataFrame, np.ndarray]:
    """The tested cells of `family` (as `family_cells`) under each shuffle of its texts in
    `orders` (the membership's rows taken in that order) that pass the measure's effect and
    support thresholds (`passes_effect`), and how many cells each shuffle tested. Columns:
    n_texts, n_texts_active, n_total, n_active (the counts of the test), row (of the
    features), category_index and perm (the position of the shuffle in `orders`)."""
    from scipy import sparse

    n_in = np.asarray(family.membership.sum(axis=0)).ravel()  # [categories], in every shuffle
    testable = (n_in >= settings.min_support) & (n_in > 0) & (n_in < family.n_total)
    # a category with fewer texts than min_support is never tested, so it is not counted,
    # except for dominance, which compares a category's share with every other's
    counted = np.arange(len(n_in)) if settings.measure == "dominance" else np.flatnonzero(testable)
    members = family.membership[:, counted]  # [universe texts, counted categories]
    n_batch, n_categories = len(orders), len(counted)
    stacked = sparse.hstack([members[order] for order in orders], format="csr")
    # [universe texts, shuffles x counted categories]
    product = _ShuffledProduct(stacked.T.tocsr())
    n_rows = max(1, NULL_BLOCK_ENTRIES // max(1, n_batch * n_categories, family.n_total))
    testable = np.tile(testable[counted], n_batch)[:, None]  # [shuffles x categories, 1]
    n_tested = np.zeros(n_batch, dtype=np.int64)
    frames = []
    for low in range(0, family.active.shape[0], n_rows):
        rows = slice(low, low + n_rows)
        in_active = product.counts(family.active[rows])
        # [shuffles x categories, features of the block]
        at, row = np.divmod(
            np.flatnonzero((in_active >= settings.min_support) & testable), in_active.shape[1]
        )
        perm, position = np.divmod(at, n_categories)
        column = counted[position]
        n_tested += np.bincount(perm, minlength=n_batch)
        zeros = np.zeros(len(row))
        strong_in, rank_sum, max_other = zeros, zeros, zeros
        if settings.measure == "score":
            strong_in = product.counts(family.strong[rows])[at, row]
        elif settings.measure == "auroc":
            rank_sum = product.counts(family.ranks[rows])[at, row]
        elif settings.measure == "dominance":
            max_other = _max_other_share(
                in_active, family.n_active[rows], n_categories, (perm, row, column), settings.share
            )
        counts = {
            "n_texts": n_in[column].astype(np.int64),
            "n_texts_active": in_active[at, row].astype(np.int64),
            "n_total": np.full(len(row), family.n_total, dtype=np.int64),
            "n_active": family.n_active[rows][row].astype(np.int64),
        }
        strong_in = strong_in.astype(np.int64)
        strong_out = (family.n_strong[rows][row] - strong_in).astype(np.int64)
        columns = cell_measures(
            counts["n_texts_active"], counts["n_texts"], counts["n_active"], counts["n_total"],
            strong_in, strong_out, rank_sum, EFFECT_COLUMNS[settings.measure],
        )  # fmt: skip
        columns["max_other_share"] = max_other
        columns["support"] = strong_in if settings.measure == "score" else counts["n_texts_active"]
        kept = passes_effect(columns, settings)
        frames.append(
            pd.DataFrame(
                {name: values[kept] for name, values in counts.items()}
                | {"row": row[kept] + low, "category_index": column[kept], "perm": perm[kept]}
            )
        )
    columns = ["n_texts", "n_texts_active", "n_total", "n_active", "row", "category_index", "perm"]
    cells = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return cells.astype(np.int64), n_tested


def _max_other_share(
    in_active: np.ndarray,
    n_active: np.ndarray,
    n_categories: int,
    cells: tuple[np.ndarray, np.ndarray, np.ndarray],
    above: float,
) -> np.ndarray:
    """max_other_share (`max_other_share`, as `family_cells`) of the `cells` (perm, row,
    column) of `in_active` ([shuffles x categories, features], every one of the
    `n_categories` categories counted; `n_active` [features]) whose share is above `above`;
    0 for the rest, where dominance fails on the share alone."""
    perm, row, column = cells
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(
            n_active[row] > 0, in_active[perm * n_categories + column, row] / n_active[row], 0.0
        )
    chosen = np.flatnonzero(share > above)
    per_shuffle = in_active.reshape(-1, n_categories, in_active.shape[1])
    # [shuffles, categories, features]
    vectors = per_shuffle[perm[chosen], :, row[chosen]]  # [chosen cells, categories]
    max_other = np.zeros(len(row))
    max_other[chosen] = max_other_share(vectors, n_active[row[chosen]])[
        np.arange(len(chosen)), column[chosen]
    ]
    return max_other


@dataclass(frozen=True)
class _ShuffledProduct:
    """Every shuffled membership of a batch, one above the other: `transposed` [shuffles x
    categories, texts], 1 where the shuffle gives the text the category."""

    transposed: sparse.csr_matrix  # [shuffles x categories, universe texts]

    def counts(self, matrix: sparse.csr_matrix) -> np.ndarray:
        """Every shuffled membership times `matrix` (features x texts) transposed: [shuffles
        x categories, features]. Where `matrix` is dense enough (`DENSE_FROM`) the product
        runs with a dense block of `matrix`, several times faster there; its entries are
        sums of whole or half numbers, so exact either way."""
        n_features, n_texts = matrix.shape
        if matrix.nnz >= DENSE_FROM * n_features * n_texts:
            return self.transposed @ matrix.T.toarray()
        return (self.transposed @ matrix.T).toarray()


def _decide_each(
    cells: pd.DataFrame, n_tested: np.ndarray, settings: SpecialistSettings
) -> np.ndarray:
    """is_specialist of each of the passing `cells` of several shuffles (`_passing_cells`;
    `n_tested[perm]` cells tested in shuffle perm), as `decide` calls it on each shuffle's
    tested cells alone: for a tested measure q_value <= fdr, with the p-value of the test and
    BH over that shuffle's tested cells (gated: `passing_q_values`); True otherwise."""
    if settings.measure not in TESTED_MEASURES:
        return np.ones(len(cells), dtype=bool)
    test = fisher_greater if settings.test == "fisher" else chi2_pvalue
    p_value = test(
        *(
            cells[name].to_numpy(np.int64)
            for name in ("n_texts_active", "n_texts", "n_active", "n_total")
        )
    )
    is_specialist = np.zeros(len(cells), dtype=bool)
    perm = cells["perm"].to_numpy()
    for shuffle in np.unique(perm):
        chosen = np.flatnonzero(perm == shuffle)
        q_value = passing_q_values(p_value[chosen], int(n_tested[shuffle]))
        is_specialist[chosen] = q_value <= settings.fdr
    return is_specialist


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
