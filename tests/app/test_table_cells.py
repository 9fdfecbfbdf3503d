"""What a shared table sends the browser for a cell, read from the AppTest's element: a
missing number shows the one marker while its column stays numeric (a header click sorts
it by value), and percentages and p-values arrive as their fixed-decimal texts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from streamlit import dataframe_util
from streamlit.testing.v1 import AppTest


def shared_table() -> None:
    import numpy as np
    import pandas as pd

    from explorer.ui.tables import plain_table

    plain_table(
        pd.DataFrame(
            {
                "band": ["1-200", "201-400", "401-512"],
                "token_freq": [0.1423, np.nan, 0.051],
                "p_value": [0.0, np.nan, 0.26],
                "max": [199.1, np.nan, 9.9],
            }
        )
    )


def test_a_missing_number_shows_the_marker_and_its_column_stays_numeric() -> None:
    at = AppTest.from_function(shared_table).run()
    assert not at.exception, at.exception
    table = at.dataframe[0]
    cells = table.value
    assert table.proto.placeholder == "—"  # what the browser draws in a cell with no value
    for column in ["token_freq", "p_value", "max"]:
        assert cells[column].dtype == np.float64, column
        assert cells[column].isna().tolist() == [False, True, False], column
    assert cells.sort_values("max")["max"].tolist()[:2] == [9.9, 199.1]  # by value
    texts = dataframe_util.convert_arrow_bytes_to_pandas_df(
        table.proto.arrow_data.styler.display_values
    )
    assert texts["token_freq"].tolist() == ["14.23%", "—", "5.10%"]
    assert texts["p_value"].tolist() == ["< 1e-300", "—", "0.260"]
    columns = json.loads(table.proto.columns)
    assert "format" not in columns["token_freq"]["type_config"]  # the text shows, not "%"
    assert columns["max"]["type_config"]["format"] == "%.2f"  # Streamlit formats the rest
    assert "None" not in texts.to_numpy().ravel().tolist()
    assert pd.isna(cells.loc[1, "max"])


def test_a_display_text_shows_in_small_and_too_big_tables_alike() -> None:
    """`styled`'s `shown_as` (a link column's "open"): a small table keeps each cell's value
    (the URL a CSV download keeps) and shows the text through its Styler; a table too big to
    style (`STYLED_CELLS`) holds the text itself, so neither shows a bare URL."""
    from explorer.ui.tables import OPEN, STYLED_CELLS, styled

    def table(rows: int) -> pd.DataFrame:
        return pd.DataFrame({"link": [f"feature?sae=a&feature={i}" for i in range(rows)]})

    small, _ = styled(table(3), {}, shown_as={"link": lambda url: OPEN})
    assert small.data["link"].tolist() == [f"feature?sae=a&feature={i}" for i in range(3)]
    assert [row[1]["display_value"] for row in small._translate(False, False)["body"]] == [OPEN] * 3
    big, _ = styled(table(STYLED_CELLS + 1), {}, shown_as={"link": lambda url: OPEN})
    assert set(big["link"]) == {OPEN}


def metric_rows() -> None:
    import numpy as np
    import pandas as pd

    from explorer.ui.tables import NUMBER, metric_rows_table, p_value_column, percent_column

    frame = pd.DataFrame(
        {
            "metric": ["L0", "dead fraction", "never measured", "p", "accuracy"],
            "L0.resid_post": [32.0, 0.0361, np.nan, 4.2e-9, 0.91349],
            "L1.resid_post": [31.25, np.nan, np.nan, 0.0412, 0.9],
        }
    )
    formats = [
        NUMBER("L0", format="%.1f"),
        percent_column("dead"),
        NUMBER("never", format="%d"),
        p_value_column("p"),
        NUMBER("accuracy"),  # no format of its own: three decimals
    ]
    metric_rows_table(frame, formats)


def test_a_metric_per_row_reads_in_its_own_number_style() -> None:
    """A table turned round (one measure a row, an SAE a column): each row's numbers in
    that measure's style, a missing one as the marker, a row with no number left out, the
    cells still numbers."""
    at = AppTest.from_function(metric_rows).run()
    assert not at.exception, at.exception
    table = at.dataframe[0]
    cells = table.value
    assert cells["metric"].tolist() == ["L0", "dead fraction", "p", "accuracy"]
    assert cells["L0.resid_post"].dtype == np.float64
    assert cells["L0.resid_post"].tolist() == [32.0, 0.0361, 4.2e-9, 0.91349]
    texts = dataframe_util.convert_arrow_bytes_to_pandas_df(
        table.proto.arrow_data.styler.display_values
    )
    assert texts["L0.resid_post"].tolist() == ["32.0", "3.6%", "4.2e-09", "0.913"]
    assert texts["L1.resid_post"].tolist() == ["31.2", "—", "0.041", "0.900"]
    assert table.proto.placeholder == "—"
