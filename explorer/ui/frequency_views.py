"""The Frequency vs specialization page's sections: the answer under the sidebar's measure and
under each measure (with the seed rank ranges the notebooks compared), the scatter, the kinds
per rank range against the label-permutation null with their split-half replication, the kinds
per frequency band, and the frequency density. Each takes the page's `FrequencyView` (kept in the
store for the default settings, `cached.frequency_view`). Definitions:
docs/methods.md#frequency-vs-specialization, #chance-baseline, #replication."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer.analysis.controls import ChanceBaseline
from explorer.analysis.frequency import BandTables, frequency_histogram
from explorer.analysis.specialists import MEASURE_INFO, MEASURES
from explorer.charts.frequency import rho_by_measure_chart
from explorer.charts.marks import thin_marks
from explorer.charts.specialists import (
    frequency_histogram_chart,
    frequency_scatter,
    kind_share_chart,
)
from explorer.errors import markdown_escaped
from explorer.methods_doc import methods_link
from explorer.number_style import p_value_text, percent_text
from explorer.store.reader import Store
from explorer.ui.cached import feature_descriptions
from explorer.ui.links import feature_chart, show_chart
from explorer.ui.tables import plain_table

SEED_BANDS = "most frequent 200 and the rarest 112"
SPECIALISTS = st.column_config.NumberColumn("specialists")
NUMBER = st.column_config.NumberColumn
RANGE_LABELS = {  # short, so the rank ranges' table fits at 1440 px
    "n_live": NUMBER("live", format="%d", help="live features of the range"),
    "chance_mean": NUMBER("chance mean", format="%.2f", help="specialists by chance (mean)"),
    "chance_p95": NUMBER("chance 95th pct", format="%.1f"),
    "n_discovered": NUMBER("discovered", format="%d", help="on the discovery half"),
    "n_replicated": NUMBER("replicated", format="%d", help="found again on the other half"),
}

MEASURE_NAMES = "; ".join(f"{measure}: {name}" for measure, name in MEASURES.items())


def short_answers(answers: pd.DataFrame) -> list[str]:
    """Each measure's conclusion without what its row's other cells say: the measure's name
    (the measure column) and the rho and p-value after the colon, so the answer fits its cell."""
    return [
        conclusion.removeprefix(f"Under {name}, ").split(": rho = ")[0].rstrip(".")
        for name, conclusion in zip(answers["name"], answers["conclusion"], strict=True)
    ]


def show_answer(
    summary: dict[str, float], answers: pd.DataFrame, family: str, measure: str
) -> None:
    """The answer under the sidebar's `measure`: its conclusion, the counts (`summary`, the
    features' `frequency_summary`), Spearman's rho and its p-value, and what they were
    computed over."""
    score_title = MEASURES[measure]
    chosen = answers.set_index("measure").loc[measure]
    st.markdown(f"**{chosen['conclusion']}**", help=MEASURE_INFO[measure].help)
    columns = st.columns(5)
    columns[0].metric("features", f"{summary['n_features']:,}")
    columns[1].metric("dead", f"{summary['n_dead']:,}")
    columns[2].metric(
        "specialists",
        f"{summary['n_specialists']:,}",
        delta=f"{percent_text(summary['n_specialists'] / summary['n_alive'])} of the live features"
        if summary["n_alive"]
        else None,
        delta_color="off",
        delta_arrow="off",
    )
    columns[3].metric("Spearman rho", f"{chosen['rho']:.3f}")
    columns[4].metric("p-value", p_value_text(chosen["p_value"]))
    st.caption(
        f"Family {markdown_escaped(family)}: a feature's best score and whether it is a specialist "
        f"come from its cells of this family. Spearman correlation of token frequency with the "
        f"best score ({score_title}) over {chosen['n']:,} features that fire and have a tested "
        f"cell. Median frequency rank: specialists {summary['median_rank_specialists']:.0f}, "
        f"general {summary['median_rank_general']:.0f}. "
        + methods_link("frequency-vs-specialization")
    )


def show_answers(answers: pd.DataFrame) -> None:
    """The answer under each measure: rho per measure (chart) and each measure's verdict,
    rho, p-value and specialist shares in the seed rank ranges (table)."""
    st.subheader("The answer under each measure")
    st.caption(
        "Each measure's own thresholds, test and FDR (the other sidebar settings unchanged) on the "
        f"same tested cells. Specialists among the live features of the {SEED_BANDS} frequency "
        "ranks, as the notebooks compared them. A negative rho: rarer features score higher."
    )
    show_chart(rho_by_measure_chart(answers))
    top, bottom = answers["top"].iloc[0], answers["bottom"].iloc[0]
    plain_table(
        answers.assign(answer=short_answers(answers)),
        ["measure", "answer", "rho", "p_value", "n", "n_specialists", "pct_top", "pct_bottom"],
        measure=st.column_config.TextColumn("measure", help=MEASURE_NAMES),
        answer=st.column_config.TextColumn(
            "answer", help="what the measure's rho and p-value say about rarer features"
        ),
        n=NUMBER("scored", help="features that fire and have a tested cell"),
        n_specialists=SPECIALISTS,
        pct_top=NUMBER(
            f"% ranks {top}",
            format="%.1f",
            help=f"% specialists among the live features of ranks {markdown_escaped(top)}",
        ),
        pct_bottom=NUMBER(
            f"% ranks {bottom}",
            format="%.1f",
            help=f"% specialists among the live features of ranks {markdown_escaped(bottom)}",
        ),
    )
    for ranks, share in (("top", "pct_top"), ("bottom", "pct_bottom")):
        if answers[share].isna().all():  # a share of no live feature: say so, not "None"
            st.caption(
                f"No feature of ranks {markdown_escaped(answers[ranks].iloc[0])} fires on "
                "this corpus."
            )


def show_scatter(store: Store, features: pd.DataFrame, x_axis: str, score_title: str) -> None:
    """Each feature's best score against its frequency (`x_axis`), specialists kept when
    the marks are thinned (`thin_marks`); a click opens the feature."""
    drawn, marks_note = thin_marks(features, features["is_specialist"])
    described = drawn.assign(description=feature_descriptions(store, drawn))
    feature_chart(frequency_scatter(described, x_axis, score_title))
    if marks_note:
        st.caption(marks_note)


def show_rank_ranges(tables: BandTables, null: ChanceBaseline, score_title: str) -> None:
    """Per rank range: specialists against the null with their split-half replication, and
    the kinds of its features (shares, with the counts in an expander)."""
    st.subheader("Kinds per rank range")
    st.caption(
        f"Specialists under {score_title} against a label-permutation null ({null.permutations} "
        "seeded shuffles of the categories within each family, the same tests and thresholds; "
        f"{methods_link('chance-baseline')}): a range beats chance when its permutation p-value, "
        "(b + 1) / (B + 1), is at most 0.05. Replicated: of the features found on the discovery "
        f"half of the texts, those found again on the other half ({methods_link('replication')})."
    )
    plain_table(tables.rank_chance, n_specialists=SPECIALISTS, **RANGE_LABELS)
    bands = tables.rank_counts
    shares = [c for c in bands if c.startswith("% ")]
    plain_table(
        bands, ["band", "n_features", *shares], **{c: NUMBER(c, format="%.1f") for c in shares}
    )
    with st.expander("Features of each kind per rank range (counts)"):
        plain_table(bands, [c for c in bands if c not in shares])


def show_frequency_bands(tables: BandTables, score_title: str) -> None:
    """Kinds per decade of token frequency, and specialists per decade against the null."""
    st.subheader("Kinds per frequency band")
    show_chart(kind_share_chart(tables.kinds_by_band))
    st.caption(f"Specialists under {score_title} per decade of token frequency, against the null.")
    plain_table(
        tables.decade_chance,
        band=st.column_config.TextColumn("token frequency"),
        n_specialists=SPECIALISTS,
    )


def show_density(features: pd.DataFrame, n_dead: int) -> None:
    """The histogram of token frequencies, the dead features as its first bar."""
    st.subheader("Frequency density")
    histogram = frequency_histogram(features)
    st.caption(f"{n_dead:,} dead features (never fire on this corpus) are the first bar.")
    show_chart(frequency_histogram_chart(histogram))
