"""Ablation lab: zero-ablate, clamp, scale, swap or steer SAE features on the loaded model and
measure what changes on one text and per category of the corpus; every run goes to the ledger
(except in the public demo, where runs work but are not saved)."""

import json
from functools import partial

import streamlit as st

from explorer.analysis.specialists import MEASURES, SpecialistSettings
from explorer.charts.feature import token_label
from explorer.charts.interventions import (
    category_effect_chart,
    dose_response_chart,
    specialist_score_chart,
    token_effect_chart,
)
from explorer.charts.tokens_html import Highlight, highlight_html, legend_html
from explorer.errors import ExplorerError, InputError
from explorer.live.interventions import (
    DOSE_SCALES,
    MAX_FEATURES,
    MAX_NEW_TOKENS,
    MODES,
    Intervention,
    parse_positions,
)
from explorer.live.runs import (
    CorpusRun,
    GenerationSettings,
    TextRun,
    ledger_table,
    rerun,
    run_corpus,
    run_text,
    same_metrics,
)
from explorer.live.text import parse_feature_ids
from explorer.store.reader import Store
from explorer.ui.cached import specialists
from explorer.ui.limits import live_model_slot, max_text_chars
from explorer.ui.links import feature_url
from explorer.ui.params import url_float, url_int, url_radio, url_selectbox, url_text
from explorer.ui.state import current_source, current_store, public_demo
from explorer.ui.tables import feature_table

TEXT_RUN = "ablation.text_run"
CORPUS_RUN = "ablation.corpus_run"
VALUE_LABELS = {"clamp": "Clamp to", "scale": "Scale by", "steer": "Steering coefficient"}


def parse_features(text: str, d_sae: int) -> list[int]:
    features = parse_feature_ids(text, d_sae, max_features=MAX_FEATURES)
    if not features:
        raise InputError("Give at least one feature id.")
    return features


def show_error(error: ExplorerError) -> None:
    st.error(str(error))


def save_run(store: Store, sae: str, run: TextRun | CorpusRun, demo: bool) -> int | None:
    """The run's id in the store's ledger; None in the public demo, which saves nothing."""
    return None if demo else store.save_intervention(sae, run.settings(), run.metrics())


def run_title(run_id: int | None) -> str:
    return "Run (not saved: public demo)" if run_id is None else f"Run **#{run_id}**"


st.title("Ablation lab")
demo = public_demo()
store = current_store()
loaded = current_source()
saes = store.saes()
sae = url_selectbox("SAE", "sae", saes["sae"].tolist(), default=saes["sae"].iloc[-1])
d_sae = int(saes.loc[saes["sae"] == sae, "d_sae"].iloc[0])
frequency = store.frequency_table()
by_frequency = frequency[frequency["sae"] == sae].sort_values(["freq_rank", "feature"])
general = url_int("The N most frequent features", "general", 0, 0, MAX_FEATURES)
features = url_text(
    "Features",
    "features",
    default=str(int(by_frequency["feature"].iloc[0])),
    check=partial(parse_features, d_sae=d_sae),
    help=f"Up to {MAX_FEATURES} feature ids (0 to {d_sae - 1}), separated by commas or spaces. "
    "The default is this SAE's most frequent feature.",
    disabled=general > 0,
)
if general:  # the "general" features: the SAE's most frequent ones, together
    features = by_frequency["feature"].head(general).astype(int).tolist()
mode = url_radio("Intervention", "mode", MODES, default="zero")
value = 0.0
if mode in VALUE_LABELS:
    value = url_float(VALUE_LABELS[mode], "value", default=5.0, low=-1000.0, high=1000.0)
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
    show_error(error)
    st.stop()

links = ", ".join(f"[#{f}]({feature_url(sae, f)})" for f in intervention.features)
st.markdown(f"**{intervention.describe()}** · feature pages: {links}")
st.caption(
    "The SAE's error term is kept: only the chosen features' own contribution to the "
    "activation at the hook changes. "
    + (
        "Public demo: runs work but are not saved to the ledger."
        if demo
        else "Each run is saved to the store's ledger."
    )
)

text_tab, corpus_tab, ledger_tab = st.tabs(["One text", "Over the corpus", "Ledger"])

