"""Frequency vs specialization: are the specialists the rare features?"""

from functools import partial

import streamlit as st

from explorer.analysis.frequency import default_rank_ranges, frequency_summary, parse_rank_ranges
from explorer.analysis.specialists import MEASURES
from explorer.ui.cached import (
    band_tables,
    chance_baseline,
    frequency_view,
    specialist_families,
)
from explorer.ui.frequency_views import (
    show_answer,
    show_answers,
    show_density,
    show_frequency_bands,
    show_rank_ranges,
    show_scatter,
)
from explorer.ui.params import specialist_settings_sidebar, url_radio, url_selectbox, url_text
from explorer.ui.specialist_views import choose_family
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
family = choose_family(specialist_families(store, settings))
view = frequency_view(store, settings, sae, family)  # kept in the store for the defaults
features, answers = view.features, view.answers
score_title = MEASURES[settings.measure]

summary = frequency_summary(features)  # the answer's counts and the density's dead features
show_answer(summary, answers, family, settings.measure)
show_scatter(store, features, x_axis, score_title)
# one tab runs at a time (its name is in the URL, `tab`): the four sections drew three charts
# and five tables on every run
ranges_tab, answers_tab, bands_tab, density_tab = st.tabs(
    [
        "Kinds per rank range",
        "The answer under each measure",
        "Kinds per frequency band",
        "Frequency density",
    ],
    key="tab",
    bind="query-params",
)
if answers_tab.open:
    with answers_tab:
        show_answers(answers)
if ranges_tab.open or bands_tab.open:
    null = chance_baseline(store, settings).in_family(family)
    tables = band_tables(store, settings, sae, family, ranges)  # once per view and ranges
    if ranges_tab.open:
        with ranges_tab:
            show_rank_ranges(tables, null, score_title)
    if bands_tab.open:
        with bands_tab:
            show_frequency_bands(tables, score_title)
if density_tab.open:
    with density_tab:
        show_density(features, summary["n_dead"])
