"""Specialist measures: which features specialise in a category of text, and whether it holds.

Owns the measures, computed per (SAE, feature, family, category) from every feature's text
activations (`feature_text`: a text's activation is the sum of the feature's activations
over its tokens / its tokens), vectorised as a sparse features x texts matrix times a texts x
categories one-hot of each family (`explorer.analysis.families`):

- selectivity (the default): the feature's share of its active texts inside the category
  against the category's share of the family's texts, (precision - base) / (1 - base), with a
  one-sided Fisher exact test, Benjamini-Hochberg q-values and a minimum support;
- the notebook score (count difference): strong texts inside minus strong texts outside;
- dominance: the share of its active texts in the category, every other category below a
  share; AUROC of the text activation, one vs rest; enrichment of firing;
- replication: the measure on a discovery half of each category's texts (split by a hash of
  text_id), re-tested on the other half;
- token confound: the AUROC of the frequency of the specialist's top enriched token in a text
  beside the feature's own AUROC, and whether that one token explains it;
- the operation family scored at the `=` of each arithmetic text instead of over the whole
  text (`operation_position`), so a detector of the operator token does not pass as a
  specialist of the operation.

Only (feature, category) cells with at least `min_support` active texts in the category are
tested (and corrected for). Every measure, test and default is defined in docs/methods.md.
The permutation null lives in `explorer.analysis.controls`. It draws nothing and runs SQL
only through `explorer.store.queries.specialists` and `Store`. scipy is imported by the
functions that compute, so a page showing the specialists a store keeps never loads it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import pandas as pd

from explorer.analysis.families import OPERATION_PREFIX, Contrast, Family, category_families
from explorer.errors import InputError, check_finite, markdown_escaped, quoted
from explorer.methods_doc import methods_link

if TYPE_CHECKING:
    from scipy import sparse

    from explorer.store.reader import Store

Measure = Literal["selectivity", "score", "dominance", "auroc", "enrichment"]
StrongMode = Literal["relative", "absolute"]
Test = Literal["fisher", "chi2"]
OperationPosition = Literal["text", "equals"]
EQUALS_TOKEN = "="


@dataclass(frozen=True)
class MeasureInfo:
    """What the page says about one measure: its name, one sentence, its formula, and the
    anchor of its section in docs/methods.md."""

    name: str
    sentence: str
    formula: str
    anchor: str

    @property
    def help(self) -> str:
        """The help popover text: the sentence, the formula and where it is defined."""
        return f"{self.sentence}\n\n`{self.formula}`\n\nDefined in {methods_link(self.anchor)}."


MEASURE_INFO: dict[Measure, MeasureInfo] = {
    "selectivity": MeasureInfo(
        "selectivity (share of its active texts in the category, against chance)",
        "How much more of the feature's active texts fall in the category than the category's "
        "share of its family would give, scaled so 0 is chance and 1 is every active text "
        "inside; a specialist also passes a one-sided Fisher test (BH FDR) and a minimum "
        "support.",
        "selectivity = (k/a - n/N) / (1 - n/N); k active texts in the category, a active "
        "texts in the family, n texts of the category, N texts of the family",
        "selectivity",
    ),
    "score": MeasureInfo(
        "notebook score (count difference)",
        "Strong texts of the category minus strong texts outside it; a raw count, so large "
        "categories score higher.",
        "notebook_score = strong_in - strong_out; strong: text activation >= threshold",
        "notebook-score",
    ),
    "dominance": MeasureInfo(
        "dominance (share of the texts where it fires)",
        "The category holds more than a share of the feature's active texts and every other "
        "category of the family less than another.",
        "share = k / a > share; every other category's share < other_share",
        "dominance",
    ),
    "auroc": MeasureInfo(
        "AUROC of the text activation, one vs rest",
        "How well the feature's text activation ranks the category's texts above the rest of "
        "the family (texts where it is silent tie at 0), with the Fisher test's BH q-value.",
        "auroc = U / (n (N - n)), U the Mann-Whitney statistic of the category's texts",
        "auroc",
    ),
    "enrichment": MeasureInfo(
        "enrichment of firing, with an FDR-controlled test",
        "The rate at which the feature fires on the category's texts over the rate on the "
        "rest of the family (with +0.5 / +1 smoothing), with the Fisher test's BH q-value.",
        "enrichment = ((k + 0.5) / (n + 1)) / ((a - k + 0.5) / (N - n + 1))",
        "enrichment",
    ),
}
MEASURES: dict[Measure, str] = {measure: info.name for measure, info in MEASURE_INFO.items()}
KINDS = ("general", "operation", "value", "operation + value", "category", "category + value")
DEAD = "dead"
FEATURE_KEYS = ["sae", "feature"]
CELL_KEYS = ["sae", "feature", "family", "category"]
REPLICATION_SALT = 0x9E3779B97F4A7C15


def _bounded(default: Any, low: float | None, high: float | None, doc: str) -> Any:
    return field(default=default, metadata={"bounds": (low, high), "doc": doc})


@dataclass(frozen=True)
class SpecialistSettings:
    """Settings of the specialist measures and their controls; invalid values raise
    `InputError`. Each numeric field carries its bounds (`bounds()`), which the sidebar, the
    URL parser and this validation all read; docs/methods.md defines each of them.

    A (feature, category) is tested when it fires on at least min_support texts of the
    category; a tested cell is a specialist when
    - selectivity: selectivity >= min_selectivity and q_value <= fdr;
    - score: notebook_score >= min_score and strong_in >= min_support;
    - dominance: share > share and every other category's share < other_share;
    - auroc: auroc >= min_auroc and q_value <= fdr;
    - enrichment: enrichment >= min_enrichment and q_value <= fdr.
    """

    measure: Measure = "selectivity"
    contrast: Contrast = "family"
    min_support: int = _bounded(5, 1, 100_000, "active texts of the category to test a cell")
    min_selectivity: float = _bounded(0.5, 0.0, 1.0, "selectivity of a specialist")
    strong_mode: StrongMode = "relative"
    strong_threshold: float = _bounded(0.5, 0.0, None, "a strong text's activation")
    min_score: int = _bounded(3, -100_000, 100_000, "notebook score of a specialist")
    share: float = _bounded(0.7, 0.0, 1.0, "dominance: the category's share above")
    other_share: float = _bounded(0.3, 0.0, 1.0, "dominance: every other share below")
    min_auroc: float = _bounded(0.8, 0.5, 1.0, "AUROC of a specialist")
    min_enrichment: float = _bounded(2.0, 1.0, None, "enrichment of a specialist")
    test: Test = "fisher"
    fdr: float = _bounded(0.05, 0.0001, 0.5, "Benjamini-Hochberg false discovery rate")
    permutations: int = _bounded(200, 20, 1000, "label permutations of the chance baseline")
    seed: int = _bounded(0, 0, 2**31 - 1, "seed of the label permutations")
    token_share: float = _bounded(0.5, 0.0, 1.0, "token detector: top token's share above")
    token_margin: float = _bounded(0.05, 0.0, 0.5, "token detector: AUROC margin")
    operation_position: OperationPosition = "text"
    """Where the operation family is scored: over the whole text, or at its `=` tokens."""

    def __post_init__(self) -> None:
        for name, options in self.choices().items():
            value = getattr(self, name)
            if value not in options:
                raise InputError(
                    f"{markdown_escaped(name)} must be one of "
                    f"{markdown_escaped(', '.join(options))}; got {quoted(value)}."
                )
        for name in ("min_support", "min_score", "permutations", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise InputError(
                    f"{markdown_escaped(name)} must be a whole number, got "
                    f"{markdown_escaped(repr(value))}."
                )
        check_finite(self, tuple(name for name in self.bounds() if name not in ("seed",)))
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
        if not 0 < self.other_share < self.share <= 1:
            raise InputError(
                "Dominance needs 0 < other_share < share <= 1 (e.g. 0.3 and 0.7); "
                f"got other_share={self.other_share} and share={self.share}."
            )
        if not 0.5 <= self.min_auroc <= 1:
            raise InputError(f"min_auroc must be between 0.5 (chance) and 1, got {self.min_auroc}.")
        if self.min_enrichment < 1:
            raise InputError(
                f"min_enrichment must be at least 1 (no enrichment), got {self.min_enrichment}."
            )
        if not 0 < self.fdr < 1:
            raise InputError(f"fdr must be between 0 and 1 (e.g. 0.05), got {self.fdr}.")
        for name, (low, high) in self.bounds().items():
            value = getattr(self, name)
            if (low is not None and value < low) or (high is not None and value > high):
                upper = "inf" if high is None else high
                raise InputError(
                    f"{markdown_escaped(name)} must lie in [{low}, {upper}], got "
                    f"{markdown_escaped(value)}."
                )

    @classmethod
    def field_names(cls) -> list[str]:
        return [item.name for item in fields(cls)]

    @classmethod
    def choices(cls) -> dict[str, tuple[str, ...]]:
        """The options of every setting that is a choice."""
        literals = {
            "measure": Measure,
            "contrast": Contrast,
            "strong_mode": StrongMode,
            "test": Test,
            "operation_position": OperationPosition,
        }
        return {name: get_args(literal) for name, literal in literals.items()}

    @classmethod
    def bounds(cls) -> dict[str, tuple[float | None, float | None]]:
        """(low, high) of every numeric setting, inclusive; None: unbounded."""
        return {item.name: item.metadata["bounds"] for item in fields(cls) if item.metadata}


@dataclass(frozen=True)
class TextActivations:
    """Every live feature's text activations: `matrix` is features x texts (csr, 0 where the
    feature is silent); `features` (sae, layer, feature, max_text_act) names its rows and
    `texts` (text_id, category, source, labels, positions 0..n-1) its columns."""

    features: pd.DataFrame
    texts: pd.DataFrame
    matrix: sparse.csr_matrix  # [features, texts] float64

    @classmethod
    def from_saes(
        cls, saes: Iterable[tuple[str, int, Mapping[str, np.ndarray]]], texts: pd.DataFrame
    ) -> TextActivations:
        """From `queries.specialists.text_activations` (per SAE: name, layer and its rows,
        sorted by feature and text) and a `labelled_texts` frame; a feature's rows are its
        row of the matrix, built SAE by SAE."""
        from scipy import sparse

        texts = texts.reset_index(drop=True)
        text_ids = texts["text_id"].to_numpy()
        matrices, frames = [], []
        for sae, layer, rows in saes:
            feature = rows["feature"].astype(np.int64)
            starts = np.flatnonzero(np.diff(feature, prepend=-1))
            matrices.append(
                sparse.csr_matrix(
                    (
                        rows["act"].astype(np.float64),
                        np.searchsorted(text_ids, rows["text_id"]),
                        np.append(starts, len(feature)),
                    ),
                    shape=(len(starts), len(texts)),
                )
            )
            frames.append(
                pd.DataFrame({"sae": sae, "layer": np.int32(layer), "feature": feature[starts]})
            )
        matrix = (
            sparse.vstack(matrices, format="csr")
            if matrices
            else sparse.csr_matrix((0, len(texts)), dtype=np.float64)
        )
        features = (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=["sae", "layer", "feature"])
        )
        features["max_text_act"] = matrix.max(axis=1).toarray().ravel()
        return cls(features, texts, matrix)

    def at_marks(self, totals: pd.DataFrame, marks: pd.DataFrame) -> TextActivations:
        """The same features and texts with each text's activation taken at its marked
        positions only (`queries.specialists.marked_activations`: the feature's summed
        activation there, and how many marked positions the text has): total / n_marks, the
        mean over those positions (0 where the feature is silent there or the text has none)."""
        from scipy import sparse

        keys = self.features[["sae", "feature"]].reset_index(drop=True).reset_index()
        rows = totals.merge(keys.rename(columns={"index": "row"}), on=["sae", "feature"])
        column = np.searchsorted(self.texts["text_id"].to_numpy(), rows["text_id"].to_numpy())
        n_marks = marks.set_index("text_id")["n_marks"].reindex(rows["text_id"]).to_numpy()
        matrix = sparse.csr_matrix(
            (rows["total"].to_numpy(np.float64) / n_marks, (rows["row"].to_numpy(), column)),
            shape=self.matrix.shape,
        )  # [features, texts]
        features = self.features.assign(max_text_act=matrix.max(axis=1).toarray().ravel())
        return TextActivations(features, self.texts, matrix)


FamilyActivations = Mapping[str, TextActivations]
"""The activations a family is scored on where they are not the text activations."""


@dataclass(frozen=True)
class Specialists:
    """What the specialist pages show, for one store and one `SpecialistSettings`.

    `table`: one row per tested (SAE, feature, family, category) with every measure and its
    controls (see `specialist_table`, `replicate`, `token_confound`); `features`: one row per
    (SAE, feature), dead features included (see `classify_features`); `categories`: family,
    category, kind, n_texts of every category; `replication`: the replication rate per
    (family, category) (`replication_rates`); `operation_categories`: the categories of the
    operation family.
    """

    settings: SpecialistSettings
    table: pd.DataFrame
    features: pd.DataFrame
    categories: pd.DataFrame
    replication: pd.DataFrame
    operation_categories: frozenset[str]


# --- tests and scores ----------------------------------------------------------------------


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
    from scipy import stats as scipy_stats

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
    from scipy import stats as scipy_stats

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
    texts among the feature's active texts. The n_total - n_active texts where the feature
    does not fire tie at 0 below every active text; Mann-Whitney U of the category /
    (n_in x n_out). NaN when the category holds every text."""
    n_zero = (n_total - n_active).astype(np.float64)
    in_zero = (n_in - in_active).astype(np.float64)
    rank_sum = in_zero * (n_zero + 1) / 2 + in_active * n_zero + active_rank_sum
    u = rank_sum - n_in * (n_in + 1) / 2.0
    n_out = (n_total - n_in).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_out > 0, u / (n_in * n_out), np.nan)


