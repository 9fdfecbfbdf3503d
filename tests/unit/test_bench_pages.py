"""bench.pages' summary: the floor is the minimal app's plain pages only; its page with a
chart and a table is reported beside the floor, never averaged into it."""

from __future__ import annotations

from bench.pages import CHART_TABLE_PAGE, markdown_table, summarise


def timings(shared: float, navigation: float) -> dict:
    return {"shared_link": shared, "navigation": navigation, "errors": []}


def test_the_chart_and_table_page_is_beside_the_floor_not_in_it() -> None:
    repeat = {
        "minimal": {
            "first_visit": {
                "": {"seconds": 1.0},
                "two": {"seconds": 1.2},
                CHART_TABLE_PAGE: {"seconds": 9.0},
            },
            "pages": {
                "": timings(1.0, 0.10),
                "two": timings(1.2, 0.12),
                CHART_TABLE_PAGE: timings(1.8, 0.30),
            },
        },
        "explorer": {
            "first_visit": {"compare": {"seconds": 3.3, "peak_rss_mb": 300}},
            "pages": {"compare": timings(1.65, 0.33)},
            "server_after_all_pages": {"peak_rss_mb": 1, "rss_mb": 1, "torch_loaded": False},
        },
    }
    summary = summarise([repeat])
    assert summary["minimal_app"] == {"first_visit": 1.1, "shared_link": 1.1, "navigation": 0.11}
    assert summary["minimal_chart_and_table"] == {
        "first_visit": 9.0,
        "shared_link": 1.8,
        "navigation": 0.3,
    }
    compare = summary["pages"]["compare"]
    assert compare["shared_link_over_minimal"] == 1.5  # 1.65 / 1.1
    assert compare["navigation_over_minimal"] == 3.0  # 0.33 / 0.11
    result = {
        "label": "t",
        "store": "s.duckdb",
        "store_bytes": 2**20,
        "source": "demo",
        "app_root": ".",
        "measured_at": "now",
        "load_average": [0.0],
        "repeats": [repeat],
        "summary": summary,
    }
    table = markdown_table(result)
    assert "| *minimal app* | 1.10 | 1.10 | 0.11 | - |" in table
    assert (
        "| *minimal page with a chart and a table* | 9.00 (8.2x) | 1.80 (1.6x) | 0.30 (2.7x) |"
        in (table)
    )
