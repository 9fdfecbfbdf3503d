"""Which feature a request names, everything the store holds about it, and its export.

Owns `resolve_feature_request` (the feature page's `?sae=...&feature=...` query parameters,
checked against the store's SAEs: a missing or bad value becomes a message and a sensible
default, never an exception) and `FeatureData`, the store-backed part of a feature's page
read in one call (statistics, histogram, top and quantile examples with their context
windows, categories, logit lens, labels), with its JSON and CSV exports.

Model-backed parts (decoder neighbours, the full logit histogram) live in
`explorer.analysis`; SQL lives in `explorer.store` and `explorer.store.queries.feature`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from explorer.analysis.histograms import activation_histogram
from explorer.errors import InputError, csv_safe, decimal_int, markdown_escaped, quoted
from explorer.sources.source import NEURONPEDIA_URL
from explorer.store.queries.feature import (
    MAX_TEXTS,
    example_windows,
    feature_text_maxima,
    text_categories,
    texts_with_feature,
)
from explorer.store.reader import Store


@dataclass(frozen=True)
class FeatureRequest:
    """The SAE and feature to show, and what was wrong with the request, if anything."""

    sae: str
    feature: int
    problems: tuple[str, ...] = ()


def resolve_feature_request(
    saes: pd.DataFrame,
    sae: str | None,
    feature: str | None,
    default_features: Mapping[str, int] | None = None,
) -> FeatureRequest:
    """Read `sae` and `feature` query parameters against the store's `saes` table.

    Defaults: the first SAE, and its entry in `default_features` (e.g. its first live
    feature; 0 without one). An unknown SAE, a non-integer feature or one out of range gives
    the default for that value and a message saying what was wrong.
    """
    names = saes["sae"].tolist()
    d_sae = dict(zip(names, saes["d_sae"].astype(int), strict=True))
    problems = []
    chosen = names[0]
    if sae is not None and sae in d_sae:
        chosen = sae
    elif sae is not None:
        problems.append(f"There is no SAE {quoted(sae)} in this store; showing {chosen!r}.")
    feature_id = int((default_features or {}).get(chosen, 0))
    if feature is not None:
        text = feature.strip()
        value = decimal_int(text.removeprefix("-"))
        if value is None:
            problems.append(
                f"The feature id {quoted(feature)} is not an integer; showing feature {feature_id}."
            )
        elif (text.startswith("-") and value > 0) or value >= d_sae[chosen]:
            problems.append(
                f"Feature {text[:40]} is out of range for {chosen}: it has features 0 to "
                f"{d_sae[chosen] - 1}. Showing feature {feature_id}."
            )
        else:
            feature_id = value
    return FeatureRequest(chosen, feature_id, tuple(problems))


@dataclass
class FeatureData:
    """The store's view of one feature, as the feature page shows it."""

    sae: str
    feature: int
    d_sae: int
    neuronpedia_id: str | None
    stats: dict[str, Any]
    histogram: pd.DataFrame  # bin, low, high, count, fraction, density
    top: pd.DataFrame  # rank, text_id, pos, value, token, category
    quantiles: pd.DataFrame  # bin, bin_low, bin_high, rank, text_id, pos, value, token, category
    windows: pd.DataFrame  # example_windows of top then quantile examples (example ids below)
    categories: pd.DataFrame  # category, n_texts, n_texts_active, ... from feature_category
    logit_lens: pd.DataFrame  # rank, token_id, token, logit
    labels: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def neuronpedia_url(self) -> str | None:
        """The feature's Neuronpedia page, when its SAE has a Neuronpedia id."""
        if not self.neuronpedia_id:
            return None
        return f"{NEURONPEDIA_URL}/{self.neuronpedia_id}/{self.feature}"

    @property
    def is_dead(self) -> bool:
        return int(self.stats["n_active_tokens"]) == 0

    @property
    def top_examples(self) -> range:
        """Example ids of `windows` belonging to the top examples."""
        return range(len(self.top))

    @property
    def quantile_examples(self) -> range:
        return range(len(self.top), len(self.top) + len(self.quantiles))

    def top_captions(self) -> dict[int, str]:
        """Example id -> caption of each top example: rank, value, category, text id."""
        return {
            i: f"#{row.rank}  {row.value:.3f}  {row.category} · text {row.text_id}"
            for i, row in zip(self.top_examples, self.top.itertuples(), strict=True)
        }

    def quantile_captions(self) -> dict[int, str]:
        """Example id -> caption of each quantile example: its bin, value, category, text."""
        return {
            i: f"[{row.bin_low:.2f}, {row.bin_high:.2f}]  {row.value:.3f}  {row.category} · "
            f"text {row.text_id}"
            for i, row in zip(self.quantile_examples, self.quantiles.itertuples(), strict=True)
        }

    def example_texts(self) -> pd.DataFrame:
        """One row per example (top, then quantile): kind, rank, bin, text_id, pos, value,
        category, token, context (the window's tokens joined)."""
        context = self.windows.groupby("example")["token"].agg("".join)
        top = self.top.assign(kind="top", bin=pd.NA)
        quantiles = self.quantiles.assign(kind="quantile")
        examples = pd.concat([top, quantiles], ignore_index=True)
        examples["context"] = context.reindex(examples.index).fillna("").to_numpy()
        return examples[
            ["kind", "rank", "bin", "text_id", "pos", "value", "category", "token", "context"]
        ]

    def to_csv(self) -> str:
        """The examples table (`example_texts`) as CSV (`csv_safe`: no cell opens as a
        spreadsheet formula)."""
        return csv_safe(self.example_texts()).to_csv(index=False)

    def to_json(self) -> str:
        """Everything on the page that comes from the store, as one JSON document."""

        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return json.loads(frame.to_json(orient="records", date_format="iso"))

        document = {
            "sae": self.sae,
            "feature": self.feature,
            "neuronpedia_id": self.neuronpedia_id,
            "stats": {k: v for k, v in self.stats.items() if k != "hist"},
            "histogram": records(self.histogram),
            "examples": records(self.example_texts()),
            "categories": records(self.categories),
            "logit_lens": records(self.logit_lens),
            "labels": records(self.labels),
        }
        return json.dumps(document, indent=2, default=str)


