"""Frequency against specialization: is specialization the property of rare features?

Owns the per-feature views of one SAE's features classified by
`explorer.analysis.specialists.classify_features` (columns sae, feature, freq_rank,
token_freq, n_active_tokens, best_score, is_specialist, kind, ...): rank ranges typed by a
user ("50-200, 400-512") and the kind counts per range, kind shares per frequency decade,
the Spearman correlation of frequency with the specialist score, the density histogram of
log frequency with dead features counted, summary statistics, the strongest features and
the coverage of the most frequent one. Pure pandas/scipy; no SQL, no drawing.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from explorer.analysis.specialists import DEAD, KINDS
from explorer.errors import InputError, quoted

MAX_RANK_RANGES = 12
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
    if len(alive) < 3:
        return {"rho": float("nan"), "p_value": float("nan"), "n": len(alive)}
    result = scipy_stats.spearmanr(alive["token_freq"], alive["best_score"])
    return {"rho": float(result.statistic), "p_value": float(result.pvalue), "n": len(alive)}


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
