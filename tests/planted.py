"""Pieces of the planted stores the unit tests write by hand (known activations, so each
measure can be checked against an independent computation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from explorer.store.schema import SaeInfo
from explorer.store.writer import StoreWriter


def two_family_texts(
    prose: Sequence[str],
    operations: Sequence[str],
    per_category: int,
    operation_labels: Callable[[str], list[str]] = lambda operation: [f"op:{operation}"],
) -> pd.DataFrame:
    """text_id, category, source, text, labels, index: `per_category` texts of each `prose`
    category (source `bundled`, no labels), then of each of the `operations` (source
    `arithmetic`, labelled `operation_labels(operation)`, called once per text in order);
    text "<category> <index>", index its number within its category."""
    rows = []
    for source, categories in (("bundled", prose), ("arithmetic", operations)):
        for category in categories:
            for index in range(per_category):
                labels = operation_labels(category) if source == "arithmetic" else []
                rows.append(
                    {
                        "text_id": len(rows),
                        "category": category,
                        "source": source,
                        "text": f"{category} {index}",
                        "labels": labels,
                        "index": index,
                    }
                )
    return pd.DataFrame(rows)


def tokens_of(texts: pd.DataFrame) -> pd.DataFrame:
    """text_id, pos, token_id, token: positions 1..n_tokens of each text (0 is BOS), token
    id = position, token "t<pos>"."""
    return pd.DataFrame(
        [
            {"text_id": t, "pos": p, "token_id": p, "token": f"t{p}"}
            for t, n in zip(texts["text_id"], texts["n_tokens"], strict=True)
            for p in range(1, n + 1)
        ]
    )


def add_tokens(writer: StoreWriter, tokens: pd.DataFrame) -> None:
    writer.add_tokens(
        tokens["text_id"].to_numpy(),
        tokens["pos"].to_numpy(),
        tokens["token_id"].to_numpy(),
        tokens["token"].tolist(),
    )


def add_acts_with_stats(writer: StoreWriter, sae: str, rows: pd.DataFrame, d_sae: int) -> None:
    """One SAE's rows (feature, text_id, pos, value) and the feature statistics they imply,
    computed with pandas."""
    writer.add_acts(
        sae,
        rows["feature"].to_numpy(),
        rows["text_id"].to_numpy(),
        rows["pos"].to_numpy(),
        rows["value"].to_numpy(),
    )
    grouped = rows.groupby("feature")
    index = pd.RangeIndex(d_sae)
    writer.add_feature_stats(
        sae,
        {
            "n_active_tokens": grouped.size().reindex(index, fill_value=0).to_numpy(),
            "n_active_texts": grouped["text_id"].nunique().reindex(index, fill_value=0).to_numpy(),
            "mean_active": grouped["value"].mean().reindex(index, fill_value=0).to_numpy(),
            "max": grouped["value"].max().reindex(index, fill_value=0).to_numpy(),
        },
    )


def write_small_store(path: Path, categories: list[str], sae: str = "s0", d_sae: int = 8) -> None:
    """A store with one SAE and one two-token text per entry of `categories`, each text's
    first token firing feature text_id % d_sae at 1.0: enough for the ledger and user data."""
    texts = pd.DataFrame(
        {
            "text_id": range(len(categories)),
            "category": categories,
            "source": "planted",
            "text": [f"text {i}" for i in range(len(categories))],
            "n_tokens": 2,
        }
    )
    rows = pd.DataFrame(
        {"feature": texts["text_id"] % d_sae, "text_id": texts["text_id"], "pos": 1, "value": 1.0}
    )
    with StoreWriter(path, meta={"source": "planted"}) as writer:
        writer.add_sae(
            SaeInfo(sae=sae, hook_name="blocks.0.hook_resid_post", layer=0, d_in=4, d_sae=d_sae)
        )
        writer.add_texts(texts.drop(columns="n_tokens"))
        add_tokens(writer, tokens_of(texts))
        add_acts_with_stats(writer, sae, rows, d_sae)


def write_one_sae_store(
    path: Path,
    texts: pd.DataFrame,
    tokens: pd.DataFrame,
    acts: pd.DataFrame,
    d_sae: int = 8,
    source: str = "planted",
) -> Path:
    """A store at `path` with one SAE `s0` (layer 0, `d_sae` features) over `texts`
    (text_id, category, source, text, labels), `tokens` (text_id, pos, token_id, token) and
    its activations `acts` (feature, text_id, pos, value); `source` is the store's meta
    source."""
    with StoreWriter(path, meta={"source": source}) as writer:
        writer.add_sae(
            SaeInfo(sae="s0", hook_name="blocks.0.hook_resid_post", layer=0, d_in=8, d_sae=d_sae)
        )
        writer.add_texts(texts[["text_id", "category", "source", "text", "labels"]])
        add_tokens(writer, tokens)
        add_acts_with_stats(writer, "s0", acts, d_sae)
    return path
