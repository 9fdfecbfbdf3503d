"""Specialist measures: which features specialise in a category of text, or in a value.

Owns the measures of issue 4, computed per (SAE, feature, category) from the store's
precomputed counts (`Store.category_counts`, `Store.feature_labels`, `Store.label_counts`,
`Store.frequency_table`), vectorised over all features at once:

- the notebook score: texts of the category where the feature is *strong* minus strong texts
  outside it, where a text's activation is the mean of the feature's activations over its
  real tokens and "strong" is a threshold on it, absolute or a fraction of the feature's
  largest text activation;
- dominance: the category holds more than `share` of the texts where the feature fires and
  every other category less than `other_share`; the same on `num:` labels (`value_share`,
  `value_other_share`) gives value specialists, hence the kinds "operation" (a category whose
  texts carry `op:<category>`), "value", "operation + value" (and "category" for other
  categories) on the arithmetic corpus;
- statistics: the one-vs-rest AUROC of the text activation (texts where the feature does not
  fire tie at 0), the enrichment of firing inside vs outside the category, a one-sided
  Fisher exact (hypergeometric) or a Pearson chi-squared p-value on the 2 x 2 table of
  (category, fires), Benjamini-Hochberg q-values over every (SAE, feature, category) row, and
  a minimum support (the texts backing the claim).

`SpecialistSettings` picks the measure that decides `score` and `is_specialist`; every
table carries all measures, so a page can show them side by side. It runs no SQL (the store
does) and draws nothing (see `explorer.charts.specialists`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from explorer.errors import InputError, check_finite, quoted

if TYPE_CHECKING:
    from explorer.store.reader import Store

Measure = Literal["score", "dominance", "auroc", "enrichment"]
StrongMode = Literal["relative", "absolute"]
Test = Literal["fisher", "chi2"]

MEASURES: dict[Measure, str] = {
    "score": "notebook score (strong texts inside - outside)",
    "dominance": "dominance (share of the texts where it fires)",
    "auroc": "AUROC of the text activation, one vs rest",
    "enrichment": "enrichment of firing, with an FDR-controlled test",
}
VALUE_PREFIX = "num:"
OPERATION_PREFIX = "op:"
KINDS = ("general", "operation", "value", "operation + value", "category", "category + value")
DEAD = "dead"
FEATURE_KEYS = ["sae", "feature"]


@dataclass(frozen=True)
class SpecialistSettings:
    """Thresholds of the specialist measures; invalid values raise `InputError`.

    A (feature, category) is a specialist when its support (strong texts of the category for
    the notebook score, texts of the category where it fires otherwise) is >= min_support and
    - score: notebook_score >= min_score, strong meaning a text activation >=
      strong_threshold (x the feature's largest text activation when strong_mode is relative);
    - dominance: share > share and every other category's share < other_share;
    - auroc: auroc >= min_auroc and the test's q-value <= fdr;
    - enrichment: enrichment >= min_enrichment and the test's q-value <= fdr.
    Value specialists (any measure) need value_share / value_other_share on `num:` labels.
    """

    measure: Measure = "score"
    strong_mode: StrongMode = "relative"
    strong_threshold: float = 0.5
    min_score: int = 3
    share: float = 0.7
    other_share: float = 0.3
    value_share: float = 0.5
    value_other_share: float = 0.2
    min_auroc: float = 0.8
    min_enrichment: float = 2.0
    test: Test = "fisher"
    fdr: float = 0.05
    min_support: int = 3

    def __post_init__(self) -> None:
        for name, literal in (
            ("measure", Measure),
            ("strong_mode", StrongMode),
            ("test", Test),
        ):
            value = getattr(self, name)
            if value not in get_args(literal):
                raise InputError(
                    f"{name} must be one of {', '.join(get_args(literal))}; got {quoted(value)}."
                )
        for name in ("min_score", "min_support"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise InputError(f"{name} must be a whole number, got {value!r}.")
        check_finite(
            self,
            (
                "strong_threshold",
                "share",
                "other_share",
                "value_share",
                "value_other_share",
                "min_auroc",
                "min_enrichment",
                "fdr",
            ),
        )
        if self.strong_threshold <= 0 or (
            self.strong_mode == "relative" and self.strong_threshold > 1
        ):
            raise InputError(
                "strong_threshold must be in (0, 1] as a fraction of each feature's largest "
                f"text activation, got {self.strong_threshold}; use strong_mode 'absolute' "
                "for a fixed activation level."
                if self.strong_mode == "relative"
                else f"strong_threshold must be a positive activation, got {self.strong_threshold}."
            )
        if self.min_support < 1:
            raise InputError(f"min_support must be at least 1 text, got {self.min_support}.")
        for share, other in (("share", "other_share"), ("value_share", "value_other_share")):
            high, low = getattr(self, share), getattr(self, other)
            if not 0 < low < high <= 1:
                raise InputError(
                    f"Dominance needs 0 < {other} < {share} <= 1 (e.g. 0.3 and 0.7); "
                    f"got {other}={low} and {share}={high}."
                )
        if not 0.5 <= self.min_auroc <= 1:
            raise InputError(f"min_auroc must be between 0.5 (chance) and 1, got {self.min_auroc}.")
        if self.min_enrichment < 1:
            raise InputError(
                f"min_enrichment must be at least 1 (no enrichment), got {self.min_enrichment}."
            )
        if not 0 < self.fdr < 1:
            raise InputError(f"fdr must be between 0 and 1 (e.g. 0.05), got {self.fdr}.")

    @classmethod
    def field_names(cls) -> list[str]:
        return [field.name for field in fields(cls)]


@dataclass(frozen=True)
class Specialists:
    """What the specialist pages show, for one store and one `SpecialistSettings`.

    `table`: one row per (SAE, feature, category) with every measure (see `specialist_table`);
    `features`: one row per (SAE, feature), dead features included (see `classify_features`);
    `operation_categories`: the categories whose texts carry `op:<category>`.
    """

    settings: SpecialistSettings
    table: pd.DataFrame
    features: pd.DataFrame
    operation_categories: frozenset[str]


def benjamini_hochberg(p_values: np.ndarray | pd.Series) -> np.ndarray:
    """Benjamini-Hochberg q-values (adjusted p-values) of all `p_values` together."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = p[order] * p.size / np.arange(1, p.size + 1)
    q_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    q = np.empty_like(p)
    q[order] = np.minimum(q_sorted, 1.0)
    return q


def fisher_greater(
    in_active: np.ndarray, n_in: np.ndarray, n_active: np.ndarray, n_total: np.ndarray
) -> np.ndarray:
    """One-sided Fisher exact p-value that the feature fires more inside the category:
    P(X >= in_active) for X hypergeometric (n_total texts, n_active firing, n_in drawn);
    exactly 1 where in_active is 0, so only the other rows are computed."""
    p = np.ones(np.shape(in_active), dtype=np.float64)
    some = in_active > 0
    p[some] = scipy_stats.hypergeom.sf(
        in_active[some] - 1, n_total[some], n_active[some], n_in[some]
    )
    return p


def chi2_pvalue(
    in_active: np.ndarray, n_in: np.ndarray, n_active: np.ndarray, n_total: np.ndarray
) -> np.ndarray:
    """Pearson chi-squared p-value (1 df, no continuity correction) of the 2 x 2 table
    (in / out of the category) x (fires / not); 1 where a margin is empty."""
    a = in_active.astype(np.float64)
    b = (n_active - in_active).astype(np.float64)
    c = (n_in - in_active).astype(np.float64)
    d = (n_total - n_in - n_active + in_active).astype(np.float64)
    margins = n_in * (n_total - n_in) * n_active * (n_total - n_active).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = np.where(margins > 0, n_total * (a * d - b * c) ** 2 / margins, 0.0)
    return np.where(margins > 0, scipy_stats.chi2.sf(statistic, 1), 1.0)


def auroc_from_ranks(
    in_active: np.ndarray,
    n_in: np.ndarray,
    n_active: np.ndarray,
    n_total: np.ndarray,
    active_rank_sum: np.ndarray,
) -> np.ndarray:
    """One-vs-rest AUROC of the text activation from the rank sum of the category's active
    texts among the feature's active texts (`category_ranks`). The n_total - n_active texts
    where the feature does not fire tie at 0 below every active text; Mann-Whitney U of the
    category / (n_in x n_out). NaN when the category holds every text."""
    n_zero = (n_total - n_active).astype(np.float64)
    in_zero = (n_in - in_active).astype(np.float64)
    rank_sum = in_zero * (n_zero + 1) / 2 + in_active * n_zero + active_rank_sum
    u = rank_sum - n_in * (n_in + 1) / 2.0
    n_out = (n_total - n_in).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_out > 0, u / (n_in * n_out), np.nan)


