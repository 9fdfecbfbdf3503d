"""How the feature page lays out one feature: its numbers, what it responds to, what it
promotes, the features it resembles, its label form and exports.

Owns the sections of the feature dashboard below the feature picker. Each takes what the
library computed (`explorer.analysis.feature_data.FeatureData`, cached reads from
`explorer.ui.feature_cache`) and renders it; corpus text reaches the page only through
`explorer.charts.tokens_html` (escaped HTML) and `st.dataframe`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pandas as pd
import streamlit as st

from explorer.analysis.descriptions import corpus_only, score_summary
from explorer.analysis.feature_data import FeatureData
from explorer.charts.feature import (
    CATEGORY_MEASURES,
    activation_histogram_chart,
    category_chart,
    logit_histogram_chart,
    logit_lens_chart,
)
from explorer.charts.tokens_html import Highlight, examples_html
from explorer.errors import ExplorerError, markdown_escaped, quoted
from explorer.number_style import percent_text
from explorer.sources.source import LoadedSource, SaeHandle
from explorer.store.queries.descriptions import corpus_token_ids
from explorer.store.queries.feature import adjacent_live_feature
from explorer.store.reader import Store
from explorer.store.schema import MAX_LABEL_CHARS, MAX_NOTE_CHARS
from explorer.ui import feature_cache as cache
from explorer.ui.lens_views import hide_absent_tokens
from explorer.ui.links import ablation_url, show_chart
from explorer.ui.loaded import missing_sae_message
from explorer.ui.tables import FREQ_DECIMALS, feature_table, plain_table

METRIC_HELP = {"frequency rank": "1 = the most frequent of the SAE's {d_sae:,} features."}
MOVES = {  # label: (icon, help)
    "Previous": (":material/chevron_left:", "The previous feature that fires in this store"),
    "Next": (":material/chevron_right:", "The next feature that fires in this store"),
    "Random": (":material/shuffle:", "A random live feature"),
}


def move_buttons(
    columns: list[Any],
    store: Store,
    sae: str,
    feature: int,
    live: list[int],
    go_to: Callable[[int | None], None],
) -> None:
    """Previous / Next (the nearest live features) and Random (a live one) buttons, one per
    column, calling `go_to` with their feature; switched off when there is none."""
    targets = {
        "Previous": adjacent_live_feature(store, sae, feature, -1),
        "Next": adjacent_live_feature(store, sae, feature, 1),
        "Random": random.choice(live) if live else None,
    }
    for column, (label, (icon, help_text)) in zip(columns, MOVES.items(), strict=True):
        target = targets[label]
        column.button(
            label,
            icon=icon,
            on_click=go_to,
            args=(target,),
            disabled=target is None,
            help=help_text,
            width="stretch",
        )


def show_description(described: pd.Series) -> None:
    """The automatic description (`cached.descriptions` row) and its detection score."""
    st.caption(
        markdown_escaped(f"Automatic description ({described['kind']}): {described['description']}")
        + "  \n"
        + score_summary(described)
    )


def show_links(data: FeatureData) -> None:
    """Buttons to the ablation lab set to this feature and to its Neuronpedia page."""
    columns = st.columns([1, 1, 4])
    url = ablation_url(data.sae, data.feature)
    columns[0].link_button("Ablate or steer it", url, icon=":material/science:", width="stretch")
    if data.neuronpedia_url:
        columns[1].link_button("Open on Neuronpedia", data.neuronpedia_url, width="stretch")


def show_metrics(data: FeatureData, d_sae: int) -> None:
    stats = data.stats
    metrics = {
        # the tables' number style: frequencies as percentages with 2 decimals, activations 2
        "token frequency": percent_text(stats["token_freq"], FREQ_DECIMALS),
        "text frequency": percent_text(stats["text_freq"], FREQ_DECIMALS),
        "frequency rank": f"{int(stats['freq_rank']):,}",
        "max activation": f"{stats['max']:.2f}",
        "mean when active": f"{stats['mean_active']:.2f}",
        "active tokens": f"{int(stats['n_active_tokens']):,}",
    }
    for column, (name, value) in zip(st.columns(len(metrics)), metrics.items(), strict=True):
        column.metric(name, value, help=METRIC_HELP.get(name, "").format(d_sae=d_sae))


DEAD = "This feature never fires on the store's corpus: no examples or histogram to show."


def _highlight(data: FeatureData) -> Highlight:
    return Highlight(f"{data.sae} #{data.feature}", float(data.stats["max"]))


def show_responses(data: FeatureData) -> None:
    """Activation histogram, categories and the top activations, highlighted."""
    if data.is_dead:
        st.info(DEAD)
        return
    left, right = st.columns(2)
    left.subheader("Activation histogram")
    show_chart(activation_histogram_chart(data.histogram, data.stats["max"]), left)
    right.subheader("Categories")
    measure = right.selectbox("Measure", list(CATEGORY_MEASURES), format_func=CATEGORY_MEASURES.get)
    show_chart(category_chart(data.categories, measure), right)
    st.subheader("Top activations")
    st.html(examples_html(data.windows, data.top_captions(), _highlight(data)))


def show_range_examples(data: FeatureData) -> None:
    """Highlighted examples from each interval of the activation range (the quantile
    captions), coloured on the same scale as the top activations."""
    st.subheader("Examples across the activation range")
    if data.is_dead:
        st.info(DEAD)
        return
    st.html(examples_html(data.windows, data.quantile_captions(), _highlight(data)))


def show_logit_lens(
    store: Store, data: FeatureData, loaded: LoadedSource, handle: SaeHandle | None
) -> None:
    """Promoted and suppressed tokens (tokens absent from the corpus hidden by default), and
    the logit histogram over the vocabulary when the loaded source has the SAE."""
    st.subheader("Decoder logit lens")
    lens = data.logit_lens
    if hide_absent_tokens("feature_page.in_corpus"):
        lens, n_hidden = corpus_only(lens, corpus_token_ids(store, lens["token_id"].tolist()))
        if n_hidden:
            st.caption(f"{n_hidden} stored tokens that never occur in the corpus are hidden.")
        if not (lens["rank"] > 0).any():
            st.caption("None of the stored promoted tokens occurs in the corpus.")
        if not (lens["rank"] < 0).any():
            st.caption("None of the stored suppressed tokens occurs in the corpus.")
    # one chart for both directions (diverging bars): each chart costs the browser ~60 ms on
    # every navigation, and a direction whose tokens are all hidden leaves no empty chart
    lens_column, histogram_column = st.columns(2)
    if len(lens):
        show_chart(logit_lens_chart(lens, "Promoted and suppressed tokens"), lens_column)
    if handle is None:
        needs = "the logit histogram and decoder neighbours need its decoder"
        histogram_column.info(missing_sae_message(store, data.sae, needs))
    else:
        histogram = cache.logit_histogram(loaded, data.sae, data.feature)
        chart = logit_histogram_chart(histogram, "All tokens of the vocabulary")
        show_chart(chart, histogram_column)


def show_related(
    store: Store, loaded: LoadedSource, handle: SaeHandle | None, sae: str, feature: int, k: int
) -> None:
    """The nearest features by decoder cosine in this SAE (needs the loaded SAE; the other
    SAEs' are the lineage section's) and the features that fire with it (Jaccard over
    tokens or texts)."""
    st.subheader("Related features")
    # one table under the other: in half-width columns (480 px at 1440) the numbers were cut
    if handle is not None:
        neighbours = cache.decoder_neighbours_of(loaded, sae, feature, k)
        st.markdown("**Nearest by decoder cosine in this SAE**")
        feature_table(neighbours[neighbours["sae"] == sae], ["feature", "cosine"])
    names = store.saes()["sae"].tolist()
    st.markdown("**Co-firing features** (Jaccard)")
    level_column, sae_column = st.columns(2)
    level = level_column.radio("Co-firing over", ["token", "text"], horizontal=True)
    other_sae = sae_column.selectbox("Candidates from", names, index=names.index(sae))
    cofiring = cache.co_firing(store, sae, feature, k, level, other_sae)
    feature_table(cofiring, ["feature", "jaccard", "n_both", "n_active"])


def label_form(store: Store, sae: str, feature: int, read_only: bool) -> pd.DataFrame:
    """The label and notes form (switched off when `read_only`); returns the labels after
    any save, newest first."""
    st.subheader("Label and notes")
    if read_only:
        st.caption("Labels are read-only in the public demo: the form is switched off.")
    with st.form(f"label.{sae}.{feature}"):
        label = st.text_input("Label", max_chars=MAX_LABEL_CHARS, disabled=read_only)
        note = st.text_area("Notes", max_chars=MAX_NOTE_CHARS, disabled=read_only)
        saved = st.form_submit_button("Save label", disabled=read_only)
    if saved and not read_only:
        try:
            store.save_label(sae, feature, label, note)
            st.success(f"Saved the label {quoted(label.strip(), MAX_LABEL_CHARS)}.")
        except ExplorerError as error:
            st.error(str(error))
    labels = store.labels(sae, feature)
    if labels.empty:  # a line, not an empty grid: most features have no label
        st.caption("No label saved for this feature yet.")
        return labels
    plain_table(
        labels.assign(note=labels["note"].replace(r"^\s*$", None, regex=True)),  # no note
        ["label", "note", "created_at"],
        created_at=st.column_config.DatetimeColumn("saved", format="YYYY-MM-DD HH:mm"),
    )
    return labels


def show_exports(data: FeatureData, labels: pd.DataFrame) -> None:
    st.subheader("Export")
    export = replace(data, labels=labels)
    name = f"{data.sae}_{data.feature}"
    csv_column, json_column = st.columns(2)
    # the files are made when a button is clicked (Streamlit's deferred data), not on each run
    csv_column.download_button(
        "Examples (CSV)", export.to_csv, f"{name}_examples.csv", "text/csv", on_click="ignore"
    )
    json_column.download_button(
        "Everything (JSON)", export.to_json, f"{name}.json", "application/json", on_click="ignore"
    )
