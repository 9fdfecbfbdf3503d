"""Token-enrichment taxonomy: which tokens a feature fires on, and what kind of feature that is.

Owns the statistics and the rules of issue 4, item 5, computed from the store's precomputed
feature x token counts (`Store.feature_tokens`, `Store.token_counts`), vectorised over every
(feature, token) pair of an SAE:

- the 2 x 2 table of one (feature, token): a = the feature's active tokens that are this token,
  n_f = the feature's active tokens, n_t = the token's occurrences in the corpus, N = all
  tokens; Pearson's chi-squared on it (no continuity correction, 1 degree of freedom, p from
  the chi-squared survival function), and enrichment = (a / n_f) / (n_t / N);
- a token is *significant* for a feature when p < `p_threshold`, a >= `min_support` (20 by
  default: a smaller support lets a feature with a handful of active tokens on one rare token
  reach the ceiling) and it is over-represented (enrichment > 1);
- the *ceiling* of a token's enrichment is N / n_t, one over its share of the corpus (every
  active token of the feature is this token); over all tokens a feature with n_f active
  tokens reaches at most N / n_f (a = n_t = n_f);
- `token_kind`: number, operator, code, punctuation, word or other (the rules are on the
  function);
- a feature's *top tokens* are its significant tokens by a (most active first; ties by
  enrichment, then token id), the first `TOP_TOKENS` of them, each weighted by a.
  `label_features` turns them into a label: "specific number", "number range", "operator",
  "word", "code", "punctuation", "other" when one kind holds at least `DOMINANT_SHARE` of the
  weight, "polysemantic" when none does, "unlabelled" when the feature has no significant token;
- a live feature is *monosemantic* when its label is one of `MONOSEMANTIC_LABELS` (one kind
  holds at least `DOMINANT_SHARE` of its top tokens' weight): the headline rate is the sum of
  those bars of the label chart over all live features;
- the *shuffle baseline* (`shuffled_feature_tokens`) redraws, for every live feature, which
  tokens its n_f active positions hold as if the token labels were permuted across the
  corpus's token positions: a multivariate hypergeometric draw of n_f tokens from the corpus's
  token counts, seeded. Any one feature's statistics have exactly their permutation
  distribution (the draws of different features are independent, which a single permutation's
  are not; no statistic here mixes features). The same taxonomy on the shuffled counts tells
  how many significant tokens, labels and monosemantic features chance alone gives.

The store keeps each feature's `FEATURE_TOKEN_TOP` most frequent token ids only, so rarer
tokens never enter the statistics. It runs no SQL (the store does) and draws nothing (see
`explorer.charts.taxonomy`).
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import pandas as pd

from explorer.errors import InputError, check_finite
from explorer.store.schema import FEATURE_TOKEN_TOP

if TYPE_CHECKING:
    from explorer.store.reader import Store

TokenKind = Literal["number", "operator", "code", "punctuation", "word", "other"]
Label = Literal[
    "specific number",
    "number range",
    "operator",
    "word",
    "code",
    "punctuation",
    "other",
    "polysemantic",
    "unlabelled",
]
LABELS: tuple[Label, ...] = get_args(Label)
NUMBER_LABELS: tuple[Label, ...] = ("specific number", "number range")
MONOSEMANTIC_LABELS: tuple[Label, ...] = LABELS[:7]  # one token kind dominates
KIND_LABELS: dict[TokenKind, Label] = {
    "operator": "operator",
    "word": "word",
    "code": "code",
    "punctuation": "punctuation",
    "other": "other",
}
TOP_TOKENS = 5
DOMINANT_SHARE = 0.75
MAX_MIN_SUPPORT = 100_000
DEFAULT_MIN_SUPPORT = 20
SHUFFLES = 5
MAX_SHUFFLES = 50

OPERATORS = frozenset("+-*/=xX×÷^%<>≤≥≠±−·∗≈√") | {"**", "//", "==", "!=", "<=", ">="}
CODE_SYMBOLS = frozenset("()[]{}#@\\`$|&~;_")
CODE_KEYWORDS = frozenset((
    "def", "elif", "lambda", "self", "None", "True", "False", "import", "nonlocal", "async",
    "await", "yield", "print", "len", "range", "isinstance", "args", "kwargs", "__init__",
    "__name__", "__main__", "str", "int", "dict", "tuple", "bool", "float", "null", "nullptr",
    "const", "var", "func", "fn", "struct", "impl", "println", "printf", "console", "std",
))  # fmt: skip
_NUMBER = re.compile(r"[0-9]+(?:[.,][0-9]+)*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CAMEL = re.compile(r"[a-z][A-Z]")


def token_kind(token: str) -> TokenKind:
    """The kind of one token string, judged on the token without surrounding whitespace.

    In order: digits with optional inner `.` or `,` groups are a *number* ("5", " 100",
    "3.5"); a symbol of `OPERATORS` (+ - * / = x × ÷ ^ % < > and compound ones like `**`,
    `==`) is an *operator*; a `CODE_KEYWORDS` word, an identifier with an underscore, a digit
    or a camelCase hump, or a symbol run containing a bracket or another `CODE_SYMBOLS` character
    is *code*; other runs of punctuation characters are *punctuation*; letters alone (any
    script, inner apostrophes and hyphens allowed) are a *word*; the rest (whitespace, partial
    UTF-8 bytes shown as U+FFFD, emoji, mixed runs) is *other*.
    """
    text = token.strip()
    if not text:
        return "other"
    if _NUMBER.fullmatch(text):
        return "number"
    if text in OPERATORS:
        return "operator"
    if text in CODE_KEYWORDS:
        return "code"
    if _IDENTIFIER.fullmatch(text) and (
        "_" in text or any(c.isdigit() for c in text) or _CAMEL.search(text)
    ):
        return "code"
    if all(unicodedata.category(c).startswith(("P", "S")) for c in text):
        if any(c in CODE_SYMBOLS for c in text) or (len(text) > 1 and set(text) <= set("=<>!+-*/")):
            return "code"
        if all(unicodedata.category(c).startswith("P") for c in text):
            return "punctuation"
        return "other"
    if all(c.isalpha() or c in "'’-" for c in text) and text[0].isalpha():
        return "word"
    return "other"


@dataclass(frozen=True)
class TaxonomySettings:
    """Thresholds of the taxonomy; invalid values raise `InputError`.

    A token is significant for a feature when its chi-squared p < p_threshold, a >=
    min_support and enrichment > 1.
    """

    min_support: int = DEFAULT_MIN_SUPPORT
    """Fewest of the feature's active tokens that must be the token (1 to `MAX_MIN_SUPPORT`)."""
    p_threshold: float = 0.01
    """Chi-squared p below which a token counts, in (0, 0.5]."""

    def __post_init__(self) -> None:
        support = self.min_support
        if (
            isinstance(support, bool)
            or not isinstance(support, int | np.integer)
            or not 1 <= support <= MAX_MIN_SUPPORT
        ):
            raise InputError(
                f"min_support must be a whole number from 1 to {MAX_MIN_SUPPORT}, got {support!r}."
            )
        check_finite(self, ("p_threshold",))
        if not 0 < self.p_threshold <= 0.5:
            raise InputError(f"p_threshold must be in (0, 0.5], got {self.p_threshold}.")


