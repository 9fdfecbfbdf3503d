"""k-sparse probing of two stores side by side: each store's probes in one frame, the table
per category with a column per "<store> · <SAE>" (each store's SAEs together, the stores in
their order), the best SAE over both, and a category one corpus lacks left empty there; the
chart draws one line per k and store. Expected values are written out by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from explorer.analysis.field_metrics import (
    probing_by_category,
    probing_summary,
    rows_side_by_side,
)
from explorer.charts.field_metrics import probing_chart


def probes(rows: list[tuple[str, int, str, float]], k: int = 1) -> pd.DataFrame:
    """`sparse_probing` rows (sae, layer, category, accuracy) at one k."""
    frame = pd.DataFrame(rows, columns=["sae", "layer", "category", "accuracy"])
    return frame.assign(k=k, features=[[0]] * len(frame), train_accuracy=1.0)[
        ["sae", "layer", "category", "k", "features", "train_accuracy", "accuracy"]
    ]


A = probes(
    [
        ("L1", 1, "code", 0.9),
        ("L0", 0, "code", 0.8),
        ("L1", 1, "maths", 0.6),
        ("L0", 0, "maths", 0.7),
    ]
)
B = probes([("L0", 0, "code", 0.95), ("L2", 2, "code", 0.9)])  # another corpus: no maths


def test_two_stores_probes_sit_side_by_side_per_category() -> None:
    both = rows_side_by_side({"A: one.duckdb": A, "B: two.duckdb": B})
    assert both.columns[0] == "store"
    assert both["store"].tolist() == ["A: one.duckdb"] * 4 + ["B: two.duckdb"] * 2
    assert both["sae"].tolist()[-2:] == ["B: two.duckdb · L0", "B: two.duckdb · L2"]
    table = probing_by_category(both, 1).set_index("category")
    assert list(table.columns) == [
        "A: one.duckdb · L0",  # each store's SAEs together, by layer; A first
        "A: one.duckdb · L1",
        "B: two.duckdb · L0",
        "B: two.duckdb · L2",
        "best_sae",
        "best_accuracy",
    ]
    assert table.loc["code"].iloc[:4].tolist() == [0.8, 0.9, 0.95, 0.9]
    assert table.loc["code", "best_sae"] == "B: two.duckdb · L0"
    assert table.loc["code", "best_accuracy"] == 0.95
    maths = table.loc["maths"]
    assert maths.iloc[:2].tolist() == [0.7, 0.6] and np.isnan(maths.iloc[2:4].astype(float)).all()
    assert maths["best_sae"] == "A: one.duckdb · L0" and maths["best_accuracy"] == 0.7


def test_a_tie_goes_to_the_first_column() -> None:
    tied = probes([("L0", 0, "code", 0.9)])
    both = rows_side_by_side({"A: x": tied, "B: y": tied})
    assert probing_by_category(both, 1)["best_sae"].tolist() == ["A: x · L0"]


def test_one_store_keeps_the_layer_order() -> None:
    table = probing_by_category(A, 1)
    assert list(table.columns) == ["category", "L0", "L1", "best_sae", "best_accuracy"]
    assert table["best_sae"].tolist() == ["L1", "L0"]


def test_the_summary_means_each_store_sae_over_its_categories() -> None:
    both = rows_side_by_side({"A: one.duckdb": A, "B: two.duckdb": B})
    means = probing_summary(both).set_index("sae")["probe_k1"]
    assert means.to_dict() == pytest.approx(
        {
            "A: one.duckdb · L0": 0.75,
            "A: one.duckdb · L1": 0.75,
            "B: two.duckdb · L0": 0.95,
            "B: two.duckdb · L2": 0.9,
        }
    )


def test_the_chart_draws_a_line_per_k_and_store() -> None:
    both = rows_side_by_side({"A: one.duckdb": A, "B: two.duckdb": B})
    spec = probing_chart(both).to_dict()
    lines, points = spec["layer"]
    assert lines["mark"]["type"] == "line" and points["mark"]["type"] == "point"
    assert lines["encoding"]["strokeDash"]["field"] == "store"
    assert lines["encoding"]["color"]["field"] == points["encoding"]["color"]["field"] == "k"
    [data] = spec["datasets"].values()
    points = {(row["store"], row["layer"]): row["accuracy"] for row in data}
    assert points == pytest.approx(
        {
            ("A: one.duckdb", 0): 0.75,
            ("A: one.duckdb", 1): 0.75,
            ("B: two.duckdb", 0): 0.95,
            ("B: two.duckdb", 2): 0.9,
        }  # fmt: skip
    )
    alone = probing_chart(A).to_dict()
    assert alone["mark"] == {"type": "line", "point": True}
    assert "strokeDash" not in alone["encoding"]
    assert json.dumps(alone).count('"store"') == 0
