"""The compare page's sections, a tab each: the specialists and frequency per SAE; the
description scores and quality per SAE; and the field's SAE metrics: one table of every
metric per SAE (of the explored store, or of it and a second store side by side), k-sparse
probing of the corpus's categories by layer (of both stores side by side too), and (when
the user asks, since they load the source's SAEs) feature redundancy and cross-SAE
matching.

Owns that section's layout and the number format of each metric's row (`METRIC_FORMATS`;
the tables go through `explorer.ui.tables`). Every number of the table but
redundancy comes from store reads: the build's quality numbers, probing from
`cached.sparse_probing` and the description scores from `cached.descriptions` (kept analyses
where the store holds them), for either store, with no model. The decoder sections come from
`explorer.ui.decoder_views`, imported only when switched on so the page otherwise never
imports torch. Definitions: docs/methods.md#the-fields-sae-metrics, #k-sparse-probing,
#redundancy, #matching, #one-to-one-matching.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import streamlit as st

from explorer.analysis.compare import QUALITY_METRICS, quality_sample_note
from explorer.analysis.field_metrics import (
    FIELD_METRICS,
    PROBING_KS,
    STORE_SEPARATOR,
    field_metrics_table,
    metrics_by_sae,
    probing_by_category,
    probing_summary,
    rows_side_by_side,
)
from explorer.analysis.specialists import MEASURE_INFO, MEASURES, SpecialistSettings
from explorer.charts.compare import quality_chart, specialists_per_category_chart
from explorer.charts.field_metrics import probing_chart
from explorer.errors import markdown_escaped
from explorer.methods_doc import methods_link
from explorer.store.reader import Store
from explorer.ui import cached
from explorer.ui.cached import feature_descriptions
from explorer.ui.links import feature_chart, show_chart
from explorer.ui.second_store import store_label
from explorer.ui.tables import (
    COLUMN_FORMATS,
    feature_table,
    metric_rows_table,
    percent_column,
    plain_table,
)

NUMBER = st.column_config.NumberColumn
# two tables of one row per SAE, each narrow enough for a 1440 px screen
SPECIALIST_COLUMNS = ["sae", "n_alive", "n_specialists", "pct_specialists",
                      "categories_with_specialists", "n_categories", "median_rank_specialists",
                      "median_rank_general", "spearman_rho", "spearman_p", "max_score"]  # fmt: skip
QUALITY_COLUMNS = ["sae", "layer", "n_features", *QUALITY_METRICS]
SCORE_FORMAT = "%.3f"  # scores, accuracies and cosines: three decimals
# The kind of number of each metric's row: the quality numbers' shared formats (L0 one
# decimal, dead and dense fractions as percentages), shares as percentages, the rest (probe
# accuracies, description-score medians, cosines) three decimals.
METRIC_FORMATS: dict[str, Any] = {
    **{name: COLUMN_FORMATS.get(name, NUMBER(title, format=SCORE_FORMAT))
       for name, title in FIELD_METRICS.items()},
    "share_max_cosine_above": percent_column(FIELD_METRICS["share_max_cosine_above"]),
}  # fmt: skip
METRIC_NAMES = {title: name for name, title in FIELD_METRICS.items()}


METRICS_HELP = (
    "L0 to shrinkage: the build's quality numbers. k-sparse probing: mean held-out balanced "
    "accuracy over the categories of a logistic probe on k features. Description score: how "
    "well each feature's description predicts where it fires on held-out texts. Redundancy: "
    "each feature's largest decoder cosine with another feature of its SAE."
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


def probing_table(probing: pd.DataFrame, k: int) -> None:
    """Per category of `probing` (one store's probes), the best SAE and its accuracy, then
    each SAE's accuracy at `k` features."""
    table = probing_by_category(probing, k)
    saes = list(table.columns[1:-2])
    plain_table(
        table,
        ["category", "best_sae", "best_accuracy", *saes],  # the answer before the detail
        height="content",
        best_sae=st.column_config.TextColumn("best SAE"),
        best_accuracy=NUMBER("best accuracy", format=SCORE_FORMAT),
        **{sae: NUMBER(sae, format=SCORE_FORMAT) for sae in saes},
    )


def show_probing(stores: Mapping[str, Store]) -> None:
    """k-sparse probing of the categories of every SAE of `stores` (`compared_stores`: the
    explored store alone, or it and a second store, side by side in the chart and a table
    each, since eight SAE columns do not fit a 1440 px screen), each store's probes read
    from it; the features each probe uses, for the explored store (its feature pages are
    this session's)."""
    probings = {label: cached.sparse_probing(s) for label, s in stores.items()}
    explored = next(iter(probings.values()))
    probing = explored if len(probings) == 1 else rows_side_by_side(probings)
    st.subheader("k-sparse probing of the categories", help=PROBING_HELP)
    caption = best_layer_sentence(probing)
    if len(probings) > 1:
        caption += (
            f' Both stores\' SAEs, a line "<store>{STORE_SEPARATOR}<SAE>" each and a table '
            "each, each store probed on its own texts and categories (its kept probes where it "
            "holds them): the accuracies compare across stores where the corpora are the "
            "same; a category one corpus lacks is not in that store's table."
        )
    st.caption(caption + " " + methods_link("k-sparse-probing"))
    chart_column, choice_column = st.columns([3, 1])
    show_chart(probing_chart(probing), chart_column)
    k = choice_column.radio("k features", PROBING_KS, horizontal=True, key="compare_page.probe_k")
    for label, rows in probings.items():
        if label:
            st.markdown(f"**{markdown_escaped(label)}**")
        probing_table(rows, k)
    title = "The features each probe uses (chosen on the training half)"
    if len(probings) > 1:
        title += f", {markdown_escaped(next(iter(stores)))}'s SAEs"
    chosen_box = st.expander(title, key="probe_features", on_change="rerun")
    if not chosen_box.open:  # its table runs only while it is open
        return
    with chosen_box:
        chosen = explored[explored["k"] == k].explode("features")
        chosen = chosen.rename(columns={"features": "feature"}).astype({"feature": "int64"})
        feature_table(
            chosen,
            ["category", "sae", "feature", "accuracy"],
            accuracy=NUMBER(
                "probe accuracy", format=SCORE_FORMAT, help="its probe's held-out balanced accuracy"
            ),
        )


def store_metrics(store: Store, redundancy: pd.DataFrame | None = None) -> pd.DataFrame:
    """`field_metrics_table` of `store` from its reads (quality, probing, description
    scores), with `redundancy` when given."""
    probing = cached.sparse_probing(store)
    return field_metrics_table(store.saes(), probing, redundancy, cached.description_summary(store))


def compared_stores(store: Store, other: Store | None) -> dict[str, Store]:
    """The stores the section shows, by label: `store` alone (label ""), or "A: ..." and
    "B: ..." (`store_label`)."""
    if other is None:
        return {"": store}
    return {store_label(store, "A"): store, store_label(other, "B"): other}


def show_field_metrics(store: Store, other: Store | None = None) -> None:
    """The table of every metric per SAE (with `other`: a table per store, each headed by
    the store's label, the same metrics in the same rows), k-sparse probing of every SAE
    shown, and on request the
    decoder sections (redundancy, cross-SAE matching, across both stores where the loaded
    source holds their SAEs)."""
    st.subheader("The field's metrics per SAE", help=METRICS_HELP)
    links = ["sae-quality", "k-sparse-probing", "description-score-offline-detection-scoring"]
    st.caption(
        "As SAEBench and SAELens's evals report them. "
        + " · ".join(methods_link(anchor) for anchor in [*links, "redundancy", "matching"])
    )
    stores = compared_stores(store, other)
    if other is not None:
        first, second = stores
        st.caption(
            f"Two stores side by side: every SAE of {markdown_escaped(first)} and of "
            f"{markdown_escaped(second)}, a table each with the same metrics in the same "
            "rows; every number but redundancy read from each store (its kept analyses where "
            "it holds them), no model loaded. " + methods_link("field-metrics-two-stores")
        )
    with_decoders = st.toggle(
        "Decoder metrics: redundancy and cross-SAE matching",
        help="They need the SAEs' decoder directions, which the store does not hold: this "
        "loads the store's source (model and SAEs) once per server.",
        key="compare_page.decoders",
    )
    redundancy: dict[str, pd.DataFrame | None] = {}
    if with_decoders:
        from explorer.ui import decoder_views  # imports torch: only when switched on

        redundancy = {label: decoder_views.redundancy(s) for label, s in stores.items()}
    tables = {label: store_metrics(s, redundancy.get(label)) for label, s in stores.items()}
    for label, table in tables.items():  # a table per store: eight SAE columns do not fit
        if label:
            st.markdown(f"**{markdown_escaped(label)}**")
        shown = metrics_by_sae(table)
        formats = [METRIC_FORMATS[METRIC_NAMES[title]] for title in shown["metric"]]
        metric_rows_table(shown, formats)
    missing = [
        label or "this store"
        for label, table in tables.items()
        if "description_f1_median" not in table or table["description_f1_median"].isna().any()
    ]
    if missing:
        st.caption(
            "Description-score medians are left out where the scores are neither kept in the "
            f"store nor quick to compute ({markdown_escaped(', '.join(missing))}): the section "
            "Description scores per SAE computes them."
        )
    show_probing(stores)
    if with_decoders:
        decoder_views.show_redundancy(redundancy)
        decoder_views.show_matching(stores)


def show_specialists(
    store: Store,
    settings: SpecialistSettings,
    family: str,
    comparison: pd.DataFrame,
    matrix: pd.DataFrame,
) -> None:
    """The specialists and frequency per SAE (`compare_saes`: `comparison`) and the
    specialists per category (`category_matrix`: `matrix`) of the sidebar's family."""
    st.subheader("Specialists and frequency per SAE")
    st.caption(
        f"Measure: **{MEASURES[settings.measure]}**, at least {settings.min_support} supporting "
        f"texts; specialists of the family {markdown_escaped(family)} (sidebar). Thresholds are "
        "in the sidebar and in this page's URL. Ranks: the median frequency rank, 1 = the SAE's "
        "most frequent feature; rho: Spearman's, of token frequency against the best score. "
        "Each header's tooltip defines its column. "
        f"{methods_link(MEASURE_INFO[settings.measure].anchor)} · "
        f"{methods_link('frequency-vs-specialization')}"
    )
    plain_table(comparison, SPECIALIST_COLUMNS)

    st.subheader("Specialists per category")
    st.caption("One bar per SAE (by layer); click a bar to open the category's best feature there.")
    bars = matrix.assign(description=feature_descriptions(store, matrix, "best_feature"))
    feature_chart(specialists_per_category_chart(bars))
    numbers = st.expander("Numbers", key="category_numbers", on_change="rerun")
    if numbers.open:  # its table runs only while it is open
        with numbers:
            counts = matrix.pivot(index="category", columns="sae", values="n_specialists")
            saes = [sae for sae in comparison["sae"] if sae in counts.columns]  # by layer
            count = {sae: st.column_config.NumberColumn(sae, format="%d") for sae in saes}
            plain_table(counts.reset_index(), ["category", *saes], **count)


def show_scores_and_quality(store: Store, comparison: pd.DataFrame) -> None:
    """The description scores per SAE (on request where the store is big) and the quality
    per SAE (`comparison`)."""
    st.subheader("Description scores per SAE")
    st.caption(
        "How well each live feature's automatic description (its tokens, made from half of the "
        "corpus's texts) predicts where it fires on the other half: F1, with balanced accuracy "
        "(chance 0.5). " + methods_link("description-score-offline-detection-scoring")
    )
    rows = int(store.frequency_table()["n_active_tokens"].sum())
    if st.toggle(
        "Score every SAE's descriptions",
        value=rows <= cached.MAX_SCAN_ROWS_ON_VIEW,
        help=f"One pass over each SAE's activations ({rows:,} rows in all), once per store.",
    ):
        plain_table(cached.description_score_table(store))

    st.subheader("Quality per SAE")
    st.caption(f"{quality_sample_note(store.saes(), store.meta())} {methods_link('sae-quality')}")
    plain_table(comparison, QUALITY_COLUMNS)
    show_chart(quality_chart(comparison))
