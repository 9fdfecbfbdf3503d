"""Automatic feature descriptions, their offline score, and search over them.

Owns three things, vectorised over every feature of an SAE (no per-feature query or loop):

- `describe_features`: one short readable line per feature, made from what the store already
  holds: its *tokens* (of its `FEATURE_TOKEN_TOP` most frequent active tokens, those holding
  at least `min_token_share` of its active tokens, at least `min_token_count` of them, with a
  lift, the token's share of the feature's activity over its share of the corpus, of at least
  `min_token_lift`; the `max_tokens` most frequent), its *categories* (of the texts where it
  fires, a category's share at least `min_category_share`, at least `min_category_lift` times
  the category's share of the corpus's texts, from at least `min_category_texts` texts), its
  *text labels* (`op:addition`, `num:100`: the same rule on `texts.labels`, with
  `min_label_share`) and the first `n_promoted` tokens its decoder promotes that occur in the
  corpus. Its *kind* is "dead" (never fires), "dense" (fires on at least `dense_freq` of all
  tokens: position-like or dense), the token kind of `explorer.analysis.enrichment` that holds
  at least `DOMINANT_SHARE` of its tokens' weight (number, operator, code, punctuation, word,
  other), "polysemantic" (tokens of several kinds, or no token and no category), or
  "context" (no token stands out but a category does).
- `score_descriptions`: detection scoring in the manner of autointerp, offline. The corpus's
  texts are split in two by a hash of their id (`explorer.store.queries.descriptions`); each
  feature's token set is made from the *making* half only, by the token rule above, and on
  the *held-out* half it predicts "the feature fires here" at every occurrence of a set
  token: TP (active tokens whose token is in the set), FP (occurrences of set tokens where
  the feature is silent), FN (active tokens outside the set), TN (the rest). Precision,
  recall, F1 (the `score`; a predictor that marks tokens at random at the feature's own rate
  gets about its firing rate) and balanced accuracy (chance 0.5) follow. Features with fewer
  than `min_held_tokens` active tokens in the held-out half are not scored.
- `search_descriptions`: user labels and descriptions matched by a typed text, best match
  first.

A user's saved label overrides the description (`with_user_labels`). It runs no SQL (the
store does) and draws nothing.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from explorer.analysis.enrichment import label_features, token_kind
from explorer.errors import InputError, bounded_int, check_finite, markdown_escaped
from explorer.store.queries import descriptions as queries

if TYPE_CHECKING:
    from explorer.store.reader import Store

Kind = Literal[
    "word",
    "number",
    "operator",
    "code",
    "punctuation",
    "other",
    "dense",
    "context",
    "polysemantic",
    "dead",
]
KINDS: tuple[Kind, ...] = (
    "word",
    "number",
    "operator",
    "code",
    "punctuation",
    "other",
    "dense",
    "context",
    "polysemantic",
    "dead",
)
KIND_OF_LABEL: dict[str, Kind] = {
    "specific number": "number",
    "number range": "number",
    "operator": "operator",
    "word": "word",
    "code": "code",
    "punctuation": "punctuation",
    "other": "other",
    "polysemantic": "polysemantic",
}
SEPARATOR = " · "
USER_LABEL_SUFFIX = " (your label)"
MAX_SEARCH_CHARS = 200
MAX_SEARCH_RESULTS = 1000
MATCHES = ("your label, whole", "your label", "a whole part", "a whole word", "part of a word")
DESCRIPTION_COLUMNS = [
    "feature",
    "description",
    "kind",
    "tokens",
    "token_share",
    "categories",
    "text_labels",
    "promoted",
    "n_active_tokens",
    "token_freq",
]
SCORE_COLUMNS = [
    "feature",
    "score_tokens",
    "make_active",
    "held_active",
    "tp",
    "fp",
    "fn",
    "tn",
    "precision",
    "recall",
    "f1",
    "balanced_accuracy",
    "scored",
]


@dataclass(frozen=True)
class DescriptionSettings:
    """The thresholds of a description and of its score; invalid values raise `InputError`."""

    max_tokens: int = 3
    """Most tokens a description names (and its score predicts with), 1 to 10."""
    min_token_share: float = 0.05
    """Least share of the feature's active tokens a named token holds, in (0, 1]."""
    min_token_count: int = 2
    """Fewest of the feature's active tokens a named token holds."""
    min_token_lift: float = 2.0
    """Least lift (share of the feature's activity / share of the corpus) of a named token."""
    max_categories: int = 2
    """Most categories (and most text labels) a description names, 1 to 5."""
    min_category_share: float = 0.3
    """Least share of the texts where the feature fires that a named category holds."""
    min_category_lift: float = 2.0
    """Least ratio of that share to the category's share of the corpus's texts."""
    min_category_texts: int = 3
    """Fewest texts of a named category (or carrying a named label) where the feature fires."""
    min_label_share: float = 0.5
    """Least share of the texts where the feature fires that carry a named text label."""
    n_promoted: int = 1
    """Promoted tokens (that occur in the corpus) a description names, 0 to 5."""
    dense_freq: float = 0.2
    """Share of all tokens at or above which a feature is dense."""
    min_held_tokens: int = 5
    """Fewest held-out active tokens for a feature's description to be scored."""

    def __post_init__(self) -> None:
        for name, low, high in (
            ("max_tokens", 1, 10),
            ("min_token_count", 1, 1_000_000),
            ("max_categories", 1, 5),
            ("min_category_texts", 1, 1_000_000),
            ("n_promoted", 0, 5),
            ("min_held_tokens", 1, 1_000_000),
        ):
            bounded_int(name, getattr(self, name), low, high)
        shares = ("min_token_share", "min_category_share", "min_label_share", "dense_freq")
        lifts = ("min_token_lift", "min_category_lift")
        check_finite(self, shares + lifts)
        for name in shares:
            if not 0 < getattr(self, name) <= 1:
                raise InputError(
                    f"{markdown_escaped(name)} must be in (0, 1], got "
                    f"{markdown_escaped(getattr(self, name))}."
                )
        for name in lifts:
            if getattr(self, name) < 1:
                raise InputError(
                    f"{markdown_escaped(name)} must be at least 1 (no lift), got "
                    f"{markdown_escaped(getattr(self, name))}."
                )

    @classmethod
    def field_names(cls) -> list[str]:
        return [field.name for field in fields(cls)]


