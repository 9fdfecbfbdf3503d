"""The bars of the answer under every measure: direction from rho and p, and the p-value in
the tooltip as the app writes p-values (never "0" for one that underflowed)."""

from __future__ import annotations

import pandas as pd

from explorer.charts.frequency import rho_by_measure_chart


def test_bars_say_the_direction_and_a_p_value_that_underflowed() -> None:
    answers = pd.DataFrame(
        {
            "measure": ["selectivity", "score", "auroc"],
            "name": ["selectivity", "notebook score", "AUROC"],
            "rho": [-0.31, 0.12, 0.40],
            "p_value": [0.0, 0.2, 3.14e-5],
            "n": [24_000, 24_000, 24_000],
            "conclusion": ["a", "b", "c"],
        }
    )
    spec = rho_by_measure_chart(answers).to_dict()
    (rows,) = spec["datasets"].values()
    assert [row["direction"] for row in rows] == [
        "rarer score higher",
        "not significant",
        "more frequent score higher",
    ]
    assert [row["p_text"] for row in rows] == ["< 1e-300", "0.200", "3.1e-05"]
    tooltip = {item["field"]: item["title"] for item in spec["encoding"]["tooltip"]}
    assert tooltip["p_text"] == "p-value" and "p_value" not in tooltip
