"""Tables that name features: a link column to each feature's page and number formats.

Owns how every page shows a DataFrame in `st.dataframe`: the one dictionary of column
formats by column name (`COLUMN_FORMATS`: the specialist measures, rankings, logit lens,
search, intervention, SAE quality and comparison numbers; `plain_table` shows any frame in
them; `metric_rows_table` a table turned round, one measure a row, each row in its own
format), and, for frames with `sae` and `feature` columns, a first
`link` column holding `explorer.ui.links.feature_url` (`feature_table`). The token page's
"top features at each token" shows its feature ids as links through `top_features_table`.
The text of each kind of number is `explorer.number_style`'s; this module applies it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from functools import partial
from itertools import compress
from typing import Any, Literal

import pandas as pd
import streamlit as st
from pandas.io.formats.style import Styler

from explorer.analysis.compare import QUALITY_METRICS
from explorer.charts.rankings import feature_bar_chart
from explorer.charts.tokens_html import visible_text
from explorer.number_style import MISSING, p_value_text, percent_text
from explorer.ui.cached import feature_descriptions, with_descriptions
from explorer.ui.links import Target, feature_chart, feature_url, linked_dataframe, numbered
from explorer.ui.state import current_store

LINK = "link"
OPEN = "open ›"  # a link cell's text; a click on the cell opens the feature's page
OPEN_HELP = "one click opens the feature's page in this tab"
NUMBER = st.column_config.NumberColumn
# The number style: frequencies and shares as percentages with fixed decimals (frequencies
# 2, other shares 1), a fixed number of decimals per kind of number (activations 2, scores
# and similarities 3), scientific notation only for p- and q-values below 0.001. A table
# holds the library's numbers (a click on a header sorts by value); `styled` gives the
# percentages and p-values their text (`explorer.number_style`) and a missing number shows
# `MISSING` (`st.dataframe`'s placeholder).
PERCENT = "percent"
P_VALUE = "%.2e"  # a p-value column; its printf format only where a table is too big to style
SHARE_DECIMALS = 1
FREQ_DECIMALS = 2
# Above this many cells a table keeps Streamlit's own formats (its percentages then cut
# rather than round the last decimal): pandas' Styler renders each cell in Python (about
# 9 microseconds a cell). The logit lens lists every feature of an SAE: 1,024 x 8 cells on
# the demo store, styled, were 69 ms of its 0.15 s warm run.
STYLED_CELLS = 4_000


def percent_column(label: str, decimals: int = SHARE_DECIMALS, **kwargs: Any) -> Any:
    """A column of shares in [0, 1] shown as percentages with `decimals` fixed decimals; the
    step fixes Streamlit's own percent format to those decimals too."""
    return NUMBER(label, format=PERCENT, step=10.0 ** -(decimals + 2), **kwargs)


def p_value_column(label: str, **kwargs: Any) -> Any:
    """A column of p- or q-values (`explorer.number_style.p_value_text`)."""
    return NUMBER(label, format=P_VALUE, **kwargs)


