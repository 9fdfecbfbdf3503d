"""Independent computations the store is checked against: what a notebook would compute from
the raw rows with pandas, shared by the tests and the benchmarks (which import it from here;
tests never import bench).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def feature_category_pandas(acts: pd.DataFrame, texts: pd.DataFrame) -> pd.DataFrame:
    """The feature x category table of one SAE from its nonzero rows, as a notebook would
    (the in-memory baseline of the benchmark and the reference the store's tests use)."""
    texts = texts[texts["n_tokens"] > 0]
    n_texts = texts.groupby("category").size()
    feature_max = acts.groupby("feature")["value"].max()
    rows = acts.merge(texts[["text_id", "category", "n_tokens"]], on="text_id")
    rows["share"] = rows["value"].astype(np.float64) / rows["n_tokens"]
    rows["strong"] = rows["value"] >= 0.5 * rows["feature"].map(feature_max)
    table = rows.groupby(["feature", "category"]).agg(
        n_texts_active=("text_id", "nunique"),
        n_tokens_active=("value", "size"),
        share=("share", "sum"),
        max_act=("value", "max"),
        strong_count=("strong", "sum"),
    )
    full = pd.MultiIndex.from_product(
        [sorted(feature_max.index), sorted(n_texts.index)], names=["feature", "category"]
    )
    table = table.reindex(full, fill_value=0).reset_index()
    table["n_texts"] = table["category"].map(n_texts)
    table["mean_act"] = table.pop("share") / table["n_texts"]
    return table[
        [
            "feature",
            "category",
            "n_texts",
            "n_texts_active",
            "n_tokens_active",
            "mean_act",
            "max_act",
            "strong_count",
        ]
    ]