def selectivity(
    in_active: np.ndarray, n_in: np.ndarray, n_active: np.ndarray, n_total: np.ndarray
) -> np.ndarray:
    """(k/a - n/N) / (1 - n/N): 0 when the feature's active texts fall in the category at
    the category's share of the family, 1 when all of them do (negative when depleted)."""
    base = n_in / n_total.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            (n_active > 0) & (base < 1), (in_active / n_active - base) / (1 - base), np.nan
        )


# --- the per-family counts -----------------------------------------------------------------


@dataclass(frozen=True)
class PreparedFamily:
    """A family's texts (`universe`, possibly a half of it) and the feature x text matrices
    its counts need: `active` (1 where the feature fires), `strong` (1 where its text
    activation is strong) and `ranks` (the rank of each active text's activation among the
    feature's active texts of the universe, ties averaged)."""

    family: Family
    membership: sparse.csr_matrix  # [universe texts, categories]
    active: sparse.csr_matrix  # [features, universe texts]
    strong: sparse.csr_matrix  # [features, universe texts]
    ranks: sparse.csr_matrix  # [features, universe texts]
    n_active: np.ndarray  # [features]
    n_strong: np.ndarray  # [features]
    n_total: int


def prepare_family(
    acts: TextActivations,
    family: Family,
    settings: SpecialistSettings,
    keep: np.ndarray | None = None,
) -> PreparedFamily:
    """The matrices of `family` over its universe, restricted to the text positions where
    `keep` (a bool per text of `acts.texts`) is True."""
    rows = np.arange(len(family.universe))
    if keep is not None:
        rows = rows[keep[family.universe]]
    universe = family.universe[rows]
    values = acts.matrix[:, universe].tocsr()  # [features, universe texts]
    values.eliminate_zeros()
    values.sort_indices()
    row_of = np.repeat(np.arange(values.shape[0]), np.diff(values.indptr))
    active = values.copy()
    active.data = np.ones_like(active.data)
    level = settings.strong_threshold * (
        acts.features["max_text_act"].to_numpy(np.float64)
        if settings.strong_mode == "relative"
        else np.ones(values.shape[0])
    )  # [features]
    strong = values.copy()
    strong.data = (values.data >= level[row_of]).astype(np.float64)
    strong.eliminate_zeros()
    ranks = values.copy()
    ranks.data = pd.Series(values.data).groupby(row_of).rank(method="average").to_numpy()
    return PreparedFamily(
        family=family,
        membership=family.membership[rows],
        active=active,
        strong=strong,
        ranks=ranks,
        n_active=np.asarray(active.sum(axis=1)).ravel(),
        n_strong=np.asarray(strong.sum(axis=1)).ravel(),
        n_total=len(universe),
    )


