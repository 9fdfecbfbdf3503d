"""Frequency vs specialization: are the specialists the rare features?"""

from functools import partial

import streamlit as st

from explorer.analysis.frequency import (
    default_rank_ranges,
    frequency_histogram,
    frequency_specialization_correlation,
    frequency_summary,
    kind_by_frequency_band,
    parse_rank_ranges,
    rank_band_counts,
)
from explorer.analysis.specialists import MEASURES
from explorer.charts.specialists import (
    frequency_histogram_chart,
    frequency_scatter,
    kind_share_chart,
)
from explorer.ui.cached import specialists
from explorer.ui.params import specialist_settings_sidebar, url_radio, url_selectbox, url_text
from explorer.ui.state import current_store

st.title("Frequency vs specialization")
store = current_store()
saes = store.saes()
settings = specialist_settings_sidebar()
sae = url_selectbox("SAE", "sae", saes["sae"].tolist(), default=saes["sae"].iloc[-1])
x_axis = url_radio(
    "Frequency axis",
    "x",
    {"token_freq": "token frequency", "freq_rank": "frequency rank"},
    default="token_freq",
)
d_sae = int(saes.loc[saes["sae"] == sae, "d_sae"].iloc[0])
ranges = url_text(
    "Rank ranges",
    "ranks",
    default=default_rank_ranges(d_sae),
    check=partial(parse_rank_ranges, max_rank=d_sae),
    help="Frequency ranks (1 = the most frequent feature), e.g. 50-200, 400-512.",
)
result = specialists(store, settings)
features = result.features[result.features["sae"] == sae]
score_title = MEASURES[settings.measure]

summary = frequency_summary(features)
correlation = frequency_specialization_correlation(features)
columns = st.columns(5)
columns[0].metric("features", f"{summary['n_features']:,}")
columns[1].metric("dead", f"{summary['n_dead']:,}")
columns[2].metric(
    "specialists", f"{summary['n_specialists']:,} ({summary['pct_specialists']:.1f}%)"
)
columns[3].metric("Spearman rho", f"{correlation['rho']:.3f}")
columns[4].metric("p-value", f"{correlation['p_value']:.2g}")
st.caption(
    f"Spearman correlation of token frequency with the best score ({score_title}) over "
    f"{correlation['n']:,} features that fire. Median frequency rank: specialists "
    f"{summary['median_rank_specialists']:.0f}, general {summary['median_rank_general']:.0f}."
)

st.altair_chart(frequency_scatter(features, x_axis, score_title), width="stretch")

st.subheader("Kinds per rank range")
bands = rank_band_counts(features, ranges)
st.dataframe(
    bands,
    hide_index=True,
    column_config={
        column: st.column_config.NumberColumn(column, format="%.1f")
        for column in bands.columns
        if column.startswith("% ")
    },
)

st.subheader("Kinds per frequency band")
st.altair_chart(kind_share_chart(kind_by_frequency_band(features)), width="stretch")

st.subheader("Frequency density")
histogram = frequency_histogram(features)
st.caption(f"{summary['n_dead']:,} dead features (never fire on this corpus) are the first bar.")
st.altair_chart(frequency_histogram_chart(histogram), width="stretch")
