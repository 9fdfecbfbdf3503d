"""Tables that name features: a link column to each feature's page and number formats.

Owns how every page shows a DataFrame in `st.dataframe`: the one dictionary of column
formats by column name (`COLUMN_FORMATS`: the specialist measures, rankings, logit lens,
search, intervention, SAE quality and comparison numbers; `plain_table` shows any frame in
them), and, for frames with `sae` and `feature` columns, a first
`link` column holding `explorer.ui.links.feature_url` (`feature_table`). The token page's
"top features at each token" shows its feature ids as links through `top_features_table`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from explorer.analysis.compare import QUALITY_METRICS
from explorer.charts.rankings import feature_bar_chart
from explorer.charts.tokens_html import visible_text
from explorer.ui.cached import feature_descriptions, with_descriptions
from explorer.ui.links import Target, feature_chart, feature_url, linked_dataframe
from explorer.ui.state import current_store

LINK = "link"
MISSING = "—"  # a cell with no value, never None or null
NUMBER = st.column_config.NumberColumn
# The number style: frequencies and shares as percentages (Streamlit's, up to two decimals:
# fixed decimals would need the tables to hold percentage points), a fixed number of decimals
# per kind of number (activations 2, scores and similarities 3), scientific notation only for
# p- and q-values (they span hundreds of orders of magnitude).
PERCENT = "percent"
COLUMN_FORMATS: dict[str, Any] = {
    # specialist measures and feature statistics
    "score": NUMBER("score", format="%.3f"),
    "share": NUMBER("share", format=PERCENT),
    "max_other_share": NUMBER("max other share", format=PERCENT),
    "auroc": NUMBER("AUROC", format="%.3f"),
    "enrichment": NUMBER("enrichment", format="%.2f"),
    "p_value": NUMBER("p", format="%.2e"),
    "q_value": NUMBER("q (BH)", format="%.2e"),
    "token_freq": NUMBER("token freq", format=PERCENT),
    "text_freq": NUMBER("text freq", format=PERCENT),
    "max": NUMBER("max act", format="%.2f"),
    "max_act": NUMBER("max act", format="%.2f"),
    "mean_active": NUMBER("mean act", format="%.2f"),
    # rankings, co-firing and concepts
    "composite": NUMBER("token freq x mean act", format="%.4f"),
    "max_text_act": NUMBER("max text act", format="%.2f"),
    "concept_score": NUMBER("concept score", format="%.3f"),
    "mean_in": NUMBER("mean act in category", format="%.4f"),
    "mean_out": NUMBER("mean act outside", format="%.4f"),
    "coverage": NUMBER("coverage", format=PERCENT),
    "example_mean": NUMBER("mean act on examples", format="%.4f"),
    "corpus_mean": NUMBER("corpus mean act", format="%.4f"),
    "lift": NUMBER("lift", format="%.2f"),
    "active_share": NUMBER("active share", format=PERCENT),
    "jaccard": NUMBER("Jaccard", format="%.3f"),
    "cosine": NUMBER("cosine", format="%.3f"),
    "n_both": NUMBER("together"),
    "n_active": NUMBER("active"),
    "is_specialist": st.column_config.CheckboxColumn("specialist"),
    # logit lens
    "promoted": st.column_config.ListColumn("promoted tokens"),
    "suppressed": st.column_config.ListColumn("suppressed tokens"),
    "max_logit": NUMBER("max logit", format="%.3f"),
    "min_logit": NUMBER("min logit", format="%.3f"),
    "logit": NUMBER("logit", format="%.4f"),
    "hit_rate": NUMBER("hit rate", format=PERCENT),
    "input_hit_rate": NUMBER("input hit rate", format=PERCENT),
    "random_hit_rate": NUMBER("random hit rate", format=PERCENT),
    "mean_next_rank": NUMBER("mean next rank", format="%.0f"),
    "max_cosine": NUMBER("max cosine", format="%.3f"),
    # search by text
    "sum": NUMBER("sum", format="%.3f"),
    "n_tokens": NUMBER("active tokens"),
    "peak_token": "strongest token",
    "share_of_max": NUMBER(
        "share of its corpus max", format=PERCENT, help="max here / max over the corpus"
    ),
    # interventions
    "mean_delta_loss": NUMBER("mean change in loss", format="%+.5f"),
    "clean_prob": NUMBER("clean p", format="%.3f"),
    "patched_prob": NUMBER("intervened p", format="%.3f"),
    # SAE quality and the comparison of SAEs
    **{name: NUMBER(title, format="%.3f") for name, title in QUALITY_METRICS.items()},
    "l0": NUMBER("L0", format="%.1f"),
    "quality_texts": NUMBER("texts in the quality sample", format="%d"),
    "layer": NUMBER("layer", format="%d"),
    "n_features": NUMBER("features", format="%d"),
    "n_alive": NUMBER("live features", format="%d"),
    "n_specialists": NUMBER("specialist features", format="%d"),
    "pct_specialists": NUMBER("% specialists (of live)", format="%.1f"),
    "n_discovered": NUMBER("found on the discovery half", format="%d"),
    "n_replicated": NUMBER("found again on the other half", format="%d"),
    "replication_pct": NUMBER("% replicated", format="%.1f"),
    "categories_with_specialists": NUMBER("categories with a specialist", format="%d"),
    "n_categories": NUMBER("categories", format="%d"),
    "median_rank_specialists": NUMBER("median freq rank: specialists", format="%.0f"),
    "median_rank_general": NUMBER("median freq rank: general", format="%.0f"),
    "spearman_rho": NUMBER("Spearman rho (freq vs score)", format="%.3f"),
    "spearman_p": NUMBER("p-value", format="%.2e"),
    "max_score": NUMBER("max score", format="%.3f"),
    # description scores per SAE
    "n_live": NUMBER("live features", format="%d"),
    "n_scored": NUMBER("scored", format="%d"),
    "f1_mean": NUMBER("F1 mean", format="%.2f"),
    "f1_q25": NUMBER("F1 25%", format="%.2f"),
    "f1_median": NUMBER("F1 median", format="%.2f"),
    "f1_q75": NUMBER("F1 75%", format="%.2f"),
    "balanced_accuracy_mean": NUMBER("balanced accuracy mean", format="%.2f"),
    "f1_at_least_half": NUMBER("share with F1 >= 0.5", format=PERCENT),
    # chance baselines (label permutations)
    "chance_mean": NUMBER("by chance (mean)", format="%.2f"),
    "chance_p95": NUMBER("by chance (95th pct)", format="%.1f"),
    "chance_p": NUMBER("permutation p", format="%.3f"),
    "beats_chance": st.column_config.CheckboxColumn("beats chance"),
    # descriptions
    "description": st.column_config.TextColumn(
        "description",
        help="your label, or the automatic description (docs/methods.md)",
        width="medium",  # a long description is cut, so the numbers after it stay in view
    ),
    "f1": NUMBER("description score (F1)", format="%.2f"),
}


def column_formats(columns: list[str], **config: Any) -> dict[str, Any]:
    """The `column_config` of `columns`: their `COLUMN_FORMATS`, then `config` by name."""
    return {
        **{name: fmt for name, fmt in COLUMN_FORMATS.items() if name in columns},
        **config,
    }


def displayed(frame: pd.DataFrame, config: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """`frame` and its column `config` as a person reads them: a column with no value at all
    is dropped and a missing text says `MISSING` (a table never says None or null for a
    text). A number column keeps its numbers, missing ones included, so a click on its header
    still sorts it by value (as text, "9.9" would sort above "199.1"); its format names the
    kind of number. Values are never rescaled: a page's table holds the library's numbers."""
    empty = [c for c in frame.columns if len(frame) and frame[c].isna().all()]
    shown = frame.drop(columns=empty)
    config = {name: value for name, value in config.items() if name not in empty}
    for column in shown.columns:
        values = shown[column]
        text = values.dtype == object or pd.api.types.is_string_dtype(values)
        if text and values.isna().any():
            shown[column] = values.astype(object).where(values.notna(), MISSING)
    return shown, config


def plain_table(frame: pd.DataFrame, columns: list[str] | None = None, **config: Any) -> None:
    """Show `frame` (its `columns`, default all) without the index, in the shared formats
    (`displayed`); a frame naming features (sae and feature columns) goes to `feature_table`,
    for their descriptions and links."""
    columns = list(frame.columns) if columns is None else columns
    if {"sae", "feature"} <= set(frame.columns) and "feature" in columns:
        feature_table(frame, [c for c in columns if c != "sae"], **config)  # names features
        return
    shown, formats = displayed(frame[columns], column_formats(columns, **config))
    st.dataframe(shown, hide_index=True, column_config=formats)


def with_feature_links(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`columns` of `frame` with a first `link` column to each row's feature page."""
    pairs = zip(frame["sae"], frame["feature"], strict=True)
    links = [feature_url(sae, feature) for sae, feature in pairs]
    return frame[columns].assign(**{LINK: links})[[LINK, *columns]]