def max_other_share(in_active: np.ndarray, n_active: np.ndarray) -> np.ndarray:
    """For each (feature, category) of `in_active` ([..., categories], active texts in each
    category; `n_active` [...], the feature's active texts in all): the largest share of the
    feature's active texts held by another category of the family (0 with one category)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(n_active[..., None] > 0, in_active / n_active[..., None], 0.0)
    if share.shape[-1] < 2:
        return np.zeros_like(share)
    top_two = -np.partition(-share, 1, axis=-1)[..., :2]
    is_top = share >= top_two[..., :1]
    n_top = is_top.sum(axis=-1, keepdims=True)
    return np.where(is_top & (n_top == 1), top_two[..., 1:2], top_two[..., :1])


def family_cells(
    prepared: PreparedFamily, features: pd.DataFrame, settings: SpecialistSettings
) -> pd.DataFrame:
    """The tested cells of one family: (feature, category) with at least min_support active
    texts in the category, and a rest to compare with. Columns: sae, layer, feature,
    family, category, n_texts, n_texts_active, n_total, n_active, strong_in, strong_out,
    active_rank_sum, max_other_share."""
    members = prepared.membership
    n_in = np.asarray(members.sum(axis=0)).ravel()  # [categories]
    in_active = (prepared.active @ members).toarray()  # [features, categories]
    max_other = max_other_share(in_active, prepared.n_active)
    tested = (in_active >= settings.min_support) & (n_in > 0) & (n_in < prepared.n_total)
    row, column = np.nonzero(tested)
    strong_in = (prepared.strong @ members).toarray()[row, column]
    rank_sum = (prepared.ranks @ members).toarray()[row, column]
    counts = pd.DataFrame(
        {
            "n_texts": n_in[column].astype(np.int64),
            "n_texts_active": in_active[row, column].astype(np.int64),
            "n_total": np.int64(prepared.n_total),
            "n_active": prepared.n_active[row].astype(np.int64),
            "strong_in": strong_in.astype(np.int64),
            "strong_out": (prepared.n_strong[row] - strong_in).astype(np.int64),
            "active_rank_sum": rank_sum,
            "max_other_share": max_other[row, column],
        }
    )
    categories = np.asarray(prepared.family.categories, dtype=object)
    picked = features.iloc[row]
    names = pd.DataFrame(
        {
            "sae": picked["sae"].to_numpy(),
            "layer": picked["layer"].to_numpy(),
            "feature": picked["feature"].to_numpy(np.int64),
            "family": prepared.family.name,
            "category": categories[column],
        }
    )
    return pd.concat([names, counts], axis=1)


TESTED_MEASURES = ("selectivity", "auroc", "enrichment")


def score_cells(cells: pd.DataFrame, settings: SpecialistSettings) -> pd.DataFrame:
    """Every measure of the tested `cells` (`family_cells`), the chosen test's p-value, the
    q-values (`gated_q_values`) and score / support / is_specialist of the measure."""
    table = cells.copy()
    n_in = table["n_texts"].to_numpy(np.int64)
    in_active = table["n_texts_active"].to_numpy(np.int64)
    n_active = table["n_active"].to_numpy(np.int64)
    n_total = table["n_total"].to_numpy(np.int64)
    measures = cell_measures(
        in_active,
        n_in,
        n_active,
        n_total,
        table["strong_in"].to_numpy(np.int64),
        table["strong_out"].to_numpy(np.int64),
        table["active_rank_sum"].to_numpy(np.float64),
    )
    for name, values in measures.items():
        table[name] = values
    table["support"] = table["strong_in" if settings.measure == "score" else "n_texts_active"]
    test = fisher_greater if settings.test == "fisher" else chi2_pvalue
    table["p_value"] = test(in_active, n_in, n_active, n_total)
    return decide(table, settings)


MEASURE_COLUMNS = ("notebook_score", "share", "lift", "selectivity", "auroc", "enrichment")
EFFECT_COLUMNS: dict[Measure, tuple[str, ...]] = {
    "selectivity": ("selectivity",),
    "score": ("notebook_score",),
    "dominance": ("share",),
    "auroc": ("auroc",),
    "enrichment": ("enrichment",),
}
"""The columns of `cell_measures` each measure's `passes_effect` reads."""