def chi_squared(
    a: np.ndarray, n_feature: np.ndarray, n_token: np.ndarray, n_total: int | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pearson's chi-squared (no continuity correction) and its p-value (1 degree of freedom)
    of the 2 x 2 tables [[a, n_feature - a], [n_token - a, rest]], one per element; a table
    with an empty row or column has statistic 0 and p = 1."""
    from scipy import stats as scipy_stats

    a, n_feature, n_token = (np.asarray(x, dtype=np.float64) for x in (a, n_feature, n_token))
    n_total = np.asarray(n_total, dtype=np.float64)
    b = n_feature - a  # active, another token
    c = n_token - a  # this token, inactive
    d = n_total - n_feature - n_token + a  # neither
    margins = n_feature * (n_total - n_feature) * n_token * (n_total - n_token)
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = np.where(margins > 0, n_total * (a * d - b * c) ** 2 / margins, 0.0)
    return statistic, scipy_stats.chi2.sf(statistic, df=1)


def token_enrichment(
    feature_tokens: pd.DataFrame, n_total: int, settings: TaxonomySettings
) -> pd.DataFrame:
    """The (feature, token) rows of `Store.feature_tokens` with their statistics.

    Adds enrichment = (n_active / n_feature) / (n_token / n_total), its ceiling n_total /
    n_token, chi2, p_value, significant (see the module docstring) and kind (`token_kind`).
    """
    a = feature_tokens["n_active"].to_numpy(np.float64)
    n_feature = feature_tokens["n_feature"].to_numpy(np.float64)
    n_token = feature_tokens["n_token"].to_numpy(np.float64)
    statistic, p_value = chi_squared(a, n_feature, n_token, n_total)
    with np.errstate(divide="ignore", invalid="ignore"):
        enrichment = (a / n_feature) / (n_token / n_total)
    kinds = {token: token_kind(token) for token in feature_tokens["token"].unique()}
    return feature_tokens.assign(
        enrichment=enrichment,
        ceiling=n_total / n_token,
        chi2=statistic,
        p_value=p_value,
        significant=(p_value < settings.p_threshold)
        & (a >= settings.min_support)
        & (enrichment > 1),
        kind=feature_tokens["token"].map(kinds),
    )


def label_features(top: pd.DataFrame) -> pd.Series:
    """The label of every feature of `top`: its top tokens (columns feature, token, kind and
    n_active, the weight), by the rules of the module docstring. A number feature is a
    "specific number" when one number value (the token without whitespace, so "5" and " 5"
    are one) holds at least `DOMINANT_SHARE` of its number tokens' weight. Indexed by feature;
    features without a row are not in it (they are "unlabelled")."""
    if top.empty:
        return pd.Series([], index=pd.Index([], name="feature"), dtype=object, name="label")
    weight = top["n_active"].astype(np.float64)
    by_kind = (
        top.assign(weight=weight)
        .pivot_table(index="feature", columns="kind", values="weight", aggfunc="sum")
        .fillna(0.0)
    )
    total = by_kind.sum(axis=1)
    dominant = by_kind.idxmax(axis=1)
    dominant_share = by_kind.max(axis=1) / total
    numbers = top[top["kind"] == "number"].assign(
        value=lambda frame: frame["token"].str.strip(), weight=weight
    )
    per_value = numbers.groupby(["feature", "value"])["weight"].sum()
    top_value_share = (
        per_value.groupby(level="feature").max() / per_value.groupby(level="feature").sum()
    ).reindex(by_kind.index)
    kind_label = dominant.map(lambda kind: KIND_LABELS.get(kind, "number range"))
    labels = np.select(
        [
            dominant_share < DOMINANT_SHARE,
            (dominant == "number") & (top_value_share >= DOMINANT_SHARE),
        ],
        ["polysemantic", "specific number"],
        default=kind_label.to_numpy(dtype=object),
    )
    return pd.Series(labels, index=by_kind.index, name="label")


def feature_taxonomy(enriched: pd.DataFrame, n_top: int = TOP_TOKENS) -> pd.DataFrame:
    """One row per live feature of `token_enrichment`'s table, strongest enrichment first.

    Columns: feature, n_active_tokens, n_significant, label, top_tokens (the top tokens,
    most active first, as "'token' ×enrichment"), top_kinds (their kinds, first seen first),
    max_enrichment (over significant tokens; NaN without one), max_token (its token), ceiling
    (that token's enrichment ceiling), p_value (its chi-squared p), monosemantic (the label is
    one of `MONOSEMANTIC_LABELS`), is_number. Ties of max_enrichment by feature id.
    """
    features = enriched.groupby("feature", sort=True)["n_feature"].first().rename("n_active_tokens")
    significant = enriched[enriched["significant"]]
    top = (
        significant.sort_values(
            ["feature", "n_active", "enrichment", "token_id"], ascending=[True, False, False, True]
        )
        .groupby("feature", sort=False)
        .head(n_top)
    )
    strongest = (
        significant.sort_values(
            ["feature", "enrichment", "token_id"], ascending=[True, False, True]
        )
        .drop_duplicates("feature")
        .set_index("feature")
    )
    described = [_describe(t, e) for t, e in zip(top["token"], top["enrichment"], strict=True)]
    first_kinds = top.drop_duplicates(["feature", "kind"])
    table = pd.DataFrame(
        {
            "n_active_tokens": features,
            "n_significant": significant.groupby("feature").size(),
            "label": label_features(top),
            "top_tokens": _join_per_feature(top["feature"].to_numpy(), described),
            "top_kinds": _join_per_feature(
                first_kinds["feature"].to_numpy(), first_kinds["kind"].tolist()
            ),
            "max_enrichment": strongest["enrichment"],
            "max_token": strongest["token"],
            "ceiling": strongest["ceiling"],
            "p_value": strongest["p_value"],
        },
        index=features.index,
    )
    table = table.fillna(
        {"n_significant": 0, "label": "unlabelled", "top_tokens": "", "top_kinds": ""}
    )
    table["n_significant"] = table["n_significant"].astype(np.int64)
    table["monosemantic"] = table["label"].isin(MONOSEMANTIC_LABELS)
    table["is_number"] = table["label"].isin(NUMBER_LABELS)
    return (
        table.rename_axis("feature")
        .reset_index()
        .sort_values(["max_enrichment", "feature"], ascending=[False, True], na_position="last")
        .reset_index(drop=True)
    )


def _describe(token: str, enrichment: float) -> str:
    return f"{token!r} ×{enrichment:.1f}"


def _join_per_feature(features: np.ndarray, texts: list[str]) -> pd.Series:
    """Per feature, its `texts` joined with ", "; rows come grouped by feature."""
    if len(features) == 0:
        return pd.Series([], dtype=object)
    starts = np.flatnonzero(np.r_[True, features[1:] != features[:-1]])
    ends = np.r_[starts[1:], len(features)]
    joined = [", ".join(texts[start:end]) for start, end in zip(starts, ends, strict=True)]
    return pd.Series(joined, index=features[starts], dtype=object)


def taxonomy_summary(features: pd.DataFrame) -> dict[str, float]:
    """n_features (live features analysed); n_monosemantic, n_polysemantic, n_unlabelled and
    n_with_significant (features with a significant token); monosemantic_rate and
    number_share (fractions of n_features, NaN without features); max_enrichment and
    median_max_enrichment (over features with a significant token, NaN without one)."""
    n = len(features)
    enrichment = features["max_enrichment"].dropna()
    return {
        "n_features": n,
        "n_monosemantic": int(features["monosemantic"].sum()),
        "n_polysemantic": int((features["label"] == "polysemantic").sum()),
        "n_unlabelled": int((features["label"] == "unlabelled").sum()),
        "n_with_significant": len(enrichment),
        "monosemantic_rate": float(features["monosemantic"].mean()) if n else math.nan,
        "number_share": float(features["is_number"].mean()) if n else math.nan,
        "max_enrichment": float(enrichment.max()) if len(enrichment) else math.nan,
        "median_max_enrichment": float(enrichment.median()) if len(enrichment) else math.nan,
    }


def label_distribution(features: pd.DataFrame) -> pd.DataFrame:
    """label, n_features, share, monosemantic: every label of `LABELS` (zeros included), in
    that order; the n_features of the monosemantic rows sum to the summary's n_monosemantic."""
    counts = features["label"].value_counts().reindex(list(LABELS), fill_value=0)
    n = max(len(features), 1)
    return pd.DataFrame(
        {
            "label": list(LABELS),
            "n_features": counts.to_numpy(),
            "share": counts.to_numpy() / n,
            "monosemantic": [label in MONOSEMANTIC_LABELS for label in LABELS],
        }
    )


def corpus_tokens(store: Store) -> int:
    """N: the real tokens of the store's corpus."""
    return int(store.token_counts()["n"].sum())


def load_taxonomy(store: Store, sae: str, settings: TaxonomySettings) -> pd.DataFrame:
    """`feature_taxonomy` of one SAE of `store`, with an `sae` column first."""
    n_total = corpus_tokens(store)
    enriched = token_enrichment(store.feature_tokens(sae), n_total, settings)
    table = feature_taxonomy(enriched)
    table.insert(0, "sae", sae)
    return table


def shuffled_feature_tokens(
    feature_tokens: pd.DataFrame,
    token_counts: pd.DataFrame,
    seed: int,
    keep: int = FEATURE_TOKEN_TOP,
) -> pd.DataFrame:
    """`Store.feature_tokens` rows as they would be with the corpus's token labels permuted
    across its token positions (see the module docstring): per live feature, a multivariate
    hypergeometric draw of its n_feature active tokens from `token_counts` (token_id, token,
    n), seeded; like the store, each feature keeps its `keep` most frequent tokens (ties by
    token_id)."""
    features = feature_tokens.groupby("feature", sort=True)["n_feature"].first()
    colors = token_counts["n"].to_numpy(np.int64)
    rng = np.random.default_rng(seed)
    drawn = np.stack([rng.multivariate_hypergeometric(colors, int(n)) for n in features])
    feature_index, token_index = np.nonzero(drawn)  # [n_rows] each
    rows = pd.DataFrame(
        {
            "feature": features.index.to_numpy()[feature_index],
            "token_id": token_counts["token_id"].to_numpy()[token_index],
            "token": token_counts["token"].to_numpy()[token_index],
            "n_active": drawn[feature_index, token_index],
            "n_token": colors[token_index],
            "n_feature": features.to_numpy()[feature_index],
        }
    )
    return (
        rows.sort_values(["feature", "n_active", "token_id"], ascending=[True, False, True])
        .groupby("feature", sort=False)
        .head(keep)
        .reset_index(drop=True)
    )


def shuffle_baseline(
    store: Store, sae: str, settings: TaxonomySettings, shuffles: int = SHUFFLES, seed: int = 0
) -> pd.DataFrame:
    """The `taxonomy_summary` of one SAE observed and under `shuffles` seeded token-label
    shuffles (`shuffled_feature_tokens`, seeds seed .. seed + shuffles - 1): one row per
    measure with columns measure, observed, shuffled_mean and shuffled_max (over the
    shuffles)."""
    if not 1 <= shuffles <= MAX_SHUFFLES:
        raise InputError(f"shuffles must be 1 to {MAX_SHUFFLES}, got {shuffles}.")
    counts = store.token_counts()
    n_total = int(counts["n"].sum())
    observed = store.feature_tokens(sae)
    summaries = [
        taxonomy_summary(
            feature_taxonomy(
                token_enrichment(
                    shuffled_feature_tokens(observed, counts, seed + i), n_total, settings
                )
            )
        )
        for i in range(shuffles)
    ]
    actual = taxonomy_summary(feature_taxonomy(token_enrichment(observed, n_total, settings)))
    shuffled = pd.DataFrame(summaries)
    return pd.DataFrame(
        {
            "measure": list(actual),
            "observed": [float(actual[m]) for m in actual],
            "shuffled_mean": [float(shuffled[m].mean()) for m in actual],
            "shuffled_max": [float(shuffled[m].max()) for m in actual],
        }
    )


def compare_saes(store: Store, settings: TaxonomySettings) -> pd.DataFrame:
    """sae, layer and the `taxonomy_summary` of every SAE of `store`, in build order."""
    saes = store.saes()
    rows = [
        {"sae": sae, "layer": layer, **taxonomy_summary(load_taxonomy(store, sae, settings))}
        for sae, layer in zip(saes["sae"], saes["layer"], strict=True)
    ]
    return pd.DataFrame(rows)


BASELINE_ROWS = {
    "n_with_significant": "features with a significant token",
    "n_monosemantic": "monosemantic features",
    "monosemantic_rate": "monosemantic rate",
    "n_polysemantic": "polysemantic features",
    "median_max_enrichment": "median largest enrichment",
    "max_enrichment": "largest enrichment",
}


def baseline_table(baseline: pd.DataFrame) -> pd.DataFrame:
    """The shuffle baseline as the page shows it: measure (in words), observed, shuffled
    (mean) and shuffled (max), one row per summary measure of `BASELINE_ROWS`, from the
    measure-indexed rows of `taxonomy_baseline`."""
    rows = baseline.set_index("measure").loc[list(BASELINE_ROWS)]
    return pd.DataFrame(
        {
            "measure": list(BASELINE_ROWS.values()),
            "observed": rows["observed"].to_numpy(),
            "shuffled (mean)": rows["shuffled_mean"].to_numpy(),
            "shuffled (max)": rows["shuffled_max"].to_numpy(),
        }
    )
