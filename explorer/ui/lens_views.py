"""How the logit lens page shows the next-token consistency check.

Owns the layout of `explorer.analysis.lens_checks` results: the summary metrics beside their
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
from explorer.sources.unembed import unembed_directions
from explorer.ui.tables import NUMBER, plain_table

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer


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
    left.altair_chart(hit_rate_histogram_chart(hit_rate_histogram(checks), k), width="stretch")
    right.markdown("**Next-token against activating-token hit rate** (click a point)")
    right.altair_chart(consistency_scatter(checks, sae, k), width="stretch")


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
