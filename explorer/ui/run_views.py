"""How the ablation lab shows an intervention run and its ledger.

Owns the rendering of a `explorer.live.runs.TextRun` (metrics, tokens coloured by the change
in loss, next-token table, generations), of a `CorpusRun` (the verdict sentence, the change in
loss per category beside the feature's specialist scores, the dose-response) and of the
ledger (table, CSV/JSON export, re-run and compare), and keeps a run in the session before
saving it, so a failed save never loses its result. The numbers and sentences come from
`explorer.live.runs`; this module only lays them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from explorer.charts.feature import token_label
from explorer.charts.interventions import (
    category_effect_chart,
    dose_response_chart,
    specialist_score_chart,
    token_effect_chart,
)
from explorer.charts.tokens_html import Highlight, highlight_html, legend_html
from explorer.errors import ExplorerError, markdown_escaped, quoted
from explorer.live.interventions import MAX_NEW_TOKENS, Intervention, Progress
from explorer.live.runs import (
    CorpusRun,
    GenerationSettings,
    Rerun,
    TextRun,
    ledger_csv,
    ledger_json,
    ledger_table,
    save_run,
    value_scale,
)
from explorer.methods_doc import methods_link
from explorer.store.queries.search import MAX_QUERY_CHARS
from explorer.store.queries.texts import find_texts
from explorer.store.reader import Store
from explorer.ui.links import show_chart
from explorer.ui.tables import NUMBER, feature_table, plain_table


@dataclass(frozen=True)
class TextRequest:
    """What the "One text" form asked for."""

    text: str
    generation: GenerationSettings | None

    def text_and_generation(self) -> tuple[str, GenerationSettings | None]:
        return self.text, self.generation


LISTED_TEXTS = 100  # stored texts listed by the picker (the first by id that match)
PREVIEW_CHARS = 2000  # of the chosen stored text shown before a run
PER_TOKEN_FORMATS = {  # a text run's per-token table (`TextEffect.per_token`)
    "pos": NUMBER("position", format="%d"),
    "clean_loss": NUMBER("clean loss", format="%.4f"),
    "patched_loss": NUMBER("intervened loss", format="%.4f"),
    "delta_loss": NUMBER("change in loss", format="%+.4f"),
    "kl": NUMBER("KL", format="%.4f", help="KL(clean || intervened), next-token distribution"),
    "activation_change": NUMBER(
        "|change| at the hook", format="%.4f", help="mean |x' - x| over the hook's width"
    ),
}


def stored_text_picker(store: Store) -> int | None:
    """A stored text chosen by category and a piece of its text, from a list of the first
    `LISTED_TEXTS` matches, shown (escaped) before the run; its id, or None with a message
    when nothing matches or the search is refused."""
    st.markdown("**Stored text**")
    left, right = st.columns([1, 2])
    categories = [None, *store.categories()["category"]]
    category = left.selectbox("Category", categories, format_func=lambda c: c or "every category")
    contains = right.text_input(
        "Text contains",
        max_chars=MAX_QUERY_CHARS,
        placeholder="e.g. def, 12 +, http",
        help="Case-insensitive; every character is literal. Empty lists every text.",
    )
    try:
        found = find_texts(store, contains, category, LISTED_TEXTS)
    except ExplorerError as error:
        st.error(str(error))
        return None
    if found.empty:
        st.info(
            f"No stored text contains {quoted(contains)} (searched: "
            f"{markdown_escaped(category or 'every category')}): change the search or the "
            "category, or type a text below."
        )
        return None
    options = {
        int(row.text_id): f"#{row.text_id} · {row.category} · {' '.join(str(row.snippet).split())}"
        for row in found.itertuples()
    }
    text_id = st.selectbox("Stored text", list(options), format_func=options.__getitem__)
    matches = int(found["n_matches"].iloc[0])
    st.caption(
        f"Stored texts that match: {matches:,}; listed: {len(found):,} (the first by id). "
        "The chosen text, as the model reads it:"
    )
    text = str((store.text(text_id) or {}).get("text", ""))
    more = len(text) - PREVIEW_CHARS
    st.code(text[:PREVIEW_CHARS] + (f"… ({more:,} more characters)" if more > 0 else ""), None)
    return text_id


def text_run_form(store: Store, max_chars: int) -> TextRequest | None:
    """The "One text" form: the stored text chosen above it (`stored_text_picker`) or a
    typed one of at most `max_chars`, and the generation settings; the request once
    submitted, else None (an over-long typed text, or no stored text chosen, gets a
    message)."""
    text_id = stored_text_picker(store)
    with st.form("text_run"):
        kind = st.radio("Text", ["Stored text", "Typed text"], horizontal=True)
        typed = st.text_area("Typed text", max_chars=max_chars, height=100)
        with st.expander("Generations with and without the intervention"):
            with_generation = st.checkbox("Generate", value=True)
            columns = st.columns(4)
            new_tokens = columns[0].number_input("New tokens", 1, MAX_NEW_TOKENS, 20)
            sampling = columns[1].radio("Decoding", ["greedy", "sample"], horizontal=True)
            seed = columns[2].number_input("Seed", min_value=0, max_value=2**31 - 1, value=0)
            temperature = columns[3].number_input("Temperature", 0.05, 5.0, 1.0, step=0.1)
        if not st.form_submit_button("Run on the text", type="primary"):
            return None
    if kind == "Typed text" and len(typed) > max_chars:
        st.error(f"Give at most {max_chars:,} characters of text.")
        return None
    if kind == "Stored text" and text_id is None:
        st.error("No stored text is chosen: change the search above, or type a text.")
        return None
    stored = store.text(text_id) if kind == "Stored text" and text_id is not None else None
    text = typed if kind == "Typed text" else "" if stored is None else stored["text"]
    generation = GenerationSettings(int(new_tokens), sampling, int(seed), float(temperature))
    return TextRequest(text, generation if with_generation else None)


def show_chosen_features(intervention: Intervention) -> None:
    """What the run changes, then its features with their descriptions; one click on a
    feature opens its page in this tab."""
    st.markdown(f"**{markdown_escaped(intervention.describe())}**")
    chosen = pd.DataFrame({"sae": intervention.sae, "feature": list(intervention.features)})
    feature_table(chosen, ["feature"])


def show_value_scale(intervention: Intervention, stats: pd.DataFrame) -> None:
    """The intervention's value against the features' max and mean activations
    (`explorer.live.runs.value_scale`; `stats` as there)."""
    lines = value_scale(intervention, stats)
    if lines:
        st.caption(markdown_escaped(" ".join(lines)) + " " + methods_link("ablation-lab"))


def keep_run(key: str, run: TextRun | CorpusRun, store: Store, demo: bool) -> None:
    """Keep `run` in the session under `key` with its ledger id, or why it was not saved:
    the public demo saves nothing, and a save that fails keeps the run on the page with the
    error shown."""
    st.session_state[key] = (run, "public demo")
    if demo:
        return
    try:
        st.session_state[key] = (run, save_run(store, run))
    except ExplorerError as error:
        st.session_state[key] = (run, "the ledger could not be written")
        st.error(str(error))


def progress_of(bar: Any) -> Progress:
    """A corpus run's progress callback drawing on the `st.progress` bar."""

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"{done:,} of {total:,} texts")

    return progress


