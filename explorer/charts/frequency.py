"""Charts of the frequency page's answer under every measure: DataFrame in, altair.Chart out.

Owns the bars of Spearman's rho of token frequency against each measure's best score
(`explorer.analysis.frequency.answers_by_measure`): below zero, rarer features score as more
specialised; above, more frequent ones; faded where p >= `ALPHA`; p-values written as
`explorer.number_style` writes them. No streamlit.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from explorer.analysis.frequency import ALPHA
from explorer.number_style import p_value_text


def rho_by_measure_chart(answers: pd.DataFrame) -> alt.Chart:
    """One bar per measure (in the table's order): Spearman's rho in [-1, 1], coloured by
    its direction, faded when not significant; the conclusion in the tooltip."""
    data = answers.assign(
        direction=[
            "not significant" if p >= ALPHA else ("rarer score higher" if rho < 0 else
                                                  "more frequent score higher")
            for rho, p in zip(answers["rho"], answers["p_value"], strict=True)
        ],
        p_text=answers["p_value"].map(p_value_text),  # "< 1e-300" where p underflowed to 0
    )  # fmt: skip
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X(
                "rho:Q",
                title="Spearman rho: token frequency vs best score",
                scale=alt.Scale(domain=[-1, 1]),
            ),
            y=alt.Y("measure:N", sort=answers["measure"].tolist(), title="measure"),
            color=alt.Color(
                "direction:N",
                title="answer",
                scale=alt.Scale(
                    domain=["rarer score higher", "more frequent score higher", "not significant"],
                    range=["#1f77b4", "#d62728", "#c7c7c7"],
                ),
            ),
            tooltip=[
                alt.Tooltip("name:N", title="measure"),
                alt.Tooltip("rho:Q", title="Spearman rho", format="+.3f"),
                alt.Tooltip("p_text:N", title="p-value"),
                alt.Tooltip("n:Q", title="features scored"),
                alt.Tooltip("conclusion:N", title="answer"),
            ],
        )  # fmt: skip
        .properties(height=alt.Step(28))
    )
