"""One number style in every table: frequencies and shares as percentages, fixed decimals per
kind of number, no scientific notation except p- and q-values, no None or null text cell,
no column without a value (`explorer.ui.tables`). The texts are read from what Streamlit
sends the browser (its own marshalling of the Styler), and the cells keep their numbers."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from pandas.io.formats.style import Styler
from streamlit import dataframe_util
from streamlit.elements.lib.pandas_styler_utils import marshall_styler
from streamlit.proto.ArrowData_pb2 import ArrowData

from explorer.ui.tables import (
    COLUMN_FORMATS,
    MISSING,
    PERCENT,
    STYLED_CELLS,
    column_formats,
    displayed,
    percent_column,
    styled,
)

SHARES = ["share", "max_other_share", "token_freq", "text_freq", "coverage", "active_share",
          "hit_rate", "input_hit_rate", "random_hit_rate", "share_of_max"]  # fmt: skip
SCIENTIFIC = {"p_value", "q_value", "spearman_p"}
FREQUENCIES = {"token_freq", "text_freq"}  # two decimals; every other share one


def browser_texts(frame: pd.DataFrame, config: dict) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """`styled` of `frame`: the cells' values, the texts Streamlit sends for them, and the
    column config it sends (a text shows only in a number column without a format)."""
    data, formats = styled(frame, config)
    assert isinstance(data, Styler)
    proto = ArrowData()
    marshall_styler(proto, data, "test")
    texts = dataframe_util.convert_arrow_bytes_to_pandas_df(proto.styler.display_values)
    return data.data, texts, formats


def number_format(name: str) -> str | None:
    entry = COLUMN_FORMATS[name]
    return entry["type_config"].get("format") if isinstance(entry, dict) else None


@pytest.mark.parametrize("name", SHARES)
def test_frequencies_and_shares_are_percentages(name):
    assert number_format(name) == PERCENT


def test_no_significant_digit_formats_and_scientific_notation_only_for_p_values():
    for name, entry in COLUMN_FORMATS.items():
        fmt = number_format(name) if isinstance(entry, dict) else None
        if fmt is None or fmt == PERCENT:
            continue
        assert not re.search(r"%[^%]*g", fmt), (name, fmt)  # %g switches to 1e-05
        assert ("e" in fmt) == (name in SCIENTIFIC), (name, fmt)


def test_displayed_drops_empty_columns_and_says_missing_instead_of_none():
    frame = pd.DataFrame(
        {
            "feature": [1, 2, 3],
            "description": ["a", None, "c"],
            "max": [1.5, np.nan, 2.25],
            "token_freq": [0.5, 0.25, 0.125],
            "note": [None, None, None],
            "empty_number": [np.nan, np.nan, np.nan],
        }
    )
    config = {
        "max": COLUMN_FORMATS["max"],
        "token_freq": COLUMN_FORMATS["token_freq"],
        "note": st.column_config.TextColumn("note"),
    }
    shown, formats = displayed(frame, config)
    assert list(shown.columns) == ["feature", "description", "max", "token_freq"]
    assert "note" not in formats
    assert shown["description"].tolist() == ["a", MISSING, "c"]
    assert shown["max"].tolist()[::2] == [1.5, 2.25]  # numbers stay numbers (sortable)
    assert formats["max"] is config["max"]
    assert shown["token_freq"].tolist() == [0.5, 0.25, 0.125]  # complete: stays a number
    assert formats["token_freq"] is config["token_freq"]
    assert not shown.select_dtypes(exclude="number").isna().any().any()
    assert frame["max"].isna().sum() == 1 and math.isnan(frame["max"][1])  # input untouched


def test_an_empty_table_keeps_its_columns():
    frame = pd.DataFrame({"feature": pd.Series([], dtype="int64"), "max": []})
    shown, _ = displayed(frame, {})
    assert list(shown.columns) == ["feature", "max"]


def test_percentages_have_fixed_decimals_per_kind_and_keep_their_numbers():
    values = [0.051, 0.1423, 1.0, 0.0, 0.0099]
    frame = pd.DataFrame({name: values for name in SHARES})
    cells, texts, formats = browser_texts(frame, column_formats(SHARES))
    for name in SHARES:
        decimals = 2 if name in FREQUENCIES else 1
        assert texts[name].tolist() == [f"{100 * v:.{decimals}f}%" for v in values], name
        assert formats[name]["type_config"]["format"] is None  # else Streamlit's format shows
        assert formats[name]["type_config"]["step"] is None  # a step would cut the numbers
        assert cells[name].tolist() == values  # sorted by value, not by text
    assert COLUMN_FORMATS["share"]["type_config"]["format"] == PERCENT  # the config untouched


def test_a_number_sorts_by_value_where_its_text_would_not():
    frame = pd.DataFrame({"share": [0.099, 0.199, 0.0099]})
    cells, texts, _ = browser_texts(frame, column_formats(["share"]))
    assert texts["share"].tolist() == ["9.9%", "19.9%", "1.0%"]
    assert sorted(texts["share"]) == ["1.0%", "19.9%", "9.9%"]  # as text: 19.9 before 9.9
    assert cells.sort_values("share")["share"].tolist() == [0.0099, 0.099, 0.199]
    assert cells["share"].dtype == np.float64


def test_p_values_and_a_missing_number_read_as_the_number_style():
    frame = pd.DataFrame(
        {"p_value": [0.0, 3.9e-86, 0.042, np.nan], "token_freq": [0.5, np.nan, 0.00001, 0.25]}
    )
    cells, texts, _ = browser_texts(frame, column_formats(list(frame.columns)))
    assert texts["p_value"].tolist() == ["< 1e-300", "3.9e-86", "0.042", MISSING]
    assert texts["token_freq"].tolist() == ["50.00%", MISSING, "< 0.01%", "25.00%"]
    assert cells["p_value"].isna().tolist() == [False, False, False, True]  # still a number


def test_numbers_without_a_format_read_as_streamlit_writes_them():
    frame = pd.DataFrame(
        {
            "share": [0.5, 0.25, 0.125, 1.0],
            "n_features": [12.0, 3.0, np.nan, 0.0],  # counts made floats by a missing value
            "mean": [2.123456, 1.5, -0.25, 0.00001234],
            "count": np.array([7, 0, 12, 3], dtype=np.int64),
            "max": [1.0, 2.0, 3.0, 4.0],  # its own printf format: Streamlit applies it
        }
    )
    _, texts, _ = browser_texts(frame, column_formats(["share", "max"]))
    assert texts["n_features"].tolist() == ["12", "3", MISSING, "0"]
    assert texts["mean"].tolist() == ["2.1235", "1.5", "-0.25", "0.00001"]
    assert texts["count"].tolist() == ["7", "0", "12", "3"]


def test_a_table_too_big_to_style_keeps_streamlits_fixed_decimal_percentages():
    rows = STYLED_CELLS // 2 + 1
    frame = pd.DataFrame({"token_freq": np.linspace(0, 1, rows), "share": np.linspace(0, 1, rows)})
    data, formats = styled(frame, column_formats(["token_freq", "share"]))
    assert data is frame
    assert formats["token_freq"]["type_config"] == {**formats["token_freq"]["type_config"],
                                                    "format": PERCENT, "step": 0.0001}  # fmt: skip
    assert formats["share"]["type_config"]["step"] == 0.001  # Streamlit: one fixed decimal


def test_a_percent_column_a_page_adds_reads_like_the_shared_ones():
    frame = pd.DataFrame({"beat": [0.5, 0.123]})
    config = column_formats(["beat"], beat=percent_column("beat random"))
    _, texts, _ = browser_texts(frame, config)
    assert texts["beat"].tolist() == ["50.0%", "12.3%"]
