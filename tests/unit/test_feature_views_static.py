"""Every table and chart of the pages that names a feature goes through the helpers that show
its description and open its page in one click, so a new page cannot forget them.

Charts: a chart function of `explorer/charts/` names features when it encodes an `href`
(the charts' convention, `explorer.charts.feature_href`); the pages and `explorer/ui` must
show it with `explorer.ui.links.feature_chart`, never `show_chart` (which draws a chart
without links); and no view calls `st.altair_chart` itself: every chart goes through
`show_chart`, which the tests run with each spec validated. Tables: a frame is
shown with `explorer.ui.tables.feature_table` (description and link), `plain_table` (which
hands a frame naming features to `feature_table`) or `top_features_table`; a direct
`st.dataframe` is allowed only where listed below, each a table that names no feature (none
now: every table goes through the helpers, so its numbers read in the one number style).
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
VIEWS = [*sorted((ROOT / "app_pages").glob("*.py")), *sorted((ROOT / "explorer/ui").glob("*.py"))]
HELPERS = {"explorer/ui/tables.py", "explorer/ui/links.py"}
# Direct st.dataframe calls per file, each naming no feature (what it shows).
DIRECT_TABLES: dict[str, int] = {}
# Charts naming features shown with their own selection (a box on the atlas map), not a click.
OWN_SELECTION = {"explorer/ui/atlas_views.py"}


def feature_chart_functions() -> set[str]:
    """Chart functions of explorer/charts/ whose body encodes an href."""
    names = set()
    for path in (ROOT / "explorer/charts").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and "href" in ast.unparse(node):
                names.add(node.name)
    return names


def calls(path: Path, method: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == method
    ]


def calls_by_name(path: Path, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and called_name(node) == name
    ]


def called_name(node: ast.AST) -> str | None:
    return node.func.id if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) else None


def test_the_feature_charts_are_found():
    assert {"feature_bar_chart", "enrichment_scatter", "category_heatmap"} <= (
        feature_chart_functions()
    )


def test_no_chart_naming_features_is_shown_without_feature_chart():
    named = feature_chart_functions()
    found = []
    for path in VIEWS:
        name = str(path.relative_to(ROOT))
        if name in HELPERS | OWN_SELECTION:
            continue
        for call in calls_by_name(path, "show_chart") + calls(path, "altair_chart"):
            chart = call.args[0] if call.args else None
            if called_name(chart) in named or (chart is not None and "href" in ast.unparse(chart)):
                found.append(f"{name}:{call.lineno}: {ast.unparse(chart)[:60]}")
    assert found == []


def test_every_chart_is_drawn_by_show_chart():
    direct = [
        f"{path.relative_to(ROOT)}:{call.lineno}"
        for path in VIEWS
        if str(path.relative_to(ROOT)) != "explorer/ui/links.py"
        for call in calls(path, "altair_chart") + calls(path, "vega_lite_chart")
    ]
    assert direct == []
    drawn = sum(len(calls_by_name(path, "show_chart")) for path in VIEWS)
    assert drawn >= 20  # the pages' charts without links: the check above sees them


def test_direct_tables_are_only_the_listed_ones_naming_no_feature():
    counts = Counter()
    for path in VIEWS:
        name = str(path.relative_to(ROOT))
        if name not in HELPERS:
            counts[name] += len(calls(path, "dataframe")) + len(calls(path, "data_editor"))
    assert {name: n for name, n in counts.items() if n} == DIRECT_TABLES


def test_plain_table_hands_a_frame_naming_features_to_feature_table(monkeypatch):
    from explorer.ui import tables

    shown = {}
    monkeypatch.setattr(
        tables, "feature_table", lambda frame, columns, **c: shown.update(c=columns)
    )
    frame = pd.DataFrame({"sae": ["a"], "feature": [3], "jaccard": [0.5]})
    tables.plain_table(frame, ["feature", "jaccard"])
    assert shown == {"c": ["feature", "jaccard"]}
