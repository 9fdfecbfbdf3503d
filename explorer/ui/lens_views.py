"""How the logit lens page shows its views: the browse table and the consistency check.

Owns the browse table (every feature with its promoted and suppressed tokens, tokens absent
from the corpus hidden by default: `hide_absent_tokens`, shared with the feature page) and the
layout of `explorer.analysis.lens_checks` results: the summary metrics beside their
random-direction baseline, the hit-rate histogram and scatter, and one feature's examples
with the logit ranks of their activating and next tokens. The numbers come from the library.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from explorer.analysis.lens_checks import (
    FEW,
    INPUT_LIKE,
    OUTPUT_LIKE,
    consistency_summary,
    example_ranks,
    hit_rate_histogram,
)
from explorer.charts.feature import token_label
from explorer.charts.lens import consistency_scatter, hit_rate_histogram_chart
from explorer.charts.marks import thin_marks
from explorer.errors import markdown_escaped
from explorer.sources.unembed import unembed_directions
from explorer.store.reader import Store
from explorer.ui import cached
from explorer.ui import feature_cache as cache
from explorer.ui.links import feature_chart, show_chart
from explorer.ui.tables import NUMBER, feature_table, plain_table

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

# the numbers before the token lists, so all fit at 1440 px; a user's label shows as the
# feature's description
BROWSE_COLUMNS = ["feature", "max_logit", "min_logit", "token_freq", "max_act", "promoted",
                  "suppressed"]  # fmt: skip
# features in the browse table: a GPT-2-small SAE's 24,576 rows were serialised on every run
# (0.7 s of a warm navigation); the demo's 1,024 fit whole
BROWSE_ROWS = 2_000
TOKENS_WIDTH = 150  # px of each token list in the browse table (a cell shows its first tokens)


def hide_absent_tokens(key: str) -> bool:
    """The toggle hiding promoted and suppressed tokens that never occur in the corpus."""
    return st.toggle(
        "Hide tokens that never occur in the corpus",
        value=True,
        key=key,
        help="Under-trained embeddings of tokens the corpus never holds often top W_dec @ W_U.",
    )


def show_browse(store: Store, sae: str, n_tokens: int, rows: int = BROWSE_ROWS) -> None:
    """The first `rows` features of `sae` by largest logit effect, each with its `n_tokens`
    most promoted and suppressed tokens."""
    shown = cache.lens_overview(store, sae, n_tokens)
    if hide_absent_tokens("lens_page.in_corpus"):
        lists = cached.lens_in_corpus(store, sae, n_tokens)
        shown = shown.drop(columns=["promoted", "suppressed"]).merge(lists, on="feature")
        st.caption(
            f"{int(lists['n_hidden'].sum()):,} of the {int(lists['n_stored'].sum()):,} stored "
            "promoted and suppressed tokens never occur in the corpus and are hidden."
        )
    st.caption(
        f"{min(rows, len(shown)):,} of the {len(shown):,} features of {markdown_escaped(sae)}, "
        "by largest logit effect (the sidebar's 'Features shown'), with the tokens its decoder "
        "direction most promotes and suppresses (W_dec · W_U after the final layer norm's "
        "weight, as stored at build; ␣ is a space). Sort by any column; 'open' goes to the "
        "feature's page."
    )
    feature_table(
        shown.sort_values(["max_logit", "feature"], ascending=[False, True]).head(rows),
        BROWSE_COLUMNS,
        promoted=st.column_config.ListColumn("promoted tokens", width=TOKENS_WIDTH),
        suppressed=st.column_config.ListColumn("suppressed tokens", width=TOKENS_WIDTH),
    )


def show_consistency(checks: pd.DataFrame, sae: str, k: int, seed: int) -> None:
    summary = consistency_summary(checks)
    st.caption(
        f"For each feature's stored top examples: is the next token among the {k} tokens its "
        "decoder most promotes (hit rate)? Output-like features predict what follows; "
        "input-like ones promote the token they fire on. The baseline gives every feature a "
        f"random direction of the same norm (seed {seed})."
    )
    metrics = {
        "features checked": f"{summary['n_features']:,}",
        "mean hit rate": f"{summary['mean_hit_rate']:.3f}",
        "random baseline": f"{summary['mean_random_hit_rate']:.3f}",
        "beat their random direction": f"{summary['share_beating_random']:.1%}",
        "median next-token rank": f"{summary['median_next_rank']:,.0f}",
        "random median rank": f"{summary['median_random_rank']:,.0f}",
        OUTPUT_LIKE: f"{summary[OUTPUT_LIKE]:,}",
        INPUT_LIKE: f"{summary[INPUT_LIKE]:,}",
    }
    for column, (name, value) in zip(st.columns(4) * 2, metrics.items(), strict=True):
        column.metric(name, value)
    left, right = st.columns(2)
    left.markdown("**Hit rate: SAE decoder against random directions**")
    show_chart(hit_rate_histogram_chart(hit_rate_histogram(checks), k), left)
    right.markdown("**Next-token against activating-token hit rate** (click a point)")
    drawn, marks_note = thin_marks(checks)
    feature_chart(consistency_scatter(drawn, sae, k), right)
    if marks_note:
        right.caption(marks_note)


def show_feature_examples(
    by_hit_rate: pd.DataFrame,
    examples: pd.DataFrame,
    model: HookedTransformer,
    sae: SAE,
    k: int,
    min_examples: int,
) -> None:
    """A feature chosen among the checked ones (`by_hit_rate`: feature, kind), then its
    stored examples with the logit ranks of their activating and next tokens
    (`lens_checks.example_ranks`), tokens made visible."""
    st.subheader("One feature's examples")
    kind_of = dict(zip(by_hit_rate["feature"], by_hit_rate["kind"], strict=True))
    feature = st.selectbox(
        "Feature",
        list(kind_of),
        format_func=lambda f: f"{f} ({kind_of[f]})",
        help=f"Features with stored examples, by hit rate; '{FEW}': under {min_examples} next "
        "tokens.",
    )
    if feature is None:
        return
    unembed = partial(unembed_directions, model)
    ranked = example_ranks(examples, sae.W_dec, unembed, int(feature), k)
    next_token = ranked["next_token"].map(token_label, na_action="ignore")
    shown = ranked.assign(
        token=ranked["token"].map(token_label), next_token=next_token.fillna("(end of text)")
    )
    plain_table(
        shown,
        ["rank", "value", "token", "input_rank", "next_token", "next_rank"],
        rank="example",
        value=NUMBER("activation", format="%.3f"),
        token="activating token",
        input_rank=NUMBER("its logit rank", format="%d"),
        next_token="next token",
        next_rank=NUMBER("its logit rank", format="%d"),
    )
