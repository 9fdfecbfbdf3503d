"""Feature charts: the data they plot, axis titles, tooltips, sort order, token labels."""

from __future__ import annotations

import pandas as pd
import pytest

from explorer.analysis.histograms import activation_histogram, value_histogram
from explorer.charts.feature import (
    activation_histogram_chart,
    category_chart,
    logit_histogram_chart,
    logit_lens_chart,
    token_label,
)

CATEGORIES = pd.DataFrame(
    {
        "category": ["code", "maths", "prose"],
        "n_texts": [10, 20, 40],
        "n_texts_active": [5, 2, 0],
        "n_tokens_active": [30, 4, 0],
        "mean_act": [0.3, 0.05, 0.0],
        "max_act": [1.0, 0.4, 0.0],
        "strong_count": [12, 1, 0],
    }
)
LENS = pd.DataFrame(
    {
        "rank": [1, 2, -1, -2],
        "token_id": [10, 11, 12, 13],
        "token": [" the", "\n", "x", "x"],
        "logit": [0.5, 0.25, -0.75, -0.5],
    }
)


def spec(chart) -> dict:
    return chart.to_dict()


def data_of(chart) -> list[dict]:
    specification = spec(chart)
    return specification["datasets"][specification["data"]["name"]]


def test_activation_histogram_chart_plots_bins_over_zero_to_max():
    chart = activation_histogram_chart(activation_histogram([1, 0, 3, 6], 2.0), 2.0)
    encoding = spec(chart)["encoding"]
    assert encoding["x"]["title"] == "activation" and encoding["y"]["title"] == "active tokens"
    assert encoding["x"]["scale"]["domain"] == [0, 2.0]
    assert encoding["y2"] == {"datum": 0}
    rows = data_of(chart)
    assert [(r["low"], r["high"], r["count"]) for r in rows] == [
        (0.0, 0.5, 1),
        (0.5, 1.0, 0),
        (1.0, 1.5, 3),
        (1.5, 2.0, 6),
    ]
    assert rows[3]["density"] == pytest.approx(0.6 / 0.5)
    titles = {tooltip["title"] for tooltip in encoding["tooltip"]}
    assert {"active tokens", "share of active tokens", "density (per unit activation)"} <= titles


@pytest.mark.parametrize("measure", ["mean_act", "share_active", "strong_count", "max_act"])
def test_category_chart_sorts_categories_by_the_measure(measure):
    chart = category_chart(CATEGORIES, measure)
    encoding = spec(chart)["encoding"]
    assert encoding["x"]["field"] == measure and encoding["y"]["sort"] == "-x"
    shares = {row["category"]: row["share_active"] for row in data_of(chart)}
    assert shares == {"code": 0.5, "maths": 0.1, "prose": 0.0}
    with pytest.raises(ValueError, match="measure must be one of"):
        category_chart(CATEGORIES, "median")


def test_logit_lens_chart_labels_tokens_visibly_and_colours_by_sign():
    chart = logit_lens_chart(LENS, "Tokens")
    rows = data_of(chart)
    assert [row["label"] for row in rows] == ["␣the", "↵", "x #12", "x #13"]
    assert [row["direction"] for row in rows] == ["promoted", "promoted"] + ["suppressed"] * 2
    encoding = spec(chart)["encoding"]
    assert encoding["y"]["sort"] == {"field": "logit", "order": "descending"}
    assert encoding["color"]["scale"]["range"] == ["#d94f04", "#1f77b4"]
    assert spec(chart)["title"] == "Tokens"


def test_logit_histogram_chart_counts_every_token():
    histogram = value_histogram(LENS["logit"].to_numpy(), bins=3)
    rows = data_of(logit_histogram_chart(histogram))
    assert sum(row["count"] for row in rows) == len(LENS)


def test_token_labels_make_whitespace_and_control_characters_visible():
    assert token_label("") == "∅"
    assert token_label(" a\tb\x00") == "␣a⇥b\\x00"