def shown_token(token: str) -> str:
    """A token as a description quotes it: JSON-quoted, so spaces and newlines show."""
    return json.dumps(token, ensure_ascii=False)


def _join(frame: pd.DataFrame, column: str, index: pd.Index) -> pd.Series:
    """Per feature of `index`, its rows' `column` values as a list in row order (an empty list
    without a row): one stable sort and split, not a group-by per feature."""
    lists: list[list] = [[] for _ in range(len(index))]
    features = frame["feature"].to_numpy(np.int64)
    if len(features):
        order = np.argsort(features, kind="stable")
        features, values = features[order], frame[column].to_numpy(dtype=object)[order]
        starts = np.flatnonzero(np.r_[True, features[1:] != features[:-1]])
        positions = index.get_indexer(features[starts])
        for position, group in zip(positions, np.split(values, starts[1:]), strict=True):
            if position >= 0:
                lists[position] = group.tolist()
    return pd.Series(lists, index=index, dtype=object)


def select_tokens(
    counts: pd.DataFrame, n_total: int, settings: DescriptionSettings
) -> pd.DataFrame:
    """The tokens a description names: rows (feature, token_id, n_active, n_feature, n_token,
    ...) kept by the token rule of the module docstring, the `max_tokens` most frequent per
    feature (ties by token id), with share, lift and precision (n_active / n_token) added."""
    n_active = counts["n_active"].to_numpy(np.float64)
    share = n_active / counts["n_feature"].to_numpy(np.float64)
    base = counts["n_token"].to_numpy(np.float64) / max(n_total, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.where(base > 0, share / base, 0.0)
        precision = np.where(counts["n_token"] > 0, n_active / counts["n_token"], 0.0)
    kept = counts.assign(share=share, lift=lift, precision=precision)
    kept = kept[
        (kept["share"] >= settings.min_token_share)
        & (kept["n_active"] >= settings.min_token_count)
        & (kept["lift"] >= settings.min_token_lift)
    ]
    return (
        kept.sort_values(["feature", "n_active", "token_id"], ascending=[True, False, True])
        .groupby("feature", sort=False)
        .head(settings.max_tokens)
        .reset_index(drop=True)
    )


def selective_categories(
    feature_category: pd.DataFrame, settings: DescriptionSettings
) -> pd.DataFrame:
    """feature, category, share, lift: the categories a description names (see the module
    docstring), largest share first, at most `max_categories` per feature."""
    table = feature_category[["feature", "category", "n_texts", "n_texts_active"]]
    fired = table.groupby("feature")["n_texts_active"].transform("sum").to_numpy(np.float64)
    per_category = table.drop_duplicates("category").set_index("category")["n_texts"]
    base = table["category"].map(per_category / max(per_category.sum(), 1)).to_numpy(np.float64)
    return _selective(table, "category", fired, base, settings.min_category_share, settings)


def selective_labels(
    feature_labels: pd.DataFrame,
    n_active_texts: pd.Series,
    label_texts: pd.Series,
    n_texts: int,
    settings: DescriptionSettings,
) -> pd.DataFrame:
    """feature, label, share, lift: the text labels a description names. `feature_labels` has
    feature, label, n_texts_active (one SAE's `Store.feature_labels` rows); `n_active_texts`
    the texts where each feature fires (by feature); `label_texts` the corpus's texts carrying
    each label (by label) out of `n_texts`."""
    fired = feature_labels["feature"].map(n_active_texts).to_numpy(np.float64)
    base = feature_labels["label"].map(label_texts / max(n_texts, 1)).to_numpy(np.float64)
    return _selective(feature_labels, "label", fired, base, settings.min_label_share, settings)


def _selective(
    table: pd.DataFrame,
    key: str,
    fired: np.ndarray,
    base: np.ndarray,
    min_share: float,
    settings: DescriptionSettings,
) -> pd.DataFrame:
    """feature, `key`, share, lift of the rows of `table` (feature, `key`, n_texts_active)
    whose share of the feature's active texts (`fired`) reaches `min_share` and whose lift
    over the base rate (`base`) and text count reach the settings' minimums, largest share
    first, at most `max_categories` per feature."""
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(fired > 0, table["n_texts_active"] / fired, 0.0)
        lift = np.where(base > 0, share / base, 0.0)
    chosen = table.assign(share=share, lift=lift)
    chosen = chosen[
        (chosen["share"] >= min_share)
        & (chosen["lift"] >= settings.min_category_lift)
        & (chosen["n_texts_active"] >= settings.min_category_texts)
    ]
    return (
        chosen.sort_values(["feature", "share", key], ascending=[True, False, True])
        .groupby("feature", sort=False)
        .head(settings.max_categories)[["feature", key, "share", "lift"]]
        .reset_index(drop=True)
    )


def describe_features(
    stats: pd.DataFrame,
    feature_tokens: pd.DataFrame,
    n_total: int,
    categories: pd.DataFrame,
    text_labels: pd.DataFrame,
    promoted: pd.DataFrame,
    settings: DescriptionSettings,
) -> pd.DataFrame:
    """One row per feature of `stats` (`Store.feature_stats`, dead features included), by id.

    `feature_tokens` is `Store.feature_tokens`, `n_total` the corpus's tokens, `categories`
    and `text_labels` come from `selective_categories` / `selective_labels`, `promoted` from
    `promoted_in_corpus`. Columns: `DESCRIPTION_COLUMNS`: description (the parts joined by
    `SEPARATOR`), kind (see `KINDS`), tokens, categories, text_labels and promoted (lists),
    token_share (the share of the feature's active tokens its named tokens hold),
    n_active_tokens and token_freq.
    """
    index = pd.Index(stats["feature"].to_numpy(np.int64), name="feature")
    n_active = pd.Series(stats["n_active_tokens"].to_numpy(np.int64), index=index)
    token_freq = pd.Series(stats["token_freq"].to_numpy(np.float64), index=index)
    tokens = select_tokens(feature_tokens, n_total, settings)
    distinct = pd.unique(pd.concat([tokens["token"], promoted["token"]]))
    kinds = {token: token_kind(token) for token in distinct}  # once per distinct token
    quote = {token: shown_token(token) for token in distinct}
    tokens = tokens.assign(kind=tokens["token"].map(kinds))
    token_lists = _join(tokens, "token", index)
    token_share = tokens.groupby("feature")["share"].sum().reindex(index, fill_value=0.0)
    category_lists = _join(categories, "category", index)
    # `op:addition` says nothing more than the category `addition` it sits beside
    own = categories.assign(label="op:" + categories["category"])[["feature", "label"]]
    marked = text_labels.merge(own, on=["feature", "label"], how="left", indicator=True)
    label_lists = _join(text_labels[(marked["_merge"] == "left_only").to_numpy()], "label", index)
    promoted = (
        promoted.sort_values(["feature", "rank"]).groupby("feature").head(settings.n_promoted)
    )
    promoted_lists = _join(promoted, "token", index)

    token_label = label_features(tokens).reindex(index)
    dead = n_active.to_numpy() == 0
    dense = token_freq.to_numpy() >= settings.dense_freq
    has_tokens = token_label.notna().to_numpy()
    has_category = category_lists.map(len).to_numpy() > 0
    kind = np.select(
        [dead, dense, has_tokens, has_category],
        ["dead", "dense", token_label.map(KIND_OF_LABEL).to_numpy(dtype=object), "context"],
        default="polysemantic",
    )

    quoted_tokens = token_lists.map(lambda names: ", ".join(quote[t] for t in names))
    density = token_freq.map(lambda freq: f"dense: fires on {freq:.0%} of tokens")
    first = np.select(
        [dead, has_tokens, dense],
        ["dead: never fires on this corpus", quoted_tokens.to_numpy(), density.to_numpy()],
        default="",
    )
    promotes = promoted_lists.map(
        lambda names: "promotes " + ", ".join(quote[t] for t in names) if names else ""
    )
    description = pd.Series(first, index=index, dtype=object)
    for part in (
        category_lists.map(", ".join),
        label_lists.map(", ".join),
        promotes.where(~dead, ""),
    ):
        joined = np.where(description == "", part, description + SEPARATOR + part)
        description = pd.Series(np.where(part == "", description, joined), index=index)
    description = description.where(description != "", "fires on many tokens")
    return pd.DataFrame(
        {
            "feature": index.to_numpy(),
            "description": description.to_numpy(),
            "kind": kind,
            "tokens": token_lists.to_numpy(),
            "token_share": token_share.to_numpy(),
            "categories": category_lists.to_numpy(),
            "text_labels": label_lists.to_numpy(),
            "promoted": promoted_lists.to_numpy(),
            "n_active_tokens": n_active.to_numpy(),
            "token_freq": token_freq.to_numpy(),
        }
    )


def load_descriptions(
    store: Store, sae: str, settings: DescriptionSettings | None = None
) -> pd.DataFrame:
    """`describe_features` of one SAE of `store`, from its stored tables (no scan of `acts`),
    with an `sae` column first."""
    settings = settings or DescriptionSettings()
    stats = store.feature_stats(sae)
    counts = store.token_counts()
    n_total = int(counts["n"].sum())
    categories = selective_categories(store.feature_category(sae), settings)
    all_labels = store.feature_labels()
    labels = all_labels[all_labels["sae"] == sae]
    label_counts = store.label_counts()
    n_texts = int(store.categories()["n_texts"].sum())
    text_labels = selective_labels(
        labels,
        stats.set_index("feature")["n_active_texts"],
        label_counts.groupby("label")["n_texts"].sum(),
        n_texts,
        settings,
    )
    promoted = (
        queries.promoted_in_corpus(store, sae, settings.n_promoted)
        if settings.n_promoted
        else pd.DataFrame(columns=["feature", "rank", "token_id", "token", "logit"])
    )
    table = describe_features(
        stats, store.feature_tokens(sae), n_total, categories, text_labels, promoted, settings
    )
    table.insert(0, "sae", sae)
    return table


def score_descriptions(
    split: pd.DataFrame, half_counts: pd.DataFrame, settings: DescriptionSettings
) -> pd.DataFrame:
    """The held-out score of each live feature's token set (see the module docstring).

    `split` is `split_token_counts` (read with the settings' min_token_share and
    min_token_count), `half_counts` is `token_counts_by_half`. Columns: `SCORE_COLUMNS`:
    score_tokens (the token ids of the set, made from the making half), make_active and
    held_active (the feature's active tokens in each half), tp, fp, fn, tn, precision (NaN
    with an empty set), recall, f1, balanced_accuracy, and scored (held_active >=
    min_held_tokens; the measures are NaN otherwise). One row per live feature, by id.
    """
    per_token = half_counts.set_index("token_id")
    n_make = int(per_token["n_make"].sum())
    n_held = int(per_token["n_held"].sum())
    totals = split.drop_duplicates("feature").set_index("feature")[["make_total", "held_total"]]
    candidates = split.dropna(subset=["token_id"]).astype({"token_id": np.int64})
    candidates = pd.DataFrame(
        {
            "feature": candidates["feature"].to_numpy(np.int64),
            "token_id": candidates["token_id"].to_numpy(np.int64),
            "token": "",
            "n_active": candidates["n_make"].to_numpy(np.int64),
            "n_feature": candidates["feature"].map(totals["make_total"]).to_numpy(np.int64),
            "n_token": candidates["token_id"].map(per_token["n_make"]).to_numpy(np.int64),
            "n_held": candidates["n_held"].to_numpy(np.int64),
            "token_held": candidates["token_id"].map(per_token["n_held"]).to_numpy(np.int64),
        }
    )
    chosen = select_tokens(candidates, n_make, settings)
    sums = (
        chosen.groupby("feature")[["n_held", "token_held"]]
        .sum()
        .reindex(totals.index, fill_value=0)
    )
    held_total = totals["held_total"].to_numpy(np.float64)
    tp = sums["n_held"].to_numpy(np.float64)
    fp = sums["token_held"].to_numpy(np.float64) - tp
    fn = held_total - tp
    tn = n_held - tp - fp - fn
    scored = held_total >= settings.min_held_tokens
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = tp / held_total
        f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        balanced = (recall + specificity) / 2
    nan = np.nan
    return pd.DataFrame(
        {
            "feature": totals.index.to_numpy(np.int64),
            "score_tokens": _join(chosen, "token_id", totals.index).to_numpy(),
            "make_active": totals["make_total"].to_numpy(np.int64),
            "held_active": totals["held_total"].to_numpy(np.int64),
            "tp": tp.astype(np.int64),
            "fp": fp.astype(np.int64),
            "fn": fn.astype(np.int64),
            "tn": tn.astype(np.int64),
            "precision": np.where(scored, precision, nan),
            "recall": np.where(scored, recall, nan),
            "f1": np.where(scored, f1, nan),
            "balanced_accuracy": np.where(scored, balanced, nan),
            "scored": scored,
        }
    )


def load_scores(
    store: Store, sae: str, settings: DescriptionSettings | None = None
) -> pd.DataFrame:
    """`score_descriptions` of one SAE of `store`: one scan of its `acts` rows."""
    settings = settings or DescriptionSettings()
    split = queries.split_token_counts(
        store, sae, settings.min_token_share, settings.min_token_count
    )
    return score_descriptions(split, queries.token_counts_by_half(store), settings)


def described_features(
    descriptions: pd.DataFrame, scores: pd.DataFrame, labels: pd.DataFrame | None = None
) -> pd.DataFrame:
    """`descriptions` (one SAE, `load_descriptions`) with the score columns of `scores`
    (`load_scores`; NaN for features not scored) and the user's labels (`with_user_labels`;
    none when `labels` is None)."""
    scored = descriptions.merge(scores, on="feature", how="left")
    scored["scored"] = scored["scored"].fillna(False).astype(bool)
    if labels is None:
        labels = pd.DataFrame({"sae": [], "feature": [], "label": []})
    return with_user_labels(scored, labels)


def with_user_labels(descriptions: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """`descriptions` (sae, feature, description, ...) with the user's current label of each
    feature (`Store.labels`: newest first) in `label` (None without one) and `shown`: the
    label followed by `USER_LABEL_SUFFIX` where the user saved one, else the description."""
    current = labels.drop_duplicates(["sae", "feature"])[["sae", "feature", "label"]]
    current = current.astype({"feature": np.int64})
    table = descriptions.drop(columns=["label", "shown"], errors="ignore").merge(
        current, on=["sae", "feature"], how="left"
    )
    table["label"] = table["label"].astype(object).where(table["label"].notna(), None)
    table["shown"] = np.where(
        table["label"].notna(),
        table["label"].fillna("").astype(str) + USER_LABEL_SUFFIX,
        table["description"],
    )
    return table


def search_terms(descriptions: pd.DataFrame) -> pd.Series:
    """Each feature's description parts (tokens without their surrounding spaces, categories,
    text labels, kind), lower case, each between "\\x1f" marks, for whole-part matching.
    The list columns may hold lists (computed here) or numpy arrays (a kept table read back
    from the store's Parquet): each is read item by item, never added as a whole (an array
    would add elementwise)."""
    mark = "\x1f"
    rows = zip(
        descriptions["tokens"],
        descriptions["categories"],
        descriptions["text_labels"],
        descriptions["kind"],
        strict=True,
    )
    terms = [
        [*(str(token).strip() for token in tokens), *map(str, categories), *map(str, labels), kind]
        for tokens, categories, labels, kind in rows
    ]
    return pd.Series(
        [mark + mark.join(str(n).lower() for n in names) + mark for names in terms],
        index=descriptions.index,
        dtype=object,
    )


def search_descriptions(described: pd.DataFrame, text: str, limit: int = 200) -> pd.DataFrame:
    """The features of `described` (`described_features` rows of one or more SAEs) whose user
    label or description matches `text` (case-insensitive, every character literal), best
    match first: match is one of `MATCHES` (the user label equal to the text, the user label
    containing it, a whole part of the description equal to it (a token without its spaces, a
    category, a text label, the kind), a whole word of the description, part of a word); then
    the best description score, then SAE order and feature id."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("Type something to search for: the search text is empty.")
    if len(text) > MAX_SEARCH_CHARS:
        raise InputError(f"A search text has at most {MAX_SEARCH_CHARS} characters.")
    limit = bounded_int("The number of results", limit, 1, MAX_SEARCH_RESULTS)
    query = text.strip().lower()
    label = described["label"].fillna("").astype(str).str.lower()
    description = described["description"].str.lower()
    word = re.compile(rf"(?<!\w){re.escape(query)}(?!\w)")
    rank = np.select(
        [
            label == query,
            label.str.contains(query, regex=False),
            search_terms(described).str.contains(f"\x1f{query}\x1f", regex=False),
            description.str.contains(word),
            description.str.contains(query, regex=False),
        ],
        [0, 1, 2, 3, 4],
        default=-1,
    )
    found = described.assign(
        match_rank=rank,
        sae_order=pd.Categorical(described["sae"], categories=described["sae"].unique()).codes,
        order_score=described["f1"].fillna(-1.0) if "f1" in described else -1.0,
    )
    found = found[found["match_rank"] >= 0]
    found = found.sort_values(
        ["match_rank", "order_score", "sae_order", "feature"],
        ascending=[True, False, True, True],
    ).head(limit)
    found["match"] = [MATCHES[r] for r in found["match_rank"]]
    return found.drop(columns=["match_rank", "sae_order", "order_score"]).reset_index(drop=True)


def score_distribution(scores: pd.DataFrame) -> dict[str, float]:
    """n_live, n_scored, and the scored features' F1 and balanced accuracy: mean, quartiles,
    and the share with F1 >= 0.5 (NaN without a scored feature). `scores` is `load_scores`
    or `described_features` (whose dead features have no held_active)."""
    scored = scores[scores["scored"].astype(bool)]
    f1 = scored["f1"]
    quantiles = [math.nan] * 3 if scored.empty else f1.quantile([0.25, 0.5, 0.75]).tolist()
    return {
        "n_live": int(scores["held_active"].notna().sum()),
        "n_scored": len(scored),
        "f1_mean": float(f1.mean()) if len(f1) else math.nan,
        "f1_q25": quantiles[0],
        "f1_median": quantiles[1],
        "f1_q75": quantiles[2],
        "f1_at_least_half": float((f1 >= 0.5).mean()) if len(f1) else math.nan,
        "balanced_accuracy_mean": (
            float(scored["balanced_accuracy"].mean()) if len(f1) else math.nan
        ),
    }


def compare_scores(described: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per SAE (in the given order): sae and its `score_distribution`."""
    return pd.DataFrame(
        [{"sae": sae, **score_distribution(table)} for sae, table in described.items()]
    )


def corpus_only(lens: pd.DataFrame, corpus_token_ids: set[int]) -> tuple[pd.DataFrame, int]:
    """Logit-lens rows (with token_id) whose token occurs in the corpus, and how many rows
    were left out: under-trained embeddings of tokens the corpus never holds (`\\x1a`, `�`)
    often dominate W_dec @ W_U, and a reader cannot check them against examples."""
    keep = lens["token_id"].isin(corpus_token_ids)
    return lens[keep].reset_index(drop=True), int((~keep).sum())


def flat_table(described: pd.DataFrame) -> pd.DataFrame:
    """`described_features` rows for a CSV file: list columns as JSON arrays, the columns a
    reader needs in a stable order."""
    columns = [
        "sae",
        "feature",
        "description",
        "kind",
        "label",
        "tokens",
        "token_share",
        "categories",
        "text_labels",
        "promoted",
        "n_active_tokens",
        "token_freq",
        "held_active",
        "precision",
        "recall",
        "f1",
        "balanced_accuracy",
        "scored",
    ]
    flat = described[columns].copy()
    flat["held_active"] = flat["held_active"].astype("Int64")  # empty for dead features
    for column in ("tokens", "categories", "text_labels", "promoted"):
        flat[column] = flat[column].map(lambda values: json.dumps(list(values), ensure_ascii=False))
    return flat


SCORE_RANKINGS: dict[str, str] = {
    "best explained": "description score (held-out F1 of its automatic description), best first",
    "least explained": "description score (held-out F1 of its automatic description), worst first",
}
SCORE_RANKING_COLUMNS = ["rank", "sae", "feature", "kind", "f1", "precision", "recall"]


def rank_by_score(described: pd.DataFrame, best: bool, k: int) -> pd.DataFrame:
    """The k scored features of `described` (one SAE's `described_features`) with the best
    (`best`) or the worst description score: by F1, then balanced accuracy, then the most
    held-out active tokens, then feature id; with a rank column (1 first)."""
    k = bounded_int("The number of features", k, 1, MAX_SEARCH_RESULTS)
    scored = described[described["scored"]]
    order = scored.sort_values(
        ["f1", "balanced_accuracy", "held_active", "feature"],
        ascending=[not best, not best, False, True],
    )
    top = order.head(k).reset_index(drop=True)
    top.insert(0, "rank", np.arange(1, len(top) + 1))
    return top


def score_summary(row: pd.Series) -> str:
    """One line on a feature's description score (a `described_features` row): F1 with its
    precision and recall on the held-out half, or why it has none."""
    if row["kind"] == "dead":
        return "No description score: the feature never fires."
    if "f1" not in row:
        return (
            "Description score not computed on this page: it takes one pass over the SAE's "
            "activations. `python -m explorer describe` computes it, or rank by "
            "'best explained' on the rankings page."
        )
    if not row.get("scored", False):
        return (
            "No description score: fewer than the needed active tokens on the held-out half "
            "of the corpus."
        )
    precision = "no token set" if pd.isna(row["precision"]) else f"{row['precision']:.2f}"
    return (
        f"Description score on held-out texts: F1 {row['f1']:.2f} (precision {precision}, "
        f"recall {row['recall']:.2f}, {int(row['held_active']):,} active tokens held out)."
    )
