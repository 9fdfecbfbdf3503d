"""Charts of the specialist pages: titles, tooltips, sort orders and links to features."""

from __future__ import annotations

import pandas as pd

from explorer.analysis.frequency import frequency_histogram, kind_by_frequency_band
from explorer.analysis.specialists import layer_progression
from explorer.charts import feature_href
from explorer.charts.specialists import (
    category_heatmap,
    chance_heatmap,
    frequency_histogram_chart,
    frequency_scatter,
    kind_share_chart,
    layer_progression_chart,
)

MATRIX = pd.DataFrame(
    {
        "sae": ["deep", "deep", "shallow", "shallow"],
        "layer": [3, 3, 1, 1],
        "category": ["code", "prose", "code", "prose"],
        "best_feature": [7, 2, 11, 5],
        "best_score": [12.0, 3.0, 4.0, -1.0],
        "n_specialists": [2, 1, 1, 0],
    }
)
FEATURES = pd.DataFrame(
    {
        "sae": ["deep"] * 4,
        "feature": [0, 1, 2, 3],
        "freq_rank": [1, 2, 3, 4],
        "token_freq": [0.2, 0.01, 0.001, 0.0],
        "n_active_tokens": [2000, 100, 10, 0],
        "best_category": ["code", "code", "prose", None],
        "best_score": [-3.0, 2.0, 9.0, None],
        "is_specialist": [False, False, True, False],
        "specialist_category": [None, None, "prose", None],
        "kind": ["general", "general", "category", "dead"],
        "value_label": [None, None, None, None],
    }
)


def spec(chart) -> dict:
    return chart.to_dict()


def layers_of(chart_dict: dict) -> list[dict]:
    return chart_dict.get("layer", [chart_dict])


def test_heatmap_of_best_scores_links_each_cell_to_its_feature() -> None:
    chart = spec(category_heatmap(MATRIX, "best_score", "notebook score"))
    rects = layers_of(chart)[0]
    encoding = rects["encoding"]
    assert encoding["x"]["title"] == "SAE (by layer)"
    assert encoding["x"]["sort"] == ["shallow", "deep"]  # by layer, not by name
    assert encoding["color"]["title"] == "notebook score"
    assert encoding["href"]["field"] == "href"
    assert {t["title"] for t in encoding["tooltip"]} >= {"SAE", "category", "best feature"}
    rows = next(iter(chart["datasets"].values()))
    assert {(r["sae"], r["href"]) for r in rows} == {
        ("deep", feature_href("deep", 7)),
        ("deep", feature_href("deep", 2)),
        ("shallow", feature_href("shallow", 11)),
        ("shallow", feature_href("shallow", 5)),
    }


def test_heatmap_of_counts_has_no_links() -> None:
    rects = layers_of(spec(category_heatmap(MATRIX, "n_specialists", "score")))[0]
    assert rects["encoding"]["color"]["title"] == "specialists"
    assert "href" not in rects["encoding"]


def test_layer_progression_draws_the_target_line() -> None:
    progression = layer_progression(MATRIX)
    chart = spec(layer_progression_chart(progression))
    rows = next(iter(chart["datasets"].values()))
    target = {r["layer"]: r["categories"] for r in rows if r["series"].startswith("target")}
    found = {r["layer"]: r["categories"] for r in rows if not r["series"].startswith("target")}
    assert target == {1: 2, 3: 2} and found == {1: 1, 3: 2}
    assert all(layer["encoding"]["y"]["title"] == "categories" for layer in chart["layer"])
    # the dashed target is the last layer, drawn over the found line where they meet
    assert [layer["mark"].get("strokeDash") for layer in chart["layer"]] == [None, [6, 4]]
    # the y axis ends at the number of categories, so the target line is on its top edge
    scale = chart["layer"][0]["encoding"]["y"]["scale"]
    assert scale["domain"] == [0, 2] and scale["nice"] is False