COLUMN_FORMATS: dict[str, Any] = {
    # specialist measures and feature statistics
    "score": NUMBER("score", format="%.3f"),
    "share": percent_column("share"),
    "max_other_share": percent_column("max other share"),
    "auroc": NUMBER("AUROC", format="%.3f"),
    "enrichment": NUMBER("enrichment", format="%.2f"),
    "p_value": p_value_column("p"),
    "q_value": p_value_column("q (BH)"),
    "support": NUMBER("support", format="%d", help="the category's texts where it fires"),
    "notebook_score": NUMBER("notebook score", format="%d"),
    "token_share": percent_column("token share", help="the top token's share of its tokens"),
    "token_auroc": NUMBER("token AUROC", format="%.3f"),
    # it follows the token column; "token detector" made that table 3 px too wide at 1440 px
    "token_explained": st.column_config.CheckboxColumn(
        "detector",
        help="token detector: its top token separates the category about as well",
    ),
    "replication_rate": percent_column("replication rate"),
    "token_freq": percent_column("token freq", FREQ_DECIMALS),
    "text_freq": percent_column("text freq", FREQ_DECIMALS),
    "max": NUMBER("max act", format="%.2f"),
    "max_act": NUMBER("max act", format="%.2f"),
    "mean_active": NUMBER("mean act", format="%.2f"),
    # rankings, co-firing and concepts
    "composite": NUMBER("token freq x mean act", format="%.4f"),
    "max_text_act": NUMBER("max text act", format="%.2f"),
    "concept_score": NUMBER("concept score", format="%.3f"),
    "mean_in": NUMBER("mean act in category", format="%.4f"),
    "mean_out": NUMBER("mean act outside", format="%.4f"),
    "coverage": percent_column("coverage"),
    "example_mean": NUMBER("mean act on examples", format="%.4f"),
    "corpus_mean": NUMBER("corpus mean act", format="%.4f"),
    "lift": NUMBER("lift", format="%.2f"),
    "n_examples": NUMBER("examples", format="%d", help="the examples where it fires"),
    "active_share": percent_column("active share"),
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
    "hit_rate": percent_column("hit rate"),
    "input_hit_rate": percent_column("input hit rate"),
    "random_hit_rate": percent_column("random hit rate"),
    "mean_next_rank": NUMBER("mean next rank", format="%.0f"),
    "max_cosine": NUMBER("max cosine", format="%.3f"),
    # search by text
    "sum": NUMBER("sum", format="%.3f"),
    "n_tokens": NUMBER("active tokens"),
    "peak_token": "strongest token",
    "share_of_max": percent_column(
        "share of its corpus max", help="max here / max over the corpus"
    ),
    # interventions
    "mean_delta_loss": NUMBER("mean change in loss", format="%+.5f"),
    "clean_prob": NUMBER("clean p", format="%.3f"),
    "patched_prob": NUMBER("intervened p", format="%.3f"),
    # SAE quality (docs/methods.md#sae-quality): short headers, so a row per SAE fits 1440 px;
    # each tooltip names the measure as QUALITY_METRICS does and defines it
    "l0": NUMBER("L0", format="%.1f", help=f"{QUALITY_METRICS['l0']}, over the corpus"),
    "explained_variance": NUMBER(
        "explained variance",
        format="%.3f",
        help="1 - squared reconstruction error / total variance of the hook's activations",
    ),
    "ce_loss_recovered": NUMBER(
        "CE loss recovered",
        format="%.3f",
        help="(loss zero-ablated - loss with the SAE) / (loss zero-ablated - clean loss), "
        "on the quality sample",
    ),
    "kl_divergence": NUMBER(
        "KL divergence",
        format="%.3f",
        help="KL(clean || with the SAE) of the next-token distributions, nats per token, on "
        "the quality sample",
    ),
    "l2_ratio": NUMBER(
        "shrinkage",
        format="%.3f",
        help=f"{QUALITY_METRICS['l2_ratio']}: mean ||reconstruction|| / ||input|| on the "
        "quality sample; below 1 the SAE shrinks activations",
    ),
    "dead_fraction": percent_column(
        "dead", help="dead fraction: share of features that never fire on the corpus"
    ),
    "dense_fraction": percent_column(
        "dense", help="dense fraction: share of features active on more than 10% of tokens"
    ),
    "quality_texts": NUMBER("sample texts", format="%d", help=QUALITY_METRICS["quality_texts"]),
    # the comparison of SAEs (docs/methods.md#frequency-vs-specialization)
    "layer": NUMBER("layer", format="%d"),
    "n_features": NUMBER("features", format="%d"),
    "n_alive": NUMBER("live", format="%d", help="live features: those that fire on the corpus"),
    "n_specialists": NUMBER(
        "specialists",
        format="%d",
        help="live features that specialise in a category or a value (sidebar measure)",
    ),
    "pct_specialists": NUMBER(
        "% of live", format="%.1f%%", help="specialists among the live features"
    ),
    "n_discovered": NUMBER("found on the discovery half", format="%d"),
    "n_replicated": NUMBER("found again on the other half", format="%d"),
    "replication_pct": NUMBER("% replicated", format="%.1f"),
    "categories_with_specialists": NUMBER(
        "covered", format="%d", help="categories with at least one specialist"
    ),
    "n_categories": NUMBER("categories", format="%d", help="categories with a tested cell"),
    "median_rank_specialists": NUMBER(
        "rank: specialists",
        format="%.0f",
        help="median frequency rank of the specialists (1 = the SAE's most frequent feature)",
    ),
    "median_rank_general": NUMBER(
        "rank: general", format="%.0f", help="median frequency rank of the other live features"
    ),
    "spearman_rho": NUMBER(
        "rho",
        format="%+.3f",
        help="Spearman's rho of token frequency against the best score (negative: rarer "
        "features score higher)",
    ),
    "spearman_p": p_value_column("p", help="two-sided p-value of rho"),
    "rho": NUMBER(
        "rho",
        format="%+.3f",
        help="Spearman's rho of token frequency against the best score (negative: rarer "
        "features score higher)",
    ),
    "max_score": NUMBER("max score", format="%.3f", help="the largest best score of a feature"),
    # token taxonomy (docs/methods.md#token-taxonomy)
    "max_enrichment": NUMBER(
        "max enrichment",
        format="%.1f",
        help="the largest enrichment of a significant token: its share among the feature's "
        "active tokens over its share of the corpus",
    ),
    "monosemantic_rate": percent_column(
        "monosemantic rate",
        help="share of the live features with a one-kind label (one kind holds 75% of their "
        "top tokens' weight)",
    ),
    "number_share": percent_column(
        "number features",
        help="share of the live features labelled specific number or number range",
    ),
    "n_active_tokens": NUMBER("active", format="%d", help="active tokens: tokens where it fires"),
    "n_significant": NUMBER(
        "significant",
        format="%d",
        help="its significant tokens: chi-squared p under the threshold, enriched, enough support",
    ),
    "monosemantic": st.column_config.CheckboxColumn(
        "monosemantic", help="a one-kind label: one kind holds 75% of its top tokens' weight"
    ),
    # description scores per SAE
    "n_live": NUMBER("live features", format="%d"),
    "n_scored": NUMBER("scored", format="%d"),
    "f1_mean": NUMBER("F1 mean", format="%.3f"),
    "f1_q25": NUMBER("F1 25%", format="%.3f"),
    "f1_median": NUMBER("F1 median", format="%.3f"),
    "f1_q75": NUMBER("F1 75%", format="%.3f"),
    "balanced_accuracy_mean": NUMBER("balanced accuracy mean", format="%.3f"),
    "f1_at_least_half": percent_column("share with F1 >= 0.5"),
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
    "f1": NUMBER("description score (F1)", format="%.3f"),
    "precision": NUMBER(
        "precision",
        format="%.3f",
        help="of the held-out occurrences of the description's tokens, those where it fires",
    ),
    "recall": NUMBER(
        "recall",
        format="%.3f",
        help="of its held-out active tokens, those whose token is in the description",
    ),
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


def _style_text(number: dict[str, Any]) -> Callable[[Any], str] | None:
    """The text function of a number column's `type_config` whose numbers read as
    `explorer.number_style` writes them (a percentage or a p-value), else None."""
    if number.get("format") == PERCENT:
        step = number.get("step")
        decimals = round(-math.log10(step)) - 2 if step else SHARE_DECIMALS
        return partial(percent_text, decimals=max(decimals, 0))
    if number.get("format") == P_VALUE:
        return p_value_text
    return None


def _number_texts(config: dict[str, Any]) -> dict[str, Callable[[Any], str]]:
    """The columns of `config` whose numbers read as `explorer.number_style` writes them
    (percentages, p-values), each with its text function."""
    texts: dict[str, Callable[[Any], str]] = {}
    for column, entry in config.items():
        number = entry.get("type_config", {}) if isinstance(entry, dict) else {}
        text = _style_text(number) if number.get("type") == "number" else None
        if text is not None:
            texts[column] = text
    return texts


def _printf_text(fmt: str, value: Any) -> str:
    return MISSING if pd.isna(value) else fmt % value


def number_text(entry: Any) -> Callable[[Any], str]:
    """The text a number column config (`NUMBER`, `percent_column`, `p_value_column`) gives
    one value: a percentage or p-value as `explorer.number_style` writes it, else its printf
    format (three decimals without one); `MISSING` for no value."""
    number = entry.get("type_config", {}) if isinstance(entry, dict) else {}
    return _style_text(number) or partial(_printf_text, number.get("format") or "%.3f")


def _has_format(entry: Any) -> bool:
    """Whether a column config gives its column a format of its own (Streamlit then shows
    that rather than a Styler's text)."""
    return isinstance(entry, dict) and bool(entry.get("type_config", {}).get("format"))


def streamlit_number_text(value: Any) -> str:
    """A number as `st.dataframe` writes one whose column has no format (up to four
    decimals, trailing zeros cut; more decimals for a value under 1e-4), so a styled table
    shows its unformatted numbers as an unstyled one would."""
    if isinstance(value, numbers.Integral):
        return str(value)
    number = float(value)
    if math.isnan(number):
        return MISSING
    if not math.isfinite(number) or number.is_integer():
        return f"{number:.0f}"
    decimals = 4 if abs(number) >= 1e-4 else abs(int(f"{number:e}".split("e")[1]))
    return f"{number:.{decimals}f}".rstrip("0").rstrip(".")


def styled(
    shown: pd.DataFrame,
    config: dict[str, Any],
    shown_as: dict[str, Callable[[Any], str]] | None = None,
) -> tuple[pd.DataFrame | Styler, dict[str, Any]]:
    """`shown` and its `config` for `st.dataframe`: with percentage or p-value columns, or
    columns `shown_as` gives a display text (and at most `STYLED_CELLS` cells), a pandas
    Styler whose display texts are `explorer.number_style`'s and `shown_as`'s, the number
    columns' Streamlit formats and steps removed so the texts show; the cells keep their
    values, so a click on a header sorts by value at full precision. Otherwise `shown` and
    `config` (Streamlit's formats), a `shown_as` column holding its display text."""
    shown_as = {c: text for c, text in (shown_as or {}).items() if c in shown.columns}
    numbers_as = {c: text for c, text in _number_texts(config).items() if c in shown.columns}
    if shown.size > STYLED_CELLS:
        if not shown_as:
            return shown, config
        return shown.assign(**{c: shown[c].map(text) for c, text in shown_as.items()}), config
    texts = {**numbers_as, **shown_as}
    if not texts:
        return shown, config
    config = dict(config)
    for column in numbers_as:
        number = {**config[column]["type_config"], "format": None, "step": None}
        config[column] = {**config[column], "type_config": number}
    unformatted = [
        column
        for column in shown.select_dtypes("number").columns
        if column not in texts and not _has_format(config.get(column))
    ]
    rows = shown if shown.index.is_unique else shown.reset_index(drop=True)  # a Styler's need
    styler = rows.style.format(na_rep=MISSING)
    for column, text in texts.items():
        styler = styler.format(text, subset=[column])
    if unformatted:
        styler = styler.format(streamlit_number_text, subset=unformatted)
    return styler, config


def plain_table(
    frame: pd.DataFrame,
    columns: list[str] | None = None,
    *,
    height: int | Literal["auto", "content"] = "auto",
    **config: Any,
) -> None:
    """Show `frame` (its `columns`, default all) without the index, in the shared formats
    (`displayed`, `styled`), `height` as `st.dataframe`'s ("content": every row, no
    scrolling); a frame naming features (sae and feature columns) goes to `feature_table`,
    for their descriptions and links."""
    columns = list(frame.columns) if columns is None else columns
    if {"sae", "feature"} <= set(frame.columns) and "feature" in columns:
        feature_table(frame, [c for c in columns if c != "sae"], **config)  # names features
        return
    data, formats = styled(*displayed(frame[columns], column_formats(columns, **config)))
    st.dataframe(data, hide_index=True, column_config=formats, placeholder=MISSING, height=height)


def metric_rows_table(frame: pd.DataFrame, formats: list[Any], label: str = "metric") -> None:
    """Show `frame` turned round for reading, in full: a `label` column naming one measure a
    row, then a number column per SAE. Each row's numbers read in the number style of its
    entry of `formats` (a number column config, `number_text`), a missing one `MISSING`; a
    row with no number at all is left out. The cells keep their numbers."""
    values = [column for column in frame.columns if column != label]
    kept = frame[values].notna().any(axis=1).to_numpy()
    rows = frame[kept].reset_index(drop=True)
    styler = rows.style.format(na_rep=MISSING)
    for row, entry in zip(rows.index, compress(formats, kept), strict=True):
        styler = styler.format(number_text(entry), subset=pd.IndexSlice[[row], values])
    st.dataframe(
        styler,
        hide_index=True,
        height="content",
        column_config={label: st.column_config.TextColumn(label)},
        placeholder=MISSING,
    )


def with_feature_links(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`columns` of `frame` with a first `link` column to each row's feature page."""
    pairs = zip(frame["sae"], frame["feature"], strict=True)
    links = [feature_url(sae, feature) for sae, feature in pairs]
    return frame[columns].assign(**{LINK: links})[[LINK, *columns]]


def _open_text(url: Any) -> str:
    return OPEN


def feature_table(frame: pd.DataFrame, columns: list[str], **config: Any) -> None:
    """Show `frame` (with sae and feature columns) as a dataframe of numbered rows whose
    first column links to each feature's page, with each feature's description after its
    id; `config` adds or overrides column configs by name. One click on the link or the id
    opens the page in this tab (`linked_dataframe`). The link column holds each page's URL
    (what a CSV download of the table keeps) and shows `OPEN` as plain text: Streamlit's
    LinkColumn opens a new tab when the click lands on its text."""
    frame, columns = with_descriptions(current_store(), frame, columns)
    pairs = [
        (str(sae), int(feature))
        for sae, feature in zip(frame["sae"], frame["feature"], strict=True)
    ]
    shown, formats = displayed(
        numbered(with_feature_links(frame, columns)),
        {
            LINK: st.column_config.TextColumn("page", width="small", help=OPEN_HELP),
            **column_formats(columns, **config),
        },
    )
    targets = {LINK: pairs, "feature": pairs} if "feature" in columns else {LINK: pairs}
    data, formats = styled(shown, formats, shown_as={LINK: _open_text})
    linked_dataframe(data, targets, formats, placeholder=MISSING)


def features_with_chart(
    frame: pd.DataFrame,
    columns: list[str],
    bar: tuple[str, str, dict[str, str]],
    empty: str,
) -> None:
    """`feature_table` of `frame` and below it a bar chart of one of its columns (`bar`:
    column, axis title, extra tooltips); `empty` (Markdown) when there are no rows."""
    if frame.empty:
        st.info(empty)
        return
    frame, columns = with_descriptions(current_store(), frame, columns)  # table and tooltips
    feature_table(frame, columns)
    feature_chart(feature_bar_chart(frame, *bar))


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
    data, formats = styled(*displayed(shown, config))
    linked_dataframe(data, targets, formats, placeholder=MISSING)