def _top_two(frame: pd.DataFrame, keys: list[str], column: str) -> tuple[pd.Series, pd.Series]:
    """For each row: is it the group's largest `column` (the first on ties), and the largest
    value among the *other* rows of its group (0 if none)."""
    order = frame.sort_values([*keys, column], ascending=[True] * len(keys) + [False])
    position = order.groupby(keys, sort=False).cumcount()
    first = order[column].where(position == 0).groupby([order[k] for k in keys]).transform("max")
    second = order[column].where(position == 1).groupby([order[k] for k in keys]).transform("max")
    is_top = (position == 0).reindex(frame.index)
    max_other = pd.Series(
        np.where(position == 0, second.fillna(0.0), first), index=order.index
    ).reindex(frame.index)
    return is_top, max_other


def specialist_table(counts: pd.DataFrame, settings: SpecialistSettings) -> pd.DataFrame:
    """Every measure per (SAE, feature, category), from `Store.category_counts` read at
    `settings.strong_threshold`.

    Adds: n_total (texts), n_active (texts where the feature fires), strong_in / strong_out
    (strong texts inside / outside the category), notebook_score (strong_in - strong_out),
    share (of the firing texts in the category), max_other_share, auroc, enrichment
    ((in_active + 0.5) / (n_in + 1) over (out_active + 0.5) / (n_out + 1)), p_value (the
    chosen test), q_value (BH over all rows given), support (strong_in for the notebook score,
    else the category's firing texts), and score / is_specialist of the chosen measure.
    """
    table = counts.copy()
    groups = table.groupby(FEATURE_KEYS, sort=False)
    table["n_total"] = groups["n_texts"].transform("sum")
    table["n_active"] = groups["n_texts_active"].transform("sum")
    strong_total = groups["n_strong"].transform("sum")
    table["strong_in"] = table["n_strong"]
    table["strong_out"] = strong_total - table["n_strong"]
    table["notebook_score"] = table["strong_in"] - table["strong_out"]

    n_in = table["n_texts"].to_numpy(np.int64)
    in_active = table["n_texts_active"].to_numpy(np.int64)
    n_active = table["n_active"].to_numpy(np.int64)
    n_total = table["n_total"].to_numpy(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        table["share"] = np.where(n_active > 0, in_active / n_active, 0.0)
    _, table["max_other_share"] = _top_two(table, FEATURE_KEYS, "share")
    table["auroc"] = auroc_from_ranks(
        in_active, n_in, n_active, n_total, table["active_rank_sum"].to_numpy(np.float64)
    )
    out_active = n_active - in_active
    n_out = n_total - n_in
    table["enrichment"] = ((in_active + 0.5) / (n_in + 1)) / ((out_active + 0.5) / (n_out + 1))
    test = fisher_greater if settings.test == "fisher" else chi2_pvalue
    table["p_value"] = test(in_active, n_in, n_active, n_total)
    table["q_value"] = benjamini_hochberg(table["p_value"].to_numpy())

    table["support"] = table["strong_in" if settings.measure == "score" else "n_texts_active"]
    supported = table["support"] >= settings.min_support
    significant = table["q_value"] <= settings.fdr
    if settings.measure == "score":
        table["score"] = table["notebook_score"].astype(np.float64)
        chosen = table["notebook_score"] >= settings.min_score
    elif settings.measure == "dominance":
        table["score"] = table["share"]
        chosen = (table["share"] > settings.share) & (
            table["max_other_share"] < settings.other_share
        )
    elif settings.measure == "auroc":
        table["score"] = table["auroc"]
        chosen = (table["auroc"] >= settings.min_auroc) & significant
    else:
        table["score"] = table["enrichment"]
        chosen = (table["enrichment"] >= settings.min_enrichment) & significant
    table["is_specialist"] = (chosen & supported).to_numpy(bool)
    return table


def operation_categories(label_counts: pd.DataFrame) -> frozenset[str]:
    """Categories whose texts carry the label `op:<category>` (from `Store.label_counts`):
    on the arithmetic corpus, the dominant operation of each text is its category."""
    labels = label_counts["label"].astype(str)
    is_own = labels == OPERATION_PREFIX + label_counts["category"].astype(str)
    return frozenset(label_counts.loc[is_own, "category"])


def value_dominance(
    feature_labels: pd.DataFrame, n_active: pd.DataFrame, settings: SpecialistSettings
) -> pd.DataFrame:
    """Per (SAE, feature) with `num:` labels: the most frequent value among the texts where
    the feature fires (value_label), its share, the largest other share, and
    is_value_specialist (share > value_share, every other < value_other_share, and at least
    min_support texts). `feature_labels` needs each feature's two most frequent values at
    least (`Store.feature_labels` keeps five); `n_active` has sae, feature, n_active (texts
    where it fires)."""
    columns = [*FEATURE_KEYS, "value_label", "value_share", "value_other_share"]
    values = feature_labels[feature_labels["label"].str.startswith(VALUE_PREFIX)].drop(
        columns="rank", errors="ignore"
    )
    if values.empty:
        return pd.DataFrame(columns=[*columns, "value_support", "is_value_specialist"])
    values = values.merge(n_active, on=FEATURE_KEYS)
    values = values.assign(share=values["n_texts_active"] / values["n_active"])
    is_top, max_other = _top_two(values, FEATURE_KEYS, "share")
    top = values[is_top.to_numpy(bool)].assign(value_other_share=max_other[is_top])
    top = top.rename(
        columns={"label": "value_label", "share": "value_share", "n_texts_active": "value_support"}
    )
    top["is_value_specialist"] = (
        (top["value_share"] > settings.value_share)
        & (top["value_other_share"] < settings.value_other_share)
        & (top["value_support"] >= settings.min_support)
    )
    return top[[*columns, "value_support", "is_value_specialist"]].reset_index(drop=True)


def classify_features(
    table: pd.DataFrame,
    frequency: pd.DataFrame,
    values: pd.DataFrame,
    operations: frozenset[str],
) -> pd.DataFrame:
    """One row per feature of `frequency` (`Store.frequency_table`, dead features included):
    its frequency statistics, best_category / best_score (its specialist category with the
    highest score, else its highest-scoring category), is_specialist, the value columns of
    `value_dominance`, and kind: "dead" (never fires), "general", or the parts that hold
    among "operation" / "category" (a category specialist, by whether the category is an
    operation) and "value", joined with " + "."""
    best = table.sort_values(
        [*FEATURE_KEYS, "is_specialist", "score", "support"],
        ascending=[True, True, False, False, False],
    ).drop_duplicates(FEATURE_KEYS)
    best = best[[*FEATURE_KEYS, "category", "score", "is_specialist"]].rename(
        columns={"category": "best_category", "score": "best_score"}
    )
    features = frequency.merge(best, on=FEATURE_KEYS, how="left").merge(
        values, on=FEATURE_KEYS, how="left"
    )
    features["is_specialist"] = features["is_specialist"].fillna(False).astype(bool)
    features["is_value_specialist"] = features["is_value_specialist"].fillna(False).astype(bool)
    is_operation = features["best_category"].isin(operations)
    category_part = np.select(
        [features["is_specialist"] & is_operation, features["is_specialist"]],
        ["operation", "category"],
        default="",
    )
    value_part = np.where(features["is_value_specialist"], "value", "")
    kind = pd.Series(category_part, index=features.index).str.cat(
        pd.Series(value_part, index=features.index), sep=" + "
    )
    kind = kind.str.strip(" +").replace("", "general")
    features["kind"] = kind.where(features["n_active_tokens"] > 0, DEAD)
    features["specialist_category"] = features["best_category"].where(features["is_specialist"])
    return features


def category_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """Per (SAE, layer, category): n_specialists, best_feature and best_score: the
    specialist with the highest score, or the highest-scoring feature where the category has
    no specialist (ties: most support, then lowest id)."""
    ordered = table.sort_values(
        ["sae", "category", "is_specialist", "score", "support", "feature"],
        ascending=[True, True, False, False, False, True],
    )
    best = ordered.drop_duplicates(["sae", "category"])[
        ["sae", "layer", "category", "feature", "score"]
    ].rename(columns={"feature": "best_feature", "score": "best_score"})
    counts = (
        table.groupby(["sae", "category"])["is_specialist"].sum().rename("n_specialists")
    ).reset_index()
    matrix = best.merge(counts, on=["sae", "category"])
    matrix["n_specialists"] = matrix["n_specialists"].astype(np.int64)
    return matrix.sort_values(["layer", "sae", "category"], ignore_index=True)


def layer_progression(matrix: pd.DataFrame) -> pd.DataFrame:
    """Per SAE (by layer): categories_with_specialists, n_categories (the target: every
    category has one) and n_specialists (over all categories)."""
    progression = (
        matrix.assign(has=matrix["n_specialists"] > 0)
        .groupby(["sae", "layer"], dropna=False)
        .agg(
            categories_with_specialists=("has", "sum"),
            n_categories=("category", "nunique"),
            n_specialists=("n_specialists", "sum"),
        )
        .reset_index()
    )
    return progression.sort_values(["layer", "sae"], ignore_index=True)


def top_specialists(table: pd.DataFrame, per_category: int) -> pd.DataFrame:
    """Up to `per_category` specialists per category over all SAEs, best score first (then
    most support, shallowest layer, lowest id)."""
    if per_category < 1:
        raise InputError(f"Show at least 1 specialist per category, got {per_category}.")
    chosen = table[table["is_specialist"]].sort_values(
        ["category", "score", "support", "layer", "feature"],
        ascending=[True, False, False, True, True],
    )
    return chosen.groupby("category", sort=False).head(per_category).reset_index(drop=True)


def load_specialists(store: Store, settings: SpecialistSettings) -> Specialists:
    """Read what the measures need from `store` (no scan of `acts`) and compute them."""
    counts = store.category_counts(
        settings.strong_threshold, relative=settings.strong_mode == "relative"
    )
    table = specialist_table(counts, settings)
    operations = operation_categories(store.label_counts())
    n_active = table.drop_duplicates(FEATURE_KEYS)[[*FEATURE_KEYS, "n_active"]]
    values = value_dominance(store.feature_labels(VALUE_PREFIX), n_active, settings)
    features = classify_features(table, store.frequency_table(), values, operations)
    return Specialists(settings, table, features, operations)
