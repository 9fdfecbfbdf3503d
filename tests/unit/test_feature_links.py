"""One click on a feature in a table or a chart opens its page: which feature a cell or a
chart point names, and the chart rewrite that turns every `href` mark into a click selection
(the browser behaviour itself is tested in tests/e2e/test_all_pages_browser.py)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import pytest

from explorer.charts import click_to_open, feature_href, feature_of_href
from explorer.charts.rankings import feature_bar_chart
from explorer.charts.taxonomy import enrichment_scatter
from explorer.ui.links import cell_target, point_target


@pytest.mark.parametrize(
    ("sae", "feature"), [("L3.resid_post", 261), ("a&b=c", 0), ("blocks.0 hook", 1023)]
)
def test_a_feature_href_names_its_feature_back(sae, feature):
    assert feature_of_href(feature_href(sae, feature)) == (sae, feature)


@pytest.mark.parametrize(
    "href",
    [
        "ablation?sae=L0&features=3",
        "feature?sae=L0",
        "feature?sae=L0&feature=-1",
        "feature?sae=L0&feature=1&feature=2",
        "https://example.com/feature?sae=L0&feature=1",
        "",
    ],
)
def test_other_urls_name_no_feature(href):
    assert feature_of_href(href) is None


def test_a_cell_opens_the_feature_of_its_row_in_a_link_column_only():
    targets = {"link": [("s", 4), ("s", 9), None], "feature": [("s", 4), ("s", 9), None]}
    assert cell_target([(1, "link")], targets) == ("s", 9)
    assert cell_target([(0, "feature")], targets) == ("s", 4)
    assert cell_target([(2, "link")], targets) is None  # a row naming no feature
    assert cell_target([(1, "description")], targets) is None
    assert cell_target([(7, "link")], targets) is None
    assert cell_target([], targets) is None


def test_a_chart_point_opens_the_feature_its_href_names():
    selection = {"open_feature_0": [], "open_feature_1": [{"href": feature_href("s", 12)}]}
    assert point_target(selection, ["open_feature_0", "open_feature_1"]) == ("s", 12)
    assert point_target({"open_feature_0": []}, ["open_feature_0"]) is None
    assert point_target({"box": {"x": [0, 1]}}, ["open_feature_0"]) is None


def _units(spec: dict) -> list[dict]:
    """Every unit spec (one with a mark) of a chart's dict."""
    found = [spec] if "mark" in spec else []
    for part in spec.get("layer", []) + spec.get("hconcat", []) + spec.get("vconcat", []):
        found += _units(part)
    return found


def test_click_to_open_replaces_each_href_by_a_click_selection_on_it():
    frame = pd.DataFrame({"sae": ["s", "s"], "feature": [3, 5], "jaccard": [0.5, 0.2]})
    chart = feature_bar_chart(frame, "jaccard", "Jaccard")
    clickable, names = click_to_open(chart)
    spec = clickable.to_dict()
    assert names == ["open_feature_0"]
    assert "href" not in spec["encoding"] and spec["mark"]["cursor"] == "pointer"
    (param,) = spec["params"]
    assert param["name"] == "open_feature_0"
    assert param["select"] == {"type": "point", "fields": ["href"], "on": "click"}
    assert "href" in chart.to_dict()["encoding"]  # the chart given is left as it was
    data = clickable.data
    assert [feature_of_href(h) for h in data["href"]] == [("s", 3), ("s", 5)]


def test_click_to_open_reaches_the_layers_of_a_layered_chart():
    frame = pd.DataFrame({"x": [1, 2], "href": [feature_href("s", 1), feature_href("s", 2)]})
    base = alt.Chart(frame).encode(x="x:Q")
    chart = alt.layer(base.mark_point().encode(href="href:N"), base.mark_rule())
    clickable, names = click_to_open(chart)
    assert names == ["open_feature_0"]
    assert all("href" not in unit.get("encoding", {}) for unit in _units(clickable.to_dict()))


def test_a_chart_naming_no_feature_is_left_unchanged():
    chart = alt.Chart(pd.DataFrame({"x": [1]})).mark_bar().encode(x="x:Q")
    clickable, names = click_to_open(chart)
    assert names == [] and clickable.to_dict() == chart.to_dict()


def test_the_taxonomy_scatter_opens_its_points_and_shows_their_descriptions():
    features = pd.DataFrame(
        {
            "sae": ["s", "s"],
            "feature": [0, 1],
            "label": ["word", "number"],
            "n_active_tokens": [10, 20],
            "max_enrichment": [5.0, 9.0],
            "max_token": ["a", "1"],
            "top_tokens": ["a", "1, 2"],
            "p_value": [0.001, 0.0001],
            "ceiling": [10.0, 5.0],
            "description": ['" a" · word', '"1", "2" · number'],
        }
    )
    chart = enrichment_scatter(features, 100)
    points = chart.to_dict()["layer"][0]
    assert {"field": "description", "type": "nominal"} in points["encoding"]["tooltip"]
    assert list(chart.layer[0].data["description"]) == list(features["description"])
    _, names = click_to_open(chart)
    assert names == ["open_feature_0"]


def test_show_chart_skips_the_schema_check_at_run_time_and_the_tests_make_it(monkeypatch):
    from altair.utils.schemapi import SchemaValidationError

    from explorer.ui import links

    drawn = []
    monkeypatch.setattr(links.st, "altair_chart", lambda chart, **options: drawn.append(chart))
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    invalid = alt.Chart(frame).mark_point().encode(x=alt.X("x:Q", scale=alt.Scale(type=3)))
    monkeypatch.delenv(links.VALIDATE_CHARTS, raising=False)
    links.show_chart(invalid)
    assert drawn[-1].to_dict()["encoding"]["x"]["scale"] == {"type": 3}  # not checked
    with pytest.raises(SchemaValidationError):
        invalid.to_dict()  # the caller's own chart still validates
    monkeypatch.setenv(links.VALIDATE_CHARTS, "1")
    links.show_chart(invalid)
    with pytest.raises(SchemaValidationError):
        drawn[-1].to_dict()