with text_tab:
    texts = store.texts()
    with st.form("text_run"):
        kind = st.radio("Text", ["Stored text", "Typed text"], horizontal=True)
        text_id = st.number_input(
            "Stored text id",
            min_value=int(texts["text_id"].min()),
            max_value=int(texts["text_id"].max()),
            step=1,
        )
        typed = st.text_area("Typed text", max_chars=max_text_chars(), height=100)
        with st.expander("Generations with and without the intervention"):
            with_generation = st.checkbox("Generate", value=True)
            columns = st.columns(4)
            max_new_tokens = columns[0].number_input(
                "New tokens", min_value=1, max_value=MAX_NEW_TOKENS, value=20
            )
            sampling = columns[1].radio("Decoding", ["greedy", "sample"], horizontal=True)
            seed = columns[2].number_input("Seed", min_value=0, max_value=2**31 - 1, value=0)
            temperature = columns[3].number_input(
                "Temperature", min_value=0.05, max_value=5.0, value=1.0, step=0.1
            )
        submitted = st.form_submit_button("Run on the text", type="primary")
    if submitted:
        text = typed
        if kind == "Stored text":
            stored = store.text(int(text_id))
            text = "" if stored is None else stored["text"]
        generation = (
            GenerationSettings(int(max_new_tokens), sampling, int(seed), float(temperature))
            if with_generation
            else None
        )
        try:
            if kind == "Typed text" and len(text) > max_text_chars():
                raise InputError(f"Give at most {max_text_chars():,} characters of text.")
            with live_model_slot(), st.spinner("Running the model with and without it…"):
                run = run_text(loaded, intervention, text, generation)
            st.session_state[TEXT_RUN] = (run, save_run(store, sae, run, demo))
        except ExplorerError as error:
            show_error(error)
    if TEXT_RUN in st.session_state:
        run, run_id = st.session_state[TEXT_RUN]
        effect, summary = run.effect, run.effect.summary()
        st.markdown(f"{run_title(run_id)}: {run.intervention.describe()}")
        columns = st.columns(4)
        columns[0].metric("mean change in loss", f"{summary['mean_delta_loss']:+.4f}")
        columns[1].metric("largest change in loss", f"{summary['max_delta_loss']:+.4f}")
        columns[2].metric("mean KL divergence", f"{summary['mean_kl']:.4f}")
        columns[3].metric("mean |change| at the hook", f"{summary['mean_activation_change']:.4f}")
        delta = effect.delta_loss
        scale = float(max(abs(delta).max(), 1e-6))
        highlights = [
            Highlight("loss up", scale, (214, 39, 40)),
            Highlight("loss down", scale, (31, 119, 180)),
        ]
        values = [[max(d, 0.0), max(-d, 0.0)] for d in delta]
        st.html(legend_html(highlights) + highlight_html(effect.tokens, values, highlights))
        st.caption(
            "Each token is coloured by how much harder (red) or easier (blue) the intervention "
            "made it to predict; hover for the exact change."
        )
        st.altair_chart(token_effect_chart(effect.per_token()), width="stretch")
        left, right = st.columns(2)
        with left:
            st.markdown("**Top next tokens after the last token**")
            st.dataframe(
                effect.top_next.assign(
                    clean_token=effect.top_next["clean_token"].map(token_label),
                    patched_token=effect.top_next["patched_token"].map(token_label),
                ),
                hide_index=True,
                column_config={
                    "clean_token": "clean",
                    "patched_token": "intervened",
                    "clean_prob": st.column_config.NumberColumn("clean p", format="%.3f"),
                    "patched_prob": st.column_config.NumberColumn("intervened p", format="%.3f"),
                },
            )
        with right:
            if run.clean_generation is not None:
                st.markdown(f"**Generations** ({run.generation.sampling})")
                st.caption("Without the intervention")
                st.text(run.clean_generation)
                st.caption("With the intervention")
                st.text(run.intervened_generation)
        with st.expander("Per token: losses and the features' activations before and after"):
            st.dataframe(effect.per_token(), hide_index=True)