def test_chance_heatmap_writes_observed_over_the_null_and_fades_chance_cells() -> None:
    matrix = MATRIX.assign(
        n_replicated=[1, 0, 1, 0],
        chance_mean=[0.1, 0.5, 0.0, 0.0],
        chance_p95=[1.0, 1.0, 0.0, 0.0],
        beats_chance=[True, False, True, False],
    )
    chart = spec(chance_heatmap(matrix))
    rows = next(iter(chart["datasets"].values()))
    assert [r["label"] for r in rows] == ["2 / 1", "1 / 1 ~", "1 / 0", "0 / 0 ~"]
    rects = chart["layer"][0]["encoding"]
    assert rects["opacity"]["condition"]["value"] == 1.0 and rects["opacity"]["value"] == 0.3
    assert {t["title"] for t in rects["tooltip"]} >= {
        "by chance (mean)", "by chance (95th percentile)", "against chance",
    }  # fmt: skip
    replicated = spec(chance_heatmap(matrix, "n_replicated"))
    rows = next(iter(replicated["datasets"].values()))
    assert [r["label"] for r in rows][:2] == ["1 / 1", "0 / 1 ~"]
    assert replicated["layer"][0]["encoding"]["color"]["title"] == "replicated specialists"


def test_heatmap_cells_without_a_feature_have_no_link() -> None:
    matrix = MATRIX.astype({"best_feature": float})
    matrix.loc[3, ["best_feature", "best_score"]] = None
    rows = next(iter(spec(category_heatmap(matrix, "best_score", "s"))["datasets"].values()))
    assert [r["href"] for r in rows][3] is None


def test_scatter_uses_a_log_axis_and_links_points() -> None:
    chart = spec(frequency_scatter(FEATURES, "token_freq", "notebook score"))
    encoding = chart["encoding"]
    assert encoding["x"]["scale"]["type"] == "log"
    assert encoding["x"]["title"] == "token frequency (log)"
    assert encoding["href"]["field"] == "href"
    rows = next(iter(chart["datasets"].values()))
    assert [r["feature"] for r in rows] == [0, 1, 2]  # dead features have no frequency
    assert rows[2]["href"] == feature_href("deep", 2) and rows[2]["colour"] == "prose"
    assert encoding["color"]["scale"]["domain"] == ["prose", "general (not a specialist)"]
    rank = spec(frequency_scatter(FEATURES, "freq_rank", "s"))["encoding"]["x"]
    assert rank["field"] == "freq_rank" and rank["scale"]["type"] == "log"


def test_kind_shares_and_histogram_charts_keep_their_order() -> None:
    shares = spec(kind_share_chart(kind_by_frequency_band(FEATURES)))
    assert shares["encoding"]["x"]["sort"][0] == "dead"
    assert shares["encoding"]["y"]["title"] == "% of the band's features"
    histogram = frequency_histogram(FEATURES, n_bins=3)
    chart = spec(frequency_histogram_chart(histogram))
    assert chart["encoding"]["x"]["sort"] == histogram["bin"].tolist()
    assert chart["encoding"]["y"]["title"] == "features"


def test_the_frequency_scatters_score_axis_title_is_wrapped_not_cut() -> None:
    """Vega-Lite cuts an axis title at the axis length ("…against cha" for selectivity on the
    demo store): the title comes in lines short enough to show whole, every word kept."""
    from explorer.analysis.specialists import MEASURES
    from explorer.charts.specialists import AXIS_TITLE_CHARS, frequency_scatter

    features = pd.DataFrame(
        {"sae": ["s"], "feature": [0], "token_freq": [0.1], "freq_rank": [1], "best_score": [0.9],
         "is_specialist": [True], "kind": ["category"], "specialist_category": ["alpha"],
         "best_category": ["alpha"], "n_active_tokens": [10], "value_label": [None],
         "description": ["x"]}
    )  # fmt: skip
    longest = max(MEASURES.values(), key=len)
    title = frequency_scatter(features, "token_freq", longest).to_dict()["encoding"]["y"]["title"]
    assert len(title) > 1 and all(len(line) <= AXIS_TITLE_CHARS for line in title)
    assert " ".join(title) == longest
