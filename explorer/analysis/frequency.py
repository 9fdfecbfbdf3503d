"""Frequency against specialization: is specialization the property of rare features?

Owns the per-feature views of one SAE's features classified by
`explorer.analysis.specialists.classify_features` (columns sae, feature, freq_rank,
token_freq, n_active_tokens, best_score, is_specialist, kind, ...): rank ranges typed by a
user ("50-200, 400-512") and the kind counts per range, kind shares per frequency decade,
the Spearman correlation of frequency with the specialist score, the density histogram of
log frequency with dead features counted, summary statistics, the strongest features and
the coverage of the most frequent one.

Also the answer under every measure at once (`answers_by_measure`): each measure's decision
(`explorer.analysis.specialists.decide`) re-applied to the columns it reads of the one table
of tested cells, which holds every measure and the test's p-value, so no measure is
recomputed; per measure the
Spearman rho (and p) of token frequency against the feature's best score, and the share of
specialists among the most frequent and the rarest features (`seed_rank_ranges`: the
notebooks' top 200 and bottom 112 by frequency rank); `conclusion` words the answer from the
numbers. What the page shows of one SAE under one family (its classified features, the
features found on the discovery half, the answers) is one `FrequencyView`; a build keeps
every SAE's and family's (`frequency_views`) so the page never reads the table of cells.
The chance column of the rank ranges comes from a label-permutation null
(`explorer.analysis.controls.ChanceBaseline.by_band`), passed in. Pure pandas/scipy; no SQL,
no drawing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from explorer.analysis.specialists import (
    DEAD,
    FEATURE_KEYS,
    KINDS,
    MEASURES,
    Measure,
    Specialists,
    SpecialistSettings,
    decide,
    family_names,
    in_family,
)
from explorer.errors import InputError, quoted
from explorer.number_style import P_FLOOR, p_value_text

MAX_RANK_RANGES = 12
SEED_TOP, SEED_BOTTOM = 200, 112  # the notebooks' rank ranges: most frequent and rarest
ALPHA = 0.05  # a correlation with p below this is reported as a direction
CORE_KINDS = ("general", "operation", "value", "operation + value")
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def kind_columns(kinds: pd.Series) -> list[str]:
    """The kinds to tabulate: the four of the arithmetic study always, others when present,
    in the order of `KINDS`, dead last."""
    present = set(kinds)
    return [k for k in KINDS if k in CORE_KINDS or k in present] + (
        [DEAD] if DEAD in present else []
    )


def default_rank_ranges(d_sae: int) -> str:
    """The most frequent fifth, the middle, and the rarest fifth of the features."""
    fifth = max(1, d_sae // 5)
    if d_sae < 3:
        return f"1-{d_sae}"
    return f"1-{fifth}, {fifth + 1}-{d_sae - fifth}, {d_sae - fifth + 1}-{d_sae}"


def parse_rank_ranges(text: str, max_rank: int) -> list[tuple[int, int]]:
    """Ranges of frequency ranks such as "50-200, 400-512" (1 = the most frequent feature);
    a single number is a range of one. Raises `InputError` saying what to type instead."""
    parts = [part for part in re.split(r"[,;]", text) if part.strip()]
    if not parts:
        raise InputError(f"Give at least one rank range such as 1-{min(100, max_rank)}.")
    if len(parts) > MAX_RANK_RANGES:
        raise InputError(f"Give at most {MAX_RANK_RANGES} rank ranges, got {len(parts)}.")
    ranges = []
    for part in parts:
        match = _RANGE.match(part)
        if match is None:
            raise InputError(
                f"{quoted(part.strip(), 40)} is not a rank range: write FIRST-LAST, e.g. 50-200, "
                "and separate ranges with commas."
            )
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if not 1 <= first <= last <= max_rank:
            raise InputError(
                f"Rank range {first}-{last} must satisfy 1 <= first <= last <= {max_rank} "
                "(the SAE's number of features)."
            )
        ranges.append((first, last))
    return ranges


def _counts_with_shares(grouped: pd.DataFrame, label: str, kinds: list[str]) -> pd.DataFrame:
    """Rows of `grouped` (label, kind) -> wide counts per kind, n_features and % columns."""
    counts = pd.crosstab(grouped[label], grouped["kind"]).reindex(columns=kinds, fill_value=0)
    counts.columns.name = None
    counts.insert(0, "n_features", counts.sum(axis=1))
    for kind in kinds:
        counts[f"% {kind}"] = (
            100.0 * counts[kind] / counts["n_features"].where(counts["n_features"] > 0)
        )
    return counts


def rank_band_counts(features: pd.DataFrame, ranges: list[tuple[int, int]]) -> pd.DataFrame:
    """Per rank range (one SAE's features): band ("50-200"), n_features, the count of each
    kind and its percentage of the band. Ranges may overlap; each is counted on its own."""
    kinds = kind_columns(features["kind"])
    rows = []
    for first, last in ranges:
        inside = features[features["freq_rank"].between(first, last)]
        rows.append(inside.assign(band=f"{first}-{last}")[["band", "kind"]])
    bands = [f"{first}-{last}" for first, last in ranges]
    table = _counts_with_shares(pd.concat(rows, ignore_index=True), "band", kinds)
    table = table.reindex(pd.Index(list(dict.fromkeys(bands)), name="band")).fillna(0)
    return table.reset_index()


def frequency_band(token_freq: pd.Series) -> pd.Series:
    """The decade of each token frequency ("1e-03 - 1e-02"), or "dead" for 0."""
    with np.errstate(divide="ignore"):
        decade = np.floor(np.log10(token_freq.to_numpy(np.float64)))
    labels = [
        DEAD if not np.isfinite(d) else f"1e{int(d):+03d} - 1e{int(d) + 1:+03d}" for d in decade
    ]
    return pd.Series(labels, index=token_freq.index)


def kind_by_frequency_band(features: pd.DataFrame) -> pd.DataFrame:
    """Long table per (frequency decade, kind): band, band_low (the decade's lower token
    frequency, 0 for dead), kind, n_features, pct (of the band's features)."""
    bands = features.assign(band=frequency_band(features["token_freq"]))
    with np.errstate(divide="ignore"):
        low = np.where(
            bands["token_freq"] > 0,
            10.0 ** np.floor(np.log10(bands["token_freq"].where(bands["token_freq"] > 0, 1.0))),
            0.0,
        )
    bands["band_low"] = low
    counts = bands.groupby(["band", "band_low", "kind"]).size().rename("n_features").reset_index()
    totals = counts.groupby("band")["n_features"].transform("sum")
    counts["pct"] = 100.0 * counts["n_features"] / totals
    return counts.sort_values(["band_low", "kind"], ignore_index=True)


def frequency_specialization_correlation(features: pd.DataFrame) -> dict[str, float]:
    """Spearman's rho (and its two-sided p-value) between token frequency and the specialist
    score over the features that fire; n is how many. NaN when fewer than 3 features."""
    alive = features[(features["token_freq"] > 0) & features["best_score"].notna()]
    rho, p_value = spearman(alive["token_freq"], alive["best_score"])
    return {"rho": rho, "p_value": p_value, "n": len(alive)}


def spearman(x: pd.Series, y: pd.Series) -> tuple[float, float]:
    """Spearman's rho of `x` and `y` and its two-sided p-value, computed as
    `scipy.stats.spearmanr` does (Pearson's r of the average ranks; p from Student's t with
    n - 2 degrees of freedom), without importing scipy.stats (+60 MB of a store page's
    server, where scipy.special's t distribution is +13 MB). NaN for fewer than 3 pairs or a
    constant input."""
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return float("nan"), float("nan")
    from scipy import special

    ranks = np.vstack([x.rank(method="average"), y.rank(method="average")])  # [2, n]
    rho = np.corrcoef(ranks)[1, 0]
    dof = len(x) - 2
    with np.errstate(divide="ignore"):  # |rho| = 1: t is infinite and p is 0
        t = rho * np.sqrt(max(dof / ((rho + 1.0) * (1.0 - rho)), 0.0))
    return float(rho), float(2 * special.stdtr(dof, -abs(t)))


def frequency_histogram(features: pd.DataFrame, n_bins: int = 20) -> pd.DataFrame:
    """Counts of features per bin of log10 token frequency (equal widths between the rarest
    and the most frequent feature that fires), after a first row for dead features: bin
    (label), low, high (token frequencies; 0 for dead), n_features."""
    if n_bins < 1:
        raise InputError(f"A histogram needs at least 1 bin, got {n_bins}.")
    freq = features["token_freq"].to_numpy(np.float64)
    alive = np.log10(freq[freq > 0])
    rows = [{"bin": DEAD, "low": 0.0, "high": 0.0, "n_features": int((freq <= 0).sum())}]
    if alive.size:
        low, high = alive.min(), alive.max()
        edges = np.linspace(low, high if high > low else low + 1.0, n_bins + 1)
        counts, _ = np.histogram(alive, bins=edges)
        for left, right, count in zip(edges[:-1], edges[1:], counts, strict=True):
            rows.append(
                {
                    "bin": f"{10**left:.1e} - {10**right:.1e}",
                    "low": 10**left,
                    "high": 10**right,
                    "n_features": int(count),
                }
            )
    return pd.DataFrame(rows)


def frequency_summary(features: pd.DataFrame) -> dict[str, float]:
    """n_features, n_dead, n_alive, n_specialists, pct_specialists (of the alive),
    median_token_freq (alive), median_rank_specialists / median_rank_general (frequency rank;
    NaN when there are none)."""
    alive = features[features["n_active_tokens"] > 0]
    specialists = alive[alive["kind"] != "general"]
    general = alive[alive["kind"] == "general"]
    return {
        "n_features": len(features),
        "n_dead": len(features) - len(alive),
        "n_alive": len(alive),
        "n_specialists": len(specialists),
        "pct_specialists": 100.0 * len(specialists) / len(alive) if len(alive) else float("nan"),
        "median_token_freq": float(alive["token_freq"].median()),
        "median_rank_specialists": float(specialists["freq_rank"].median()),
        "median_rank_general": float(general["freq_rank"].median()),
    }


def strongest_features(features: pd.DataFrame, per_sae: int) -> pd.DataFrame:
    """The `per_sae` features with the largest activation of each SAE (ties by id)."""
    if per_sae < 1:
        raise InputError(f"Show at least 1 feature per SAE, got {per_sae}.")
    ordered = features[features["max"] > 0].sort_values(
        ["layer", "sae", "max", "feature"], ascending=[True, True, False, True]
    )
    return ordered.groupby("sae", sort=False).head(per_sae).reset_index(drop=True)


def most_frequent_coverage(features: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Per SAE its most frequent feature (freq_rank 1): sae, layer, feature, token_freq,
    text_freq and one column per category with the share of the category's texts it fires
    on (from the specialist table's n_texts_active / n_texts)."""
    top = features[features["freq_rank"] == 1][
        ["sae", "layer", "feature", "token_freq", "text_freq"]
    ]
    rows = table.merge(top[["sae", "feature"]], on=["sae", "feature"])
    coverage = (
        rows.assign(coverage=rows["n_texts_active"] / rows["n_texts"])
        .pivot(index=["sae", "feature"], columns="category", values="coverage")
        .reset_index()
    )
    coverage.columns.name = None
    merged = top.merge(coverage, on=["sae", "feature"], how="left")
    return merged.sort_values(["layer", "sae"], ignore_index=True)


# --- the answer under every measure ---------------------------------------------------------

# What a measure's decision reads of a tested cell (`specialists.decide`): its effect sizes,
# its support counts and the test's p-value. A decision under another measure copies only
# these, not the whole table of cells.
DECISION_COLUMNS = [
    "selectivity", "notebook_score", "share", "max_other_share", "auroc", "enrichment",
    "strong_in", "n_texts_active", "p_value",
]  # fmt: skip
CELL_COLUMNS = [*FEATURE_KEYS, "family"]


def seed_rank_ranges(d_sae: int) -> list[tuple[int, int]]:
    """The notebooks' frequency-rank ranges: the `SEED_TOP` most frequent and the
    `SEED_BOTTOM` rarest features (each cut to the SAE's size; they may overlap on a small
    SAE)."""
    return [(1, min(SEED_TOP, d_sae)), (max(1, d_sae - SEED_BOTTOM + 1), d_sae)]


def decided_cells(
    table: pd.DataFrame, settings: SpecialistSettings, measure: Measure
) -> pd.DataFrame:
    """sae, feature, family, score and is_specialist of every tested cell of `table`
    (`Specialists.table`) as `measure` decides it with the other `settings` unchanged (BH
    q-values over every cell of `table`)."""
    chosen = replace(settings, measure=measure)
    cells = table[[*CELL_COLUMNS, *DECISION_COLUMNS]].copy()
    cells["support"] = cells["strong_in" if measure == "score" else "n_texts_active"]
    return decide(cells, chosen)[[*CELL_COLUMNS, "score", "is_specialist"]]


def best_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """sae, feature, best_score and is_specialist of each feature of `decided_cells`: the
    score of its best cell (specialist cells first, then the highest score)."""
    ordered = cells.sort_values(
        [*FEATURE_KEYS, "is_specialist", "score"], ascending=[True, True, False, False]
    )
    best = ordered.drop_duplicates(FEATURE_KEYS)[[*FEATURE_KEYS, "score", "is_specialist"]]
    return best.rename(columns={"score": "best_score"})


def with_best_cells(features: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """`features` with best_score and is_specialist from `best` (`best_cells`): NaN and False
    for a feature without a tested cell."""
    base = features.drop(columns=["best_score", "is_specialist"], errors="ignore")
    merged = base.merge(best, on=FEATURE_KEYS, how="left")
    merged["is_specialist"] = merged["is_specialist"].fillna(False).astype(bool)
    return merged


def features_under_measure(
    table: pd.DataFrame,
    features: pd.DataFrame,
    settings: SpecialistSettings,
    measure: Measure,
    family: str | None = None,
) -> pd.DataFrame:
    """`features` (sae, feature, token_freq, freq_rank, n_active_tokens, ...) with best_score
    and is_specialist as `measure` would give them with the other `settings` unchanged: the
    measure's decision on `table` (`Specialists.table`, every tested cell with every measure
    and the p-value); best_score is the score of the feature's best cell (specialist cells
    first, then the highest score), NaN without a tested cell. With `family`, only that
    family's cells count, after the decision over every cell of `table`."""
    cells = decided_cells(table, settings, measure)
    if family is not None:
        cells = cells[cells["family"] == family]
    return with_best_cells(features, best_cells(cells))


def specialist_share(features: pd.DataFrame, first: int, last: int) -> float:
    """Percentage of the live features with frequency rank in [first, last] that are
    specialists (NaN when the range holds no live feature)."""
    inside = features[features["freq_rank"].between(first, last) & (features["token_freq"] > 0)]
    return 100.0 * float(inside["is_specialist"].mean()) if len(inside) else float("nan")


def conclusion(measure: Measure, rho: float, p_value: float, alpha: float = ALPHA) -> str:
    """The answer one measure gives, in words, from Spearman's rho of token frequency
    against the measure's best score and its p-value (`p_value_words`)."""
    name = MEASURES[measure]
    if np.isnan(rho):
        return f"Under {name}, too few scored features to tell."
    numbers = f"rho = {rho:+.2f}, p {p_value_words(p_value)}"
    if p_value >= alpha:
        return f"Under {name}, no monotone relation between frequency and score: {numbers}."
    if rho < 0:
        return f"Under {name}, rarer features score as more specialised: {numbers}."
    return f"Under {name}, more frequent features score as more specialised: {numbers}."


def p_value_words(p_value: float) -> str:
    """What follows "p" in a sentence: "= 0.042", "= 3.1e-05", or "< 1e-300" for a p-value
    that underflowed to 0 (a correlation over tens of thousands of features), never "= 0"
    (`explorer.number_style.p_value_text`)."""
    text = p_value_text(p_value)
    return text if p_value < P_FLOOR else f"= {text}"


def measure_answer(measure: Measure, under: pd.DataFrame, d_sae: int) -> dict:
    """One row of `answers_by_measure` from `under` (one SAE's features with the measure's
    best_score and is_specialist, `features_under_measure`)."""
    (top_first, top_last), (bottom_first, bottom_last) = seed_rank_ranges(d_sae)
    correlation = frequency_specialization_correlation(under)
    return {
        "measure": measure,
        "name": MEASURES[measure],
        "rho": correlation["rho"],
        "p_value": correlation["p_value"],
        "n": correlation["n"],
        "n_specialists": int(under["is_specialist"].sum()),
        "pct_top": specialist_share(under, top_first, top_last),
        "pct_bottom": specialist_share(under, bottom_first, bottom_last),
        "top": f"{top_first}-{top_last}",
        "bottom": f"{bottom_first}-{bottom_last}",
        "conclusion": conclusion(measure, correlation["rho"], correlation["p_value"]),
    }


def answers_by_measure(
    table: pd.DataFrame,
    features: pd.DataFrame,
    settings: SpecialistSettings,
    d_sae: int,
    family: str | None = None,
) -> pd.DataFrame:
    """One row per measure of `MEASURES` for one SAE's `features` (`table`: every tested cell
    of every SAE, as `load_specialists` decides over all of them):
    measure, name, rho, p_value, n (features that fire and have a tested cell),
    n_specialists, pct_top and pct_bottom (specialists among the live features of the two
    `seed_rank_ranges`), top and bottom (those ranges as "1-200"), conclusion. With
    `family`, a feature's best score and specialist flag come from that family's cells only
    (decided over every cell, as `features_under_measure`)."""
    rows = [
        # the decision over every SAE's cells: BH q-values are over all tested cells
        measure_answer(
            measure, features_under_measure(table, features, settings, measure, family), d_sae
        )
        for measure in MEASURES
    ]
    return pd.DataFrame(rows)


# --- what the page shows of one SAE and family ----------------------------------------------


@dataclass(frozen=True)
class FrequencyView:
    """What the frequency page shows of one SAE under one family of categories.

    `features`: the SAE's features classified by the family's cells alone
    (`specialists.in_family`); `discovered`: sae, feature, discovered and replicated of the
    features that are a specialist of one of the family's categories on the discovery half
    of the texts (replicated: of one of them again on the other half; the input of
    `band_replication`); `answers`: `answers_by_measure` of the features under the family.
    """

    features: pd.DataFrame
    discovered: pd.DataFrame
    answers: pd.DataFrame


def discovered_features(table: pd.DataFrame) -> pd.DataFrame:
    """sae, feature, discovered (True) and replicated (any of its discovery-half cells found
    again) of each feature with a discovery-half specialist cell in `table`: what
    `band_replication` counts, one row per feature instead of one per cell."""
    found = table[table["discovered"]]
    per_feature = found.groupby(FEATURE_KEYS, as_index=False, sort=True)["replicated"].any()
    return per_feature.assign(discovered=True)[[*FEATURE_KEYS, "discovered", "replicated"]]


def frequency_view(result: Specialists, sae: str, family: str, d_sae: int) -> FrequencyView:
    """The `FrequencyView` of `sae` (with `d_sae` features) under `family`, from the
    specialists of every family (`result`, whose decisions ran over every cell)."""
    chosen = in_family(result, family)
    features = chosen.features[chosen.features["sae"] == sae].reset_index(drop=True)
    cells = chosen.table[chosen.table["sae"] == sae]
    answers = answers_by_measure(result.table, features, result.settings, d_sae, family)
    return FrequencyView(features, discovered_features(cells), answers)


def frequency_views(result: Specialists, d_saes: Mapping[str, int]) -> dict[str, pd.DataFrame]:
    """The `FrequencyView` of every SAE of `d_saes` ({sae: d_sae}) under every family of
    `result`, stacked: `features` and `discovered` with a family column, `answers` with sae
    and family columns. Each measure is decided once over every cell (not once per SAE and
    family, as `frequency_view` does), so a build keeps them all in a few seconds."""
    families = family_names(result.categories)
    decided = {
        measure: decided_cells(result.table, result.settings, measure) for measure in MEASURES
    }
    features, discovered, answers = [], [], []
    for family in families:
        chosen = in_family(result, family)
        features.append(chosen.features.assign(family=family))
        discovered.append(discovered_features(chosen.table).assign(family=family))
        best = {
            measure: best_cells(cells[cells["family"] == family])
            for measure, cells in decided.items()
        }
        for sae, d_sae in d_saes.items():
            own = chosen.features[chosen.features["sae"] == sae].reset_index(drop=True)
            rows = [
                measure_answer(measure, with_best_cells(own, best[measure]), d_sae)
                for measure in MEASURES
            ]
            answers.append(pd.DataFrame(rows).assign(sae=sae, family=family))
    return {
        "features": pd.concat(features, ignore_index=True),
        "discovered": pd.concat(discovered, ignore_index=True),
        "answers": pd.concat(answers, ignore_index=True),
    }


def view_of(frames: Mapping[str, pd.DataFrame], sae: str, family: str) -> FrequencyView:
    """The `FrequencyView` of `sae` under `family` cut from `frequency_views`' frames."""

    def cut(frame: pd.DataFrame, drop: list[str]) -> pd.DataFrame:
        rows = frame[(frame["sae"] == sae) & (frame["family"] == family)]
        return rows.drop(columns=drop).reset_index(drop=True)

    return FrequencyView(
        cut(frames["features"], ["family"]),
        cut(frames["discovered"], ["family"]),
        cut(frames["answers"], ["sae", "family"]),
    )


ChanceByBand = Callable[[pd.DataFrame], pd.DataFrame]  # (sae, feature, band) -> band, chance_*


def band_chance(banded: pd.DataFrame, chance_by_band: ChanceByBand) -> pd.DataFrame:
    """Per band of `banded` (live features with sae, feature, band and is_specialist; bands in
    order of first appearance): band, n_live, n_specialists, chance_mean and chance_p95 (the
    band's specialists by chance, from `chance_by_band`, e.g. `ChanceBaseline.by_band`) and
    beats_chance (observed above the 95th percentile)."""
    order = list(dict.fromkeys(banded["band"]))
    observed = banded.groupby("band", sort=False).agg(
        n_live=("feature", "size"), n_specialists=("is_specialist", "sum")
    )
    chance = chance_by_band(banded[[*FEATURE_KEYS, "band"]]).set_index("band")
    table = observed.reindex(order).join(chance[["chance_mean", "chance_p95"]], how="left")
    table = table.fillna({"chance_mean": 0.0, "chance_p95": 0.0})
    table["n_specialists"] = table["n_specialists"].astype(np.int64)
    table["beats_chance"] = table["n_specialists"] > table["chance_p95"]
    return table.rename_axis("band").reset_index()


def rank_band_chance(
    features: pd.DataFrame, ranges: list[tuple[int, int]], chance_by_band: ChanceByBand
) -> pd.DataFrame:
    """`band_chance` of each rank range of live features (band "50-200"), each range asked on
    its own so ranges may overlap; a range without a live feature has zeros."""
    live = features[features["token_freq"] > 0]
    rows = []
    for first, last in ranges:
        band = f"{first}-{last}"
        inside = live[live["freq_rank"].between(first, last)].assign(band=band)
        if inside.empty:
            rows.append(pd.DataFrame([{"band": band, "n_live": 0, "n_specialists": 0,
                                       "chance_mean": 0.0, "chance_p95": 0.0,
                                       "beats_chance": False}]))  # fmt: skip
        else:
            rows.append(band_chance(inside, chance_by_band))
    return pd.concat(rows, ignore_index=True)


def band_replication(
    table: pd.DataFrame, features: pd.DataFrame, ranges: list[tuple[int, int]]
) -> pd.DataFrame:
    """Per rank range (band "50-200") of the features in `features` (one SAE): n_discovered,
    the features that are a specialist of some category of `table` (the specialist cells,
    with the split-half `discovered` and `replicated` columns of `specialists.replicate`) on
    the discovery half of the texts; n_replicated, how many of them are a specialist of the
    same category again on the replication half; replication_pct (NaN without any)."""
    found = table[table["discovered"]].merge(features[["sae", "feature", "freq_rank"]])
    per_feature = found.groupby(["sae", "feature", "freq_rank"], as_index=False)["replicated"].any()
    rows = []
    for first, last in ranges:
        inside = per_feature[per_feature["freq_rank"].between(first, last)]
        discovered, replicated = len(inside), int(inside["replicated"].sum())
        rows.append(
            {
                "band": f"{first}-{last}",
                "n_discovered": discovered,
                "n_replicated": replicated,
                "replication_pct": 100.0 * replicated / discovered if discovered else np.nan,
            }
        )
    return pd.DataFrame(rows)


def decade_band_chance(features: pd.DataFrame, chance_by_band: ChanceByBand) -> pd.DataFrame:
    """`band_chance` of the live features per decade of token frequency (`frequency_band`),
    rarest first, with band_low (the decade's lower token frequency)."""
    live = features[features["token_freq"] > 0].sort_values("token_freq")
    banded = live.assign(band=frequency_band(live["token_freq"]))
    table = band_chance(banded, chance_by_band)
    lows = banded.groupby("band")["token_freq"].min()
    table.insert(1, "band_low", 10.0 ** np.floor(np.log10(table["band"].map(lows))))
    return table


@dataclass(frozen=True)
class BandTables:
    """The frequency page's tables of bands of one `FrequencyView` against its family's null:
    `rank_chance`, per rank range the specialists against chance (`rank_band_chance`) with
    their split-half replication (`band_replication`); `rank_counts`, the kinds per rank range
    (`rank_band_counts`); `kinds_by_band`, the kinds per decade of token frequency
    (`kind_by_frequency_band`); `decade_chance`, the specialists per decade against chance
    (`decade_band_chance`, without its sort key)."""

    rank_chance: pd.DataFrame
    rank_counts: pd.DataFrame
    kinds_by_band: pd.DataFrame
    decade_chance: pd.DataFrame


def band_tables(
    view: FrequencyView, chance_by_band: ChanceByBand, ranges: list[tuple[int, int]]
) -> BandTables:
    """`BandTables` of `view` under the null's `chance_by_band` (`ChanceBaseline.by_band` of
    the view's family) and the rank `ranges`."""
    features = view.features
    chance = rank_band_chance(features, ranges, chance_by_band).merge(
        band_replication(view.discovered, features, ranges), on="band"
    )
    return BandTables(
        rank_chance=chance,
        rank_counts=rank_band_counts(features, ranges),
        kinds_by_band=kind_by_frequency_band(features),
        decade_chance=decade_band_chance(features, chance_by_band).drop(columns="band_low"),
    )