with corpus_tab:
    categories = store.categories()["category"].tolist()
    table = specialists(store, SpecialistSettings()).table
    first = intervention.features[0]
    scores = table[(table["sae"] == sae) & (table["feature"] == first)][["category", "score"]]
    best = scores.sort_values("score", ascending=False)["category"].tolist()
    with st.form("corpus_run"):
        target = st.selectbox(
            "Category to test",
            categories,
            index=categories.index(best[0]) if best else 0,
            help="Does the intervention hurt this category's texts more than the others? "
            "(one-sided Welch t-test on the per-text change in loss). The default is the "
            "category where the first feature's specialist score is highest.",
        )
        dose = st.checkbox(f"Dose-response over scales {', '.join(map(str, DOSE_SCALES))}")
        submitted = st.form_submit_button("Run over every text", type="primary")
    if submitted:
        with live_model_slot():
            bar = st.progress(0.0, text="Running the corpus…")

            def progress(done: int, total: int) -> None:
                bar.progress(done / total, text=f"{done:,} of {total:,} texts")

            try:
                run = run_corpus(
                    loaded,
                    store.texts(),
                    intervention,
                    target=target,
                    scales=DOSE_SCALES if dose else (),
                    progress=progress,
                )
                st.session_state[CORPUS_RUN] = (run, save_run(store, sae, run, demo))
            except ExplorerError as error:
                show_error(error)
            bar.empty()
    if CORPUS_RUN in st.session_state:
        run, run_id = st.session_state[CORPUS_RUN]
        test = run.test
        n_texts = int((run.effects["setting"] == 0).sum())
        st.markdown(f"{run_title(run_id)}: {run.intervention.describe()}, over {n_texts:,} texts")
        verdict = "hurts" if test["difference"] > 0 and test["p_value"] < 0.05 else "does not hurt"
        st.markdown(
            f"The intervention **{verdict}** `{test['category']}` texts more than the others: "
            f"mean change in loss {test['mean_delta_in']:+.5f} on {test['n_in']} texts vs "
            f"{test['mean_delta_out']:+.5f} on {test['n_out']} (t = {test['t_statistic']:.2f}, "
            f"one-sided p = {test['p_value']:.2g})."
        )
        base = run.summary[run.summary["setting"] == 0]
        order = base.sort_values("mean_delta_loss", ascending=False)["category"].tolist()
        left, right = st.columns(2)
        left.markdown("**Causal: change in loss per category**")
        left.altair_chart(category_effect_chart(base, test["category"]), width="stretch")
        score_title = MEASURES[SpecialistSettings().measure]
        right.markdown(f"**Correlational: specialist score of #{first}** ({score_title})")
        right.altair_chart(specialist_score_chart(scores, score_title, order), width="stretch")
        if run.scales:
            st.markdown("**Dose-response**")
            st.altair_chart(dose_response_chart(run.dose_response()), width="stretch")

with ledger_tab:
    ledger = store.interventions()
    if ledger.empty:
        st.info("No runs yet: the runs of this page are listed here, newest first.")
    else:
        listing = ledger_table(ledger)
        feature_table(
            listing[listing["feature"] >= 0],
            ["id", "sae", "feature", "kind", "description", "size", "mean_delta_loss"],
            mean_delta_loss=st.column_config.NumberColumn("mean change in loss", format="%+.5f"),
        )
        columns = st.columns(3)
        columns[0].download_button(
            "Export CSV", ledger.to_csv(index=False), "interventions.csv", "text/csv"
        )
        columns[1].download_button(
            "Export JSON",
            ledger.to_json(orient="records", date_format="iso"),
            "interventions.json",
            "application/json",
        )
        with st.form("rerun"):
            run_id = st.selectbox("Re-run", listing["id"].tolist())
            again = st.form_submit_button("Re-run and compare")
        if again:
            entry = ledger[ledger["id"] == run_id].iloc[0]
            try:
                with live_model_slot(), st.spinner(f"Re-running #{run_id}…"):
                    metrics = rerun(loaded, store, json.loads(entry["settings"]))
                if same_metrics(metrics, json.loads(entry["metrics"])):
                    st.success(f"Re-ran #{run_id}: the same numbers as recorded.")
                else:
                    st.warning(f"Re-ran #{run_id}: the numbers differ from the record.")
                    st.json({"recorded": json.loads(entry["metrics"]), "now": metrics})
            except ExplorerError as error:
                show_error(error)