def load_feature_data(
    store: Store, sae: str, feature: int, before: int = 12, after: int = 4
) -> FeatureData:
    """Read one feature's page data from the store (range reads on its runs)."""
    row = store.sae(sae)
    stats_row = store.feature_stats(sae, feature).iloc[0].to_dict()
    top = store.feature_topk(sae, feature)
    quantiles = store.feature_quantiles(sae, feature)
    examples = pd.concat([top[["text_id", "pos"]], quantiles[["text_id", "pos"]]])
    categories = text_categories(store, sorted(set(examples["text_id"])))
    top = top.merge(categories, on="text_id", how="left")
    quantiles = quantiles.merge(categories, on="text_id", how="left")
    return FeatureData(
        sae=sae,
        feature=int(feature),
        d_sae=row.d_sae,
        neuronpedia_id=row.neuronpedia_id,
        stats=stats_row,
        histogram=activation_histogram(stats_row["hist"], stats_row["max"]),
        top=top,
        quantiles=quantiles,
        windows=example_windows(store, sae, feature, examples, before, after),
        categories=store.feature_category(sae, feature).drop(columns="feature"),
        logit_lens=store.logit_lens(sae, feature),
        labels=store.labels(sae, feature),
    )


@dataclass
class CategoryView:
    """One feature over a category's texts (target) and the other texts where it fires most."""

    texts: pd.DataFrame  # example, text_id, category, max_value, target
    windows: pd.DataFrame  # texts_with_feature rows, `example` indexing `texts`
    scale: float  # the feature's largest activation over the corpus

    def captions(self) -> dict[int, str]:
        """Example id -> caption: category, text id and the feature's largest value there."""
        return {
            row.example: f"{row.category} · text {row.text_id} · max {row.max_value:.3f}"
            for row in self.texts.itertuples()
        }


def category_view(
    store: Store, sae: str, feature: int, category: str, n_texts: int = 20
) -> CategoryView:
    """Up to `n_texts` texts of `category` (strongest activation first, then by id, texts
    where the feature is silent included) and up to `n_texts` of other categories where it
    fires most."""
    store.check_feature(sae, feature)
    if not 1 <= n_texts <= MAX_TEXTS // 2:
        raise InputError(f"n_texts must be from 1 to {MAX_TEXTS // 2}, got {n_texts}.")
    fired = feature_text_maxima(store, sae, feature)
    maxima = fired.set_index("text_id")["max_value"]
    target = store.texts(category)[["text_id", "category"]]
    if target.empty:
        raise InputError(
            f"There are no texts of category {markdown_escaped(repr(category))} in this store."
        )
    target = target.assign(max_value=maxima.reindex(target["text_id"]).fillna(0.0).to_numpy())
    target = target.sort_values(["max_value", "text_id"], ascending=[False, True]).head(n_texts)
    others = fired[fired["category"] != category].head(n_texts)[
        ["text_id", "category", "max_value"]
    ]
    texts = pd.concat([target.assign(target=True), others.assign(target=False)], ignore_index=True)
    texts.insert(0, "example", range(len(texts)))
    scale = float(store.feature_stats(sae, feature)["max"].iloc[0])
    return CategoryView(
        texts=texts,
        windows=texts_with_feature(store, sae, feature, texts["text_id"].tolist()),
        scale=scale,
    )