def feature_table(frame: pd.DataFrame, columns: list[str], **config: Any) -> None:
    """Show `frame` (with sae and feature columns) as a dataframe whose first column links
    to each feature's page, with each feature's description after its id; `config` adds or
    overrides column configs by name. One click on the link or the id opens the page
    (`linked_dataframe`)."""
    frame, columns = with_descriptions(current_store(), frame, columns)
    pairs = [
        (str(sae), int(feature))
        for sae, feature in zip(frame["sae"], frame["feature"], strict=True)
    ]
    shown, formats = displayed(
        with_feature_links(frame, columns),
        {
            LINK: st.column_config.LinkColumn("page", display_text="open", width="small"),
            **column_formats(columns, **config),
        },
    )
    linked_dataframe(
        shown, {LINK: pairs, "feature": pairs} if "feature" in columns else {LINK: pairs}, formats
    )


def features_with_chart(
    frame: pd.DataFrame,
    columns: list[str],
    bar: tuple[str, str, dict[str, str]],
    empty: str,
    side_by_side: bool = False,
) -> None:
    """`feature_table` of `frame` and a bar chart of one of its columns (`bar`: column,
    axis title, extra tooltips), below or beside the table; `empty` (Markdown) when there
    are no rows."""
    if frame.empty:
        st.info(empty)
        return
    frame, columns = with_descriptions(current_store(), frame, columns)  # table and tooltips
    table_place, chart_place = st.columns(2) if side_by_side else (st.container(), st.container())
    with table_place:
        feature_table(frame, columns)
    feature_chart(feature_bar_chart(frame, *bar), chart_place)