def run_title(saved: int | str) -> str:
    """`saved`: the run's ledger id, or why it was not saved."""
    return f"Run **#{saved}**" if isinstance(saved, int) else f"Run (not saved: {saved})"


def show_text_run(run: TextRun, saved: int | str) -> None:
    effect, summary = run.effect, run.effect.summary()
    st.markdown(f"{run_title(saved)}: {markdown_escaped(run.intervention.describe())}")
    metrics = {
        "mean change in loss": f"{summary['mean_delta_loss']:+.4f}",
        "largest change in loss": f"{summary['max_delta_loss']:+.4f}",
        "mean KL divergence": f"{summary['mean_kl']:.4f}",
        "mean |change| at the hook": f"{summary['mean_activation_change']:.4f}",
    }
    for column, (name, value) in zip(st.columns(4), metrics.items(), strict=True):
        column.metric(name, value)
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
    show_chart(token_effect_chart(effect.per_token()))
    left, right = st.columns(2)
    with left:
        st.markdown("**Top next tokens after the last token**")
        top = effect.top_next
        plain_table(
            top.assign(
                clean_token=top["clean_token"].map(token_label),
                patched_token=top["patched_token"].map(token_label),
            ),
            clean_token="clean",
            patched_token="intervened",
        )
    with right:
        if run.clean_generation is not None:
            st.markdown(f"**Generations** ({markdown_escaped(run.generation.sampling)})")
            st.caption("Without the intervention")
            st.text(run.clean_generation)
            st.caption("With the intervention")
            st.text(run.intervened_generation)
    with st.expander("Per token: losses and the features' activations before and after"):
        per_token = effect.per_token()
        plain_table(
            per_token.assign(token=per_token["token"].map(token_label)),
            **PER_TOKEN_FORMATS,
            **{
                column: NUMBER(column, format="%.2f", help="the feature's activation")
                for column in per_token.columns
                if column.startswith("#")
            },
        )


def show_corpus_run(
    run: CorpusRun, saved: int | str, scores: pd.DataFrame, score_title: str
) -> None:
    """`saved` as in `run_title`; `scores`: category and specialist score of the run's first
    feature."""
    description = run.intervention.describe()
    st.markdown(f"{run_title(saved)}: {markdown_escaped(description)}, over {run.n_texts:,} texts")
    st.markdown(run.verdict_and_most_affected())
    base = run.summary[run.summary["setting"] == 0]
    order = base.sort_values("mean_delta_loss", ascending=False)["category"].tolist()
    left, right = st.columns(2)
    left.markdown("**Causal: change in loss per category**")
    target = None if run.test is None else run.test["category"]
    show_chart(category_effect_chart(base, target), left)
    first = run.intervention.features[0]
    right.markdown(f"**Correlational: specialist score of #{first}** ({score_title})")
    show_chart(specialist_score_chart(scores, score_title, order), right)
    if run.scales:
        st.markdown("**Dose-response**")
        show_chart(dose_response_chart(run.dose_response()))


def show_ledger(ledger: pd.DataFrame) -> None:
    """The ledger's runs (first feature linked) and its CSV and JSON exports."""
    listing = ledger_table(ledger)
    feature_table(
        listing[listing["feature"] >= 0],
        ["id", "sae", "feature", "kind", "description", "size", "mean_delta_loss"],
    )
    csv_column, json_column, _ = st.columns(3)
    csv_column.download_button("Export CSV", ledger_csv(ledger), "interventions.csv", "text/csv")
    json_column.download_button(
        "Export JSON", ledger_json(ledger), "interventions.json", "application/json"
    )


def show_rerun(rerun: Rerun) -> None:
    if rerun.same:
        st.success(rerun.message())
    else:
        st.warning(rerun.message())
        st.json({"recorded": rerun.recorded, "now": rerun.now})