def cell_measures(
    in_active: np.ndarray,
    n_in: np.ndarray,
    n_active: np.ndarray,
    n_total: np.ndarray,
    strong_in: np.ndarray,
    strong_out: np.ndarray,
    active_rank_sum: np.ndarray,
    names: tuple[str, ...] = MEASURE_COLUMNS,
) -> dict[str, np.ndarray]:
    """The measures `names` (of `MEASURE_COLUMNS`: notebook_score, share, lift,
    selectivity, auroc, enrichment) of cells given by their counts (int64 arrays, one entry
    per cell; active_rank_sum float64)."""

    def share() -> np.ndarray:
        return np.where(n_active > 0, in_active / n_active, 0.0)

    def enrichment() -> np.ndarray:
        out_active = n_active - in_active
        n_out = n_total - n_in
        return ((in_active + 0.5) / (n_in + 1)) / ((out_active + 0.5) / (n_out + 1))

    formulas = {
        "notebook_score": lambda: strong_in - strong_out,
        "share": share,
        "lift": lambda: share() / (n_in / n_total),
        "selectivity": lambda: selectivity(in_active, n_in, n_active, n_total),
        "auroc": lambda: auroc_from_ranks(in_active, n_in, n_active, n_total, active_rank_sum),
        "enrichment": enrichment,
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        return {name: formulas[name]() for name in names}


def passes_effect(table: pd.DataFrame | dict[str, np.ndarray], settings: SpecialistSettings) -> Any:
    """Where the measure's own threshold and the minimum support hold (no test yet), on a
    table of cells or a dict of their columns as arrays (a Series or an array); sets the
    score column to the measure."""
    measure = settings.measure
    if measure == "selectivity":
        table["score"] = table["selectivity"]
        effect = table["selectivity"] >= settings.min_selectivity
    elif measure == "score":
        table["score"] = table["notebook_score"].astype(np.float64)
        effect = table["notebook_score"] >= settings.min_score
    elif measure == "dominance":
        table["score"] = table["share"]
        effect = (table["share"] > settings.share) & (
            table["max_other_share"] < settings.other_share
        )
    elif measure == "auroc":
        table["score"] = table["auroc"]
        effect = table["auroc"] >= settings.min_auroc
    else:
        table["score"] = table["enrichment"]
        effect = table["enrichment"] >= settings.min_enrichment
    return effect & (table["support"] >= settings.min_support)


def gated_q_values(p_value: np.ndarray, passes: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values over every tested cell, where a cell that fails the
    measure's effect or support threshold counts with p = 1: it can never be called, and the
    number of tests stays that of all tested cells (so the correction is never weaker than
    plain BH over all of them)."""
    return benjamini_hochberg(np.where(passes, p_value, 1.0))


def passing_q_values(p_value: np.ndarray, n_tested: int) -> np.ndarray:
    """`gated_q_values` of the passing cells alone, from their p-values and the number of
    tested cells: the gated cells (p = 1) rank after every passing p-value below 1 and only
    hold q-values down to 1, so the passing cells' q-values are plain BH scaled by n_tested,
    capped at 1 (bit for bit the same numbers, without sorting the gated cells)."""
    p = np.asarray(p_value, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * n_tested / np.arange(1, p.size + 1)
    q_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    q = np.empty_like(p)
    q[order] = np.minimum(q_sorted, 1.0)
    return q


def decide(table: pd.DataFrame, settings: SpecialistSettings) -> pd.DataFrame:
    """score, q_value and is_specialist of the chosen measure on a table with p_value.
    Measures with a test (selectivity, AUROC, enrichment) need q_value <= fdr, with q-values
    gated by the effect threshold (`gated_q_values`); the notebook score and dominance use
    no test (their q_value is plain BH over the p-values, for reference)."""
    passes = passes_effect(table, settings).to_numpy(bool)
    p_value = table["p_value"].to_numpy(np.float64)
    if settings.measure in TESTED_MEASURES:
        table["q_value"] = gated_q_values(p_value, passes)
        passes = passes & (table["q_value"].to_numpy() <= settings.fdr)
    else:
        table["q_value"] = benjamini_hochberg(np.nan_to_num(p_value, nan=1.0))
    table["is_specialist"] = passes
    return table


def specialist_table(
    acts: TextActivations,
    families: list[Family],
    settings: SpecialistSettings,
    keep: np.ndarray | None = None,
    scored_on: FamilyActivations | None = None,
) -> pd.DataFrame:
    """Every measure of every tested cell of every family, over the texts where `keep` is
    True (all by default); BH q-values over all tested cells of all families together. A
    family named in `scored_on` is scored on those activations (same features and texts)."""
    scored_on = scored_on or {}
    cells = [
        family_cells(
            prepare_family(scored_on.get(family.name, acts), family, settings, keep),
            acts.features,
            settings,
        )
        for family in families
    ]
    cells = [frame for frame in cells if len(frame)]
    if not cells:
        return score_cells(family_cells_empty(), settings)
    return score_cells(pd.concat(cells, ignore_index=True), settings)


def family_cells_empty() -> pd.DataFrame:
    """A `family_cells` frame without rows."""
    columns = {
        "sae": object, "layer": np.int64, "feature": np.int64, "family": object,
        "category": object, "n_texts": np.int64, "n_texts_active": np.int64,
        "n_total": np.int64, "n_active": np.int64, "strong_in": np.int64,
        "strong_out": np.int64, "active_rank_sum": np.float64, "max_other_share": np.float64,
    }  # fmt: skip
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


# --- replication ---------------------------------------------------------------------------


def discovery_half(text_ids: np.ndarray | pd.Series) -> np.ndarray:
    """True for the texts of the discovery half: the low bit of a 64-bit mix (splitmix64)
    of the text id, so the split is fixed, about even within every category, and unrelated
    to the text's content or position."""
    x = np.asarray(text_ids, dtype=np.uint64) + np.uint64(REPLICATION_SALT)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x & np.uint64(1)) == 0


def replicate(
    acts: TextActivations,
    families: list[Family],
    settings: SpecialistSettings,
    scored_on: FamilyActivations | None = None,
) -> pd.DataFrame:
    """Split replication: specialists found on the discovery half of the texts, re-tested on
    the replication half. A finding replicates when it is a specialist of the same measure on
    the replication half with the minimum support halved (rounded up) and BH q-values over
    the re-tested findings only. Columns: sae, feature, family, category, discovered (True),
    replicated, replication_score (the measure on the replication half, NaN if untested)."""
    discovery = discovery_half(acts.texts["text_id"])
    found = specialist_table(acts, families, settings, discovery, scored_on)
    found = found.loc[found["is_specialist"], CELL_KEYS]
    half = SpecialistSettings(
        **{
            **{name: getattr(settings, name) for name in settings.field_names()},
            "min_support": max(1, math.ceil(settings.min_support / 2)),
        }
    )
    retest = specialist_table(acts, families, half, ~discovery, scored_on)
    result = retest_findings(found, retest, half, CELL_KEYS, "replicated", "replication_score")
    result["discovered"] = True
    return result[[*CELL_KEYS, "discovered", "replicated", "replication_score"]]


def retest_findings(
    found: pd.DataFrame,
    retest: pd.DataFrame,
    settings: SpecialistSettings,
    on: list[str],
    replicated: str,
    score: str,
) -> pd.DataFrame:
    """`found` (findings, one row per cell) with `replicated`: whether each is a specialist
    under `settings` among the cells of `retest` (a `specialist_table` of other texts) it
    matches on the columns `on`, with BH q-values over the matched findings only; and
    `score`, the measure there (NaN where it was not tested)."""
    tested = decide(found.merge(retest.drop(columns=["q_value", "is_specialist"]), on=on), settings)
    result = found.merge(
        tested[[*CELL_KEYS, "is_specialist", "score"]].rename(
            columns={"is_specialist": replicated, "score": score}
        ),
        on=CELL_KEYS,
        how="left",
    )
    result[replicated] = result[replicated].fillna(False).astype(bool)
    return result


def replication_rates(table: pd.DataFrame) -> pd.DataFrame:
    """Per (family, category): discovered (findings on the discovery half, all SAEs),
    replicated, and replication_rate (replicated / discovered, NaN when none was found)."""
    rates = (
        table.groupby(["family", "category"], sort=True)
        .agg(discovered=("discovered", "sum"), replicated=("replicated", "sum"))
        .reset_index()
    )
    rates["discovered"] = rates["discovered"].astype(np.int64)
    rates["replicated"] = rates["replicated"].astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rates["replication_rate"] = np.where(
            rates["discovered"] > 0, rates["replicated"] / rates["discovered"], np.nan
        )
    return rates


# --- token confound ------------------------------------------------------------------------


def top_enriched_tokens(feature_tokens: pd.DataFrame, n_corpus_tokens: int) -> pd.DataFrame:
    """Per feature of `Store.feature_tokens` (one SAE): its top enriched token, the most
    frequent of its active tokens whose share of the feature's active tokens exceeds the
    token's share of the corpus (ties: lowest token id). Columns: feature, token_id, token,
    token_share (of the feature's active tokens)."""
    tokens = feature_tokens.assign(
        token_share=feature_tokens["n_active"] / feature_tokens["n_feature"],
    )
    enriched = tokens[tokens["token_share"] > tokens["n_token"] / n_corpus_tokens]
    top = enriched.sort_values(
        ["feature", "n_active", "token_id"], ascending=[True, False, True]
    ).drop_duplicates("feature")
    return top[["feature", "token_id", "token", "token_share"]].reset_index(drop=True)


def token_auroc(counts: pd.DataFrame, families: list[Family], texts: pd.DataFrame) -> pd.DataFrame:
    """One-vs-rest AUROC, within each family's universe, of a token's frequency in a text
    (its occurrences / the text's tokens; rows token_id, text_id, n of
    `queries.specialists.token_text_counts`; `texts` needs n_tokens), for every category of
    every family. The frequency is built like a text activation (a mean over the text's
    tokens), so a feature that only detects the token gets about the token's AUROC. Texts
    without the token tie at 0. Columns: token_id, family, category, token_auroc."""
    from scipy import sparse

    columns = ["token_id", "family", "category", "token_auroc"]
    token_ids = np.unique(counts["token_id"].to_numpy(np.int64))
    if not len(token_ids):
        return pd.DataFrame(columns=columns)
    row = np.searchsorted(token_ids, counts["token_id"].to_numpy(np.int64))
    column = np.searchsorted(texts["text_id"].to_numpy(), counts["text_id"].to_numpy())
    frequency = counts["n"].to_numpy(np.float64) / texts["n_tokens"].to_numpy()[column]
    matrix = sparse.csr_matrix(
        (frequency, (row, column)), shape=(len(token_ids), len(texts))
    )  # [tokens, texts]
    tokens = pd.DataFrame({"sae": "", "layer": 0, "feature": token_ids})
    as_features = TextActivations(tokens.assign(max_text_act=1.0), texts, matrix)
    settings = SpecialistSettings(min_support=1)
    frames = []
    for family in families:
        prepared = prepare_family(as_features, family, settings)
        n_in = np.asarray(prepared.membership.sum(axis=0)).ravel()  # [categories]
        in_active = (prepared.active @ prepared.membership).toarray()  # [tokens, categories]
        rank_sum = (prepared.ranks @ prepared.membership).toarray()
        auroc = auroc_from_ranks(
            in_active,
            n_in[None, :],
            prepared.n_active[:, None],
            np.int64(prepared.n_total),
            rank_sum,
        )
        frames.append(
            pd.DataFrame(
                {
                    "token_id": np.repeat(token_ids, len(family.categories)),
                    "family": family.name,
                    "category": np.tile(np.asarray(family.categories, object), len(token_ids)),
                    "token_auroc": auroc.ravel(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[columns]


def token_confound(
    table: pd.DataFrame,
    top_tokens: pd.DataFrame,
    aurocs: pd.DataFrame,
    settings: SpecialistSettings,
) -> pd.DataFrame:
    """`table` with token, token_share, token_auroc and token_explained on its specialist
    rows (NaN / False elsewhere). `top_tokens` has sae, feature, token_id, token,
    token_share (`top_enriched_tokens` per SAE), `aurocs` is `token_auroc`. A specialist is
    a token detector (token_explained) when its top enriched token makes up at least
    token_share of its active tokens and that token's presence separates the category at
    least as well as the feature's activation, up to token_margin:
    token_auroc >= auroc - token_margin."""
    specialists = table.loc[table["is_specialist"], CELL_KEYS + ["auroc"]]
    found = specialists.merge(top_tokens, on=FEATURE_KEYS, how="left").merge(
        aurocs, on=["token_id", "family", "category"], how="left"
    )
    found["token_explained"] = (found["token_share"] >= settings.token_share) & (
        found["token_auroc"] >= found["auroc"] - settings.token_margin
    )
    found = found.set_index(specialists.index)
    result = table.drop(
        columns=["token", "token_share", "token_auroc", "token_explained"], errors="ignore"
    )
    for column in ("token", "token_share", "token_auroc"):
        result[column] = found[column].reindex(result.index)
    result["token_explained"] = (
        found["token_explained"].reindex(result.index).fillna(False).astype(bool)
    )
    return result


# --- what the pages show -------------------------------------------------------------------


def operation_categories(texts: pd.DataFrame) -> frozenset[str]:
    """Categories whose texts carry the label `op:<category>` (on the arithmetic corpus, the
    dominant operation of each text is its category)."""
    labels = texts[["category", "labels"]].explode("labels")
    is_own = labels["labels"].astype(str) == OPERATION_PREFIX + labels["category"].astype(str)
    return frozenset(labels.loc[is_own, "category"])


def family_categories(families: list[Family]) -> pd.DataFrame:
    """family, kind, category, n_texts of every category of every family."""
    return pd.DataFrame(
        [
            {"family": family.name, "kind": family.kind, "category": category, "n_texts": n}
            for family in families
            for category, n in zip(
                family.categories,
                np.asarray(family.membership.sum(axis=0)).ravel().astype(np.int64),
                strict=True,
            )
        ],
        columns=["family", "kind", "category", "n_texts"],
    )


def classify_features(
    table: pd.DataFrame,
    frequency: pd.DataFrame,
    kinds: Mapping[str, str],
    operations: frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """One row per feature of `frequency` (`Store.frequency_table`, dead features included):
    its frequency statistics, best_category / best_family / best_score (its specialist cell
    with the highest score, else its highest-scoring tested cell), is_specialist (in any
    family), value_label (its best number specialist cell) and kind: "dead" (never fires),
    "general", or the parts that hold among "operation" / "category" (a specialist of an
    operation, i.e. a category of the operation family or one of `operations`, or of another
    category) and "value" (of the number family), joined with " + ". `kinds` maps each
    family's name to its kind (`Family.kind`)."""
    table = table.assign(family_kind=table["family"].map(kinds))
    is_operation = (table["family_kind"] == "category") & table["category"].isin(operations)
    table.loc[is_operation, "family_kind"] = "operation"
    ordered = table.sort_values(
        [*FEATURE_KEYS, "is_specialist", "score", "support"],
        ascending=[True, True, False, False, False],
    )
    best = ordered.drop_duplicates(FEATURE_KEYS)[
        [*FEATURE_KEYS, "family", "category", "score", "is_specialist"]
    ].rename(columns={"family": "best_family", "category": "best_category", "score": "best_score"})
    chosen = ordered[ordered["is_specialist"]]
    flags = (
        chosen.assign(kind_part=chosen["family_kind"])
        .groupby(FEATURE_KEYS)["kind_part"]
        .agg(lambda parts: set(parts))
        .rename("parts")
        .reset_index()
    )
    values = (
        chosen[chosen["family_kind"] == "value"]
        .drop_duplicates(FEATURE_KEYS)[[*FEATURE_KEYS, "category"]]
        .rename(columns={"category": "value_label"})
    )
    concept = chosen[chosen["family_kind"] != "value"].drop_duplicates(FEATURE_KEYS)
    concept = concept[[*FEATURE_KEYS, "category"]].rename(
        columns={"category": "specialist_category"}
    )
    features = (
        frequency.merge(best, on=FEATURE_KEYS, how="left")
        .merge(flags, on=FEATURE_KEYS, how="left")
        .merge(values, on=FEATURE_KEYS, how="left")
        .merge(concept, on=FEATURE_KEYS, how="left")
    )
    features["is_specialist"] = features["is_specialist"].fillna(False).astype(bool)
    parts = features["parts"].map(lambda p: p if isinstance(p, set) else set())
    category_part = np.select(
        [parts.map(lambda p: "operation" in p), parts.map(lambda p: "category" in p)],
        ["operation", "category"],
        default="",
    )
    value_part = np.where(parts.map(lambda p: "value" in p), "value", "")
    kind = pd.Series(category_part, index=features.index).str.cat(
        pd.Series(value_part, index=features.index), sep=" + "
    )
    kind = kind.str.strip(" +").replace("", "general")
    features["kind"] = kind.where(features["n_active_tokens"] > 0, DEAD)
    features["is_value_specialist"] = features["value_label"].notna()
    return features.drop(columns="parts")


FREQUENCY_COLUMNS = [  # the columns of `Store.frequency_table`
    "sae", "layer", "feature", "n_active_tokens", "token_freq", "n_active_texts", "text_freq",
    "freq_rank", "mean_active", "max", "max_text_act",
]  # fmt: skip
FAMILY_KIND_ORDER = {"category": 0, "operation": 1, "value": 2}


def family_names(categories: pd.DataFrame) -> list[str]:
    """The families of `Specialists.categories` in the order the pages offer them: category
    families (the bundled prose categories, a user corpus's own) first, then operations, then
    numbers; by name within a kind. The first is every page's default."""
    kinds = dict(zip(categories["family"], categories["kind"], strict=False))
    return sorted(kinds, key=lambda name: (FAMILY_KIND_ORDER.get(kinds[name], 3), name))


def in_family(result: Specialists, family: str) -> Specialists:
    """`result` restricted to one family: its table rows, categories and replication rates,
    and every feature classified by its cells of that family alone (its kind, best score and
    whether it is a specialist are the family's). The decisions themselves are unchanged:
    their BH correction ran over every family's cells."""
    table = result.table[result.table["family"] == family]
    categories = result.categories[result.categories["family"] == family]
    kinds = dict(zip(categories["family"], categories["kind"], strict=False))
    features = classify_features(
        table, result.features[FREQUENCY_COLUMNS], kinds, result.operation_categories
    )
    return replace(
        result,
        table=table,
        features=features,
        categories=categories,
        replication=result.replication[result.replication["family"] == family],
    )


def category_matrix(
    table: pd.DataFrame,
    categories: pd.DataFrame | None = None,
    saes: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per (SAE, layer, family, category): n_specialists, best_feature and best_score: the
    specialist with the highest score, or the highest-scoring tested feature where the
    category has no specialist (ties: most support, then lowest id); n_replicated where the
    table has replication. With `categories` (`family_categories`), every category of every
    SAE (of `saes`, sae and layer, else of the table) gets a row, untested ones with 0
    specialists and no best feature."""
    ordered = table.sort_values(
        ["sae", "family", "category", "is_specialist", "score", "support", "feature"],
        ascending=[True, True, True, False, False, False, True],
    )
    best = ordered.drop_duplicates(["sae", "family", "category"])[
        ["sae", "layer", "family", "category", "feature", "score"]
    ].rename(columns={"feature": "best_feature", "score": "best_score"})
    chosen = table.assign(
        replicated_specialist=table["is_specialist"] & table.get("replicated", False)
    )
    counts = (
        chosen.groupby(["sae", "family", "category"])
        .agg(
            n_specialists=("is_specialist", "sum"),
            n_replicated=("replicated_specialist", "sum"),
        )
        .reset_index()
    )
    matrix = best.merge(counts, on=["sae", "family", "category"])
    if categories is not None:
        layers = (table if saes is None else saes)[["sae", "layer"]].drop_duplicates()
        every = layers.merge(categories[["family", "category"]], how="cross")
        matrix = every.merge(
            matrix.drop(columns="layer"), on=["sae", "family", "category"], how="left"
        )
    for column in ("n_specialists", "n_replicated"):
        matrix[column] = matrix[column].fillna(0).astype(np.int64)
    return matrix.sort_values(["layer", "sae", "family", "category"], ignore_index=True)


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


def top_specialists(
    table: pd.DataFrame, per_category: int, replicated_only: bool = False
) -> pd.DataFrame:
    """Up to `per_category` specialists per category over all SAEs, best score first (then
    most support, shallowest layer, lowest id); only replicated ones if `replicated_only`."""
    if per_category < 1:
        raise InputError(f"Show at least 1 specialist per category, got {per_category}.")
    chosen = table["is_specialist"]
    if replicated_only:
        chosen = chosen & table["replicated"]
    ordered = table[chosen].sort_values(
        ["family", "category", "score", "support", "layer", "feature"],
        ascending=[True, True, False, False, True, True],
    )
    return (
        ordered.groupby(["family", "category"], sort=False)
        .head(per_category)
        .reset_index(drop=True)
    )


# --- loading -------------------------------------------------------------------------------


def read_activations(store: Store) -> TextActivations:
    """The text activations of every live feature and the labelled texts, from `store`."""
    from explorer.store.queries.specialists import labelled_texts, text_activations

    return TextActivations.from_saes(text_activations(store), labelled_texts(store))


def scored_activations(
    store: Store, acts: TextActivations, families: list[Family], settings: SpecialistSettings
) -> dict[str, TextActivations]:
    """The activations each family is scored on where they are not `acts`: with
    operation_position "equals", the operation family's at the `=` tokens of its texts
    (`TextActivations.at_marks`); empty otherwise or without an operation family."""
    from explorer.store.queries.specialists import marked_activations

    if settings.operation_position == "text":
        return {}
    scored = {}
    for family in families:
        if family.kind != "operation":
            continue
        members = family.universe[np.asarray(family.membership.sum(axis=1)).ravel() > 0]
        sources = sorted(acts.texts["source"].iloc[members].astype(str).unique())
        totals, marks = marked_activations(store, EQUALS_TOKEN, sources)
        scored[family.name] = acts.at_marks(totals, marks)
    return scored


def token_controls(
    store: Store, table: pd.DataFrame, families: list[Family], acts: TextActivations,
    settings: SpecialistSettings,
) -> pd.DataFrame:  # fmt: skip
    """`token_confound` of `table`, reading each SAE's feature x token counts and the
    presence of the specialists' top tokens from `store`."""
    from explorer.store.queries.specialists import token_text_counts

    n_corpus_tokens = int(store.token_counts()["n"].sum())
    specialist_saes = sorted(set(table.loc[table["is_specialist"], "sae"]))
    tops = [
        top_enriched_tokens(store.feature_tokens(sae), n_corpus_tokens).assign(sae=sae)
        for sae in specialist_saes
    ]
    top_tokens = (
        pd.concat(tops, ignore_index=True)
        if tops
        else pd.DataFrame(columns=["feature", "token_id", "token", "token_share", "sae"])
    )
    chosen = table.loc[table["is_specialist"], FEATURE_KEYS].merge(top_tokens, on=FEATURE_KEYS)
    counts = token_text_counts(store, chosen["token_id"].to_numpy(np.int64))
    return token_confound(table, top_tokens, token_auroc(counts, families, acts.texts), settings)


def load_specialists(store: Store, settings: SpecialistSettings) -> Specialists:
    """Read what the measures need from `store` (no scan of `acts`) and compute the table,
    its replication and token controls, and the per-feature kinds."""
    acts = read_activations(store)
    families = category_families(acts.texts, settings.contrast)
    scored_on = scored_activations(store, acts, families, settings)
    table = specialist_table(acts, families, settings, scored_on=scored_on)
    replication = replicate(acts, families, settings, scored_on)
    table = table.merge(replication, on=CELL_KEYS, how="left")
    table["discovered"] = table["discovered"].fillna(False).astype(bool)
    table["replicated"] = table["replicated"].fillna(False).astype(bool)
    table = token_controls(store, table, families, acts, settings)
    operations = operation_categories(acts.texts)
    kinds = {family.name: family.kind for family in families}
    features = classify_features(table, store.frequency_table(), kinds, operations)
    return Specialists(
        settings,
        table,
        features,
        family_categories(families),
        replication_rates(replication),
        operations,
    )
