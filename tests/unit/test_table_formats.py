"""One number style in every table: frequencies and shares as percentages, fixed decimals per
kind of number, no scientific notation except p- and q-values, no None or null text cell,
no column without a value (`explorer.ui.tables`)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import streamlit as st

from explorer.ui.tables import COLUMN_FORMATS, MISSING, PERCENT, displayed

SHARES = ["share", "max_other_share", "token_freq", "text_freq", "coverage", "active_share",
          "hit_rate", "input_hit_rate", "random_hit_rate", "share_of_max"]  # fmt: skip
SCIENTIFIC = {"p_value", "q_value", "spearman_p"}


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