def top_features_table(top: pd.DataFrame, sae: str, n: int) -> None:
    """Show `TextActivations.top_features_table(n)`: tokens with whitespace made visible, and
    each `feature k` cell as the feature's id and description ("—" where fewer features
    fire); one click on it opens the feature's page."""
    shown = top.assign(token=top["token"].map(visible_text))
    config: dict[str, Any] = {"pos": NUMBER("position", format="%d"), "token": "token"}
    targets: dict[str, list[Target]] = {}
    for rank in range(1, n + 1):
        column, value = f"feature {rank}", f"value {rank}"
        ids = top[column]
        named = pd.DataFrame({"sae": sae, "feature": ids.fillna(-1).astype("int64")})
        descriptions = feature_descriptions(current_store(), named)
        targets[column] = [None if pd.isna(f) else (sae, int(f)) for f in ids]
        shown[column] = [
            MISSING if pd.isna(f) else " · ".join(filter(None, [f"#{int(f)}", text]))
            for f, text in zip(ids, descriptions, strict=True)
        ]
        config[column] = st.column_config.TextColumn(
            f"#{rank} feature", help="id · description; click to open its page", width="medium"
        )
        config[value] = NUMBER(f"#{rank} act", format="%.2f")
    shown, formats = displayed(shown, config)
    linked_dataframe(shown, targets, formats)
