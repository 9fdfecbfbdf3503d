"""Ablation lab: zero-ablate, clamp, scale, swap or steer SAE features on the loaded model and
measure what changes on one text and per category of the corpus; every run goes to the ledger
(except in the public demo, where runs work but are not saved)."""

from functools import partial

import streamlit as st

from explorer.analysis.specialists import MEASURES, SpecialistSettings
from explorer.errors import ExplorerError
from explorer.live import runs
from explorer.live.interventions import (
    DOSE_SCALES,
    MAX_FEATURES,
    MODES,
    Intervention,
    parse_positions,
)
from explorer.ui import run_views
from explorer.ui.cached import specialists
from explorer.ui.limits import live_model_slot, max_text_chars
from explorer.ui.params import url_float, url_int, url_radio, url_selectbox, url_text
from explorer.ui.state import current_source, current_store, live_limits, public_demo

RUNS = {"text": "ablation.text_run", "corpus": "ablation.corpus_run"}
SAVED = "Each run is saved to the store's ledger."
VALUE_LABELS = {"clamp": "Clamp to", "scale": "Scale by", "steer": "Steering coefficient"}


st.title("Ablation lab")
demo, store, loaded = public_demo(), current_store(), current_source()
saes = store.saes()["sae"].tolist()
sae = url_selectbox("SAE", "sae", saes, default=saes[-1])
d_sae = store.sae(sae).d_sae
by_frequency = store.frequency_table().query("sae == @sae").sort_values(["freq_rank", "feature"])
general = url_int("The N most frequent features", "general", 0, 0, MAX_FEATURES)
features = url_text(
    "Features",
    "features",
    default=str(int(by_frequency["feature"].iloc[0])),
    check=partial(runs.parse_features, d_sae=d_sae),
    help=f"Up to {MAX_FEATURES} feature ids (0 to {d_sae - 1}), separated by commas or spaces. "
    "The default is this SAE's most frequent feature.",
    disabled=general > 0,
)
if general:  # the "general" features: the SAE's most frequent ones, together
    features = by_frequency["feature"].head(general).astype(int).tolist()
mode = url_radio("Intervention", "mode", MODES, default="zero")
value = 0.0
if mode in VALUE_LABELS:
    reference = runs.value_help(mode, by_frequency, int(features[0]))
    value = url_float(VALUE_LABELS[mode], "value", 5.0, -1000.0, 1000.0, help=reference)
positions = url_text(
    "Positions",
    "positions",
    default="",
    check=parse_positions,
    help="Token positions to change, from 1 (e.g. `3, 7`); empty changes every position.",
)
try:
    intervention = Intervention(sae, tuple(features), mode, value, positions)
    intervention.check(loaded.sae(sae))
except ExplorerError as error:
    st.error(str(error))
    st.stop()

run_views.show_chosen_features(intervention)
run_views.show_value_scale(intervention, by_frequency)
st.caption(
    "The SAE's error term is kept: only the chosen features' own contribution to the "
    "activation at the hook changes. "
    + ("Public demo: runs work but are not saved to the ledger." if demo else SAVED)
)
text_tab, corpus_tab, ledger_tab = st.tabs(["One text", "Over the corpus", "Ledger"])

with text_tab:
    request = run_views.text_run_form(store, max_text_chars())
    if request is not None:
        try:
            with live_model_slot(), st.spinner("Running the model with and without it…"):
                run = runs.run_text(loaded, intervention, *request.text_and_generation())
            run_views.keep_run(RUNS["text"], run, store, demo)
        except ExplorerError as error:
            st.error(str(error))
    if RUNS["text"] in st.session_state:
        run_views.show_text_run(*st.session_state[RUNS["text"]])

with corpus_tab:
    categories = store.categories()["category"].tolist()
    table = specialists(store, SpecialistSettings()).table
    first = intervention.features[0]
    scores = table.query("sae == @sae and feature == @first")[["category", "score"]]
    with st.form("corpus_run"):
        target = st.selectbox(
            "Category to test",
            categories,
            index=categories.index(runs.default_target(categories, scores)) if categories else 0,
            help="Does the intervention hurt this category's texts more than the others? "
            "(one-sided Welch t-test on the per-text change in loss). The default is the "
            "category where the first feature's specialist score is highest.",
        )
        dose = st.checkbox(f"Dose-response over scales {', '.join(map(str, DOSE_SCALES))}")
        submitted = st.form_submit_button("Run over every text", type="primary")
    if submitted:
        with live_model_slot():
            bar = st.progress(0.0, text="Running the corpus…")
            try:
                run = runs.run_corpus(
                    loaded,
                    store.texts(),
                    intervention,
                    target=target,
                    scales=DOSE_SCALES if dose else (),
                    progress=run_views.progress_of(bar),
                    limits=live_limits(),
                )
                run_views.keep_run(RUNS["corpus"], run, store, demo)
            except ExplorerError as error:
                st.error(str(error))
            bar.empty()
    if RUNS["corpus"] in st.session_state:
        run, saved = st.session_state[RUNS["corpus"]]
        score_title = MEASURES[SpecialistSettings().measure]
        run_views.show_corpus_run(run, saved, scores, score_title)

with ledger_tab:
    ledger = store.interventions()
    if ledger.empty:
        st.info("No runs yet: the runs of this page are listed here, newest first.")
        st.stop()
    run_views.show_ledger(ledger)
    with st.form("rerun"):
        run_id = st.selectbox("Re-run", ledger["id"].tolist())
        again = st.form_submit_button("Re-run and compare")
    if again:
        try:
            with live_model_slot(), st.spinner(f"Re-running #{run_id}…"):
                rerun = runs.rerun_entry(loaded, store, ledger, int(run_id), live_limits())
                run_views.show_rerun(rerun)
        except ExplorerError as error:
            st.error(str(error))
