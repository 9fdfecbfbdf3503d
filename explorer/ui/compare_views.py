"""The compare page's section of the field's SAE metrics: one table of every metric per SAE,
k-sparse probing of the corpus's categories by layer, and (when the user asks, since they
load the source's SAEs) feature redundancy and cross-SAE matching.

Owns that section's layout and the formats of its columns. Probing comes from
`cached.sparse_probing` (store reads only); the decoder sections from
`explorer.ui.decoder_views`, imported only when switched on so the page otherwise never
imports torch. Definitions: docs/methods.md#k-sparse-probing, #redundancy, #matching.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from explorer.analysis.field_metrics import (
    PROBING_KS,
    field_metrics_table,
    metrics_by_sae,
    probing_by_category,
    probing_summary,
)
from explorer.charts.field_metrics import probing_chart
from explorer.errors import markdown_escaped
from explorer.methods_doc import methods_link
from explorer.store.reader import Store
from explorer.ui import cached
from explorer.ui.tables import column_formats, feature_table

NUMBER = st.column_config.NumberColumn


def by_sae_table(frame: pd.DataFrame, saes: list[str], **config: Any) -> None:
    """`frame` in full (no scrolling), three decimals in every SAE's column, plus `config`."""
    formats = {**{sae: NUMBER(sae, format="%.3f") for sae in saes}, **config}
    columns = list(frame.columns)
    st.dataframe(
        frame, hide_index=True, height="content", column_config=column_formats(columns, **formats)
    )


METRICS_HELP = (
    "L0 to shrinkage: the build's quality numbers. k-sparse probing: mean held-out balanced "
    "accuracy over the categories of a logistic probe on k features. Redundancy: each "
    "feature's largest decoder cosine with another feature of its SAE."
)
PROBING_HELP = (
    "One probe per category (that category against the rest) and k: the k features whose "
    "mean text activation differs most between the category's texts and the others, in "
    "pooled standard deviations, on the training half (every other text of each category); "
    "a class-balanced logistic regression on them; balanced accuracy on the held-out half "
    "(chance 0.5)."
)


def best_layer_sentence(probing: pd.DataFrame) -> str:
    """Which SAE's k-sparse probes are best on average, at each k."""
    summary = probing_summary(probing).set_index("sae")
    parts = [
        f"k = {column.removeprefix('probe_k')}: {markdown_escaped(summary[column].idxmax())} "
        f"({summary[column].max():.3f})"
        for column in summary.columns
    ]
    return "Best mean accuracy over the categories (chance 0.5): " + "; ".join(parts) + "."


def show_probing(store: Store, probing: pd.DataFrame) -> None:
    st.subheader("k-sparse probing of the categories", help=PROBING_HELP)
    st.caption(best_layer_sentence(probing) + " " + methods_link("k-sparse-probing"))
    chart_column, choice_column = st.columns([3, 1])
    chart_column.altair_chart(probing_chart(probing), width="stretch")
    k = choice_column.radio("k features", PROBING_KS, horizontal=True, key="compare_page.probe_k")
    table = probing_by_category(probing, k)
    best = NUMBER("best accuracy", format="%.3f")
    by_sae_table(table, list(table.columns[1:-2]), best_accuracy=best)
    with st.expander("The features each probe uses (chosen on the training half)"):
        chosen = probing[probing["k"] == k].explode("features")
        chosen = chosen.rename(columns={"features": "feature"}).astype({"feature": "int64"})
        feature_table(chosen, ["category", "sae", "feature", "accuracy"])


def show_field_metrics(store: Store) -> None:
    """The table of every metric per SAE, k-sparse probing, and on request the decoder
    sections (redundancy, cross-SAE matching)."""
    st.subheader("The field's metrics per SAE", help=METRICS_HELP)
    st.caption(
        "As SAEBench and SAELens's evals report them. "
        + " · ".join(
            [
                methods_link("sae-quality"),
                methods_link("k-sparse-probing"),
                methods_link("redundancy"),
                methods_link("matching"),
            ]
        )
    )
    probing = cached.sparse_probing(store)
    with_decoders = st.toggle(
        "Decoder metrics: redundancy and cross-SAE matching",
        help="They need the SAEs' decoder directions, which the store does not hold: this "
        "loads the store's source (model and SAEs) once per server.",
        key="compare_page.decoders",
    )
    redundancy = None
    if with_decoders:
        from explorer.ui import decoder_views  # imports torch: only when switched on

        redundancy = decoder_views.redundancy(store)
    table = field_metrics_table(store.saes(), probing, redundancy)
    by_sae_table(metrics_by_sae(table), table["sae"].tolist())
    show_probing(store, probing)
    if with_decoders:
        decoder_views.show_redundancy(redundancy)
        decoder_views.show_matching(store)
