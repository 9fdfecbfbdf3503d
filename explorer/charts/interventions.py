"""Charts of the ablation lab: DataFrame in, altair.Chart out.

Owns the per-token effect of an intervention on one text (change in next-token loss and KL
divergence), the change in loss per category beside the feature's specialist score, and the
dose-response curve over scales. Input frames are those of `explorer.live.interventions` and
`explorer.live.runs`. No streamlit.
"""

from __future__ import annotations

from collections.abc import Iterable

import altair as alt
import numpy as np
import pandas as pd

INCREASE_COLOR = "#d62728"
DECREASE_COLOR = "#1f77b4"
MARGIN = 1.05  # aligned domains reach 5% past the largest value, so no bar touches the edge
Domain = tuple[float, float]


def aligned_zero_domains(*series: Iterable[float]) -> list[Domain]:
    """One axis domain per series such that 0 sits at the same height on every axis (the
    two y axes of `token_effect_chart`): each domain holds its series and 0, and its share
    below 0 is the largest share any series needs, capped at one half (a share of one half
    is a symmetric domain, which holds any series), widened by `MARGIN`. Non-finite values
    are ignored; a series of zeros gets (0, 1) or (-1, 1) before the widening."""
    extents = []
    for values in series:
        finite = np.asarray(list(values), dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        below = float(max(-finite.min(), 0.0)) if finite.size else 0.0
        above = float(max(finite.max(), 0.0)) if finite.size else 0.0
        extents.append((below, above))
    shares = [below / (below + above) for below, above in extents if below + above > 0]
    share = min(max(shares, default=0.0), 0.5)
    domains = []
    for below, above in extents:
        if below + above == 0:
            below, above = (0.0, 1.0) if share == 0 else (1.0, 1.0)
        if share == 0:
            domains.append((0.0, MARGIN * above))
            continue
        span = MARGIN * max(below / share, above / (1 - share))
        domains.append((-share * span, (1 - share) * span))
    return domains


def token_effect_chart(per_token: pd.DataFrame) -> alt.Chart:
    """Bars of the change in loss at each token (red: the intervention made the token harder
    to predict), with the KL divergence after the token as a line on a second axis whose 0
    is level with the first's (`aligned_zero_domains`)."""
    data = per_token.assign(
        direction=per_token["delta_loss"].ge(0).map({True: "loss up", False: "loss down"})
    )
    tooltip = [
        alt.Tooltip("pos:Q", title="position"),
        alt.Tooltip("token:N", title="token"),
        alt.Tooltip("clean_loss:Q", title="clean loss", format=".4f"),
        alt.Tooltip("patched_loss:Q", title="intervened loss", format=".4f"),
        alt.Tooltip("delta_loss:Q", title="change in loss", format="+.4f"),
        alt.Tooltip("kl:Q", title="KL after token", format=".4f"),
    ]
    loss_domain, kl_domain = aligned_zero_domains(per_token["delta_loss"], per_token["kl"])
    base = alt.Chart(data).encode(x=alt.X("pos:O", title="token position"))
    bars = base.mark_bar().encode(
        y=alt.Y(
            "delta_loss:Q",
            title="change in next-token loss (nats)",
            scale=alt.Scale(domain=loss_domain, nice=False),
        ),
        color=alt.Color(
            "direction:N",
            scale=alt.Scale(
                domain=["loss up", "loss down"], range=[INCREASE_COLOR, DECREASE_COLOR]
            ),
            legend=alt.Legend(title=None, orient="top"),
        ),
        tooltip=tooltip,
    )
    kl = base.mark_line(point=True, color="#7f7f7f").encode(
        y=alt.Y(
            "kl:Q",
            title="KL(clean || intervened)",
            scale=alt.Scale(domain=kl_domain, nice=False),
        ),
        tooltip=tooltip,
    )
    return alt.layer(bars, kl).resolve_scale(y="independent").properties(height=260)


def category_effect_chart(summary: pd.DataFrame, target: str | None = None) -> alt.Chart:
    """Mean change in loss per category (bars, +- one standard error), the target category
    highlighted; `summary` has category, mean_delta_loss, sem, n_texts."""
    data = summary.assign(
        low=summary["mean_delta_loss"] - summary["sem"],
        high=summary["mean_delta_loss"] + summary["sem"],
        is_target=summary["category"].eq(target) if target else False,
    )
    order = data.sort_values("mean_delta_loss", ascending=False)["category"].tolist()
    tooltip = [
        alt.Tooltip("category:N", title="category"),
        alt.Tooltip("mean_delta_loss:Q", title="mean change in loss", format="+.5f"),
        alt.Tooltip("sem:Q", title="standard error", format=".5f"),
        alt.Tooltip("n_texts:Q", title="texts"),
    ]
    base = alt.Chart(data).encode(y=alt.Y("category:N", sort=order, title="category"))
    bars = base.mark_bar().encode(
        x=alt.X("mean_delta_loss:Q", title="mean change in loss per text (nats)"),
        color=alt.condition(alt.datum.is_target, alt.value(INCREASE_COLOR), alt.value("#9ecae1")),
        tooltip=tooltip,
    )
    errors = base.mark_rule(color="#333").encode(x="low:Q", x2="high:Q", tooltip=tooltip)
    return alt.layer(bars, errors).properties(height=alt.Step(22))


def specialist_score_chart(scores: pd.DataFrame, score_title: str, order: list[str]) -> alt.Chart:
    """The feature's specialist score per category (`scores`: category, score), rows in the
    same order as `category_effect_chart`."""
    return (
        alt.Chart(scores)
        .mark_bar(color="#9467bd")
        .encode(
            y=alt.Y("category:N", sort=order, title="category"),
            x=alt.X("score:Q", title=score_title),
            tooltip=[
                alt.Tooltip("category:N", title="category"),
                alt.Tooltip("score:Q", title=score_title, format=".4g"),
            ],
        )
        .properties(height=alt.Step(22))
    )


def dose_response_chart(dose: pd.DataFrame) -> alt.Chart:
    """Mean change in loss against the scale of the features, one line per category
    (`dose`: scale, category, mean_delta_loss, sem)."""
    tooltip = [
        alt.Tooltip("scale:Q", title="scale"),
        alt.Tooltip("category:N", title="category"),
        alt.Tooltip("mean_delta_loss:Q", title="mean change in loss", format="+.5f"),
        alt.Tooltip("sem:Q", title="standard error", format=".5f"),
    ]
    return (
        alt.Chart(dose)
        .mark_line(point=True)
        .encode(
            x=alt.X("scale:Q", title="activation scale (0 = ablated, 1 = unchanged)"),
            y=alt.Y("mean_delta_loss:Q", title="mean change in loss per text (nats)"),
            color=alt.Color("category:N", title="category"),
            tooltip=tooltip,
        )
        .properties(height=300)
    )
