"""The text of each kind of number a person reads (`explorer.number_style`): fixed-decimal
percentages that say "< 0.1%" rather than "0.0%" for a small positive share, p-values with
fixed decimals, scientific notation below 0.001 and a floor for one that underflowed, and
one marker for a missing value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from explorer.number_style import MISSING, p_value_text, percent_text


@pytest.mark.parametrize(
    ("share", "decimals", "text"),
    [
        (0.1423, 1, "14.2%"),
        (0.14299, 1, "14.3%"),  # rounded, not cut
        (0.051, 1, "5.1%"),
        (0.01, 2, "1.00%"),  # trailing zeros kept: every cell of a column has two decimals
        (0.3944, 2, "39.44%"),
        (1.0, 1, "100.0%"),
        (0.0, 1, "0.0%"),
        (0.0004, 1, "< 0.1%"),  # fires, but on fewer than 0.05% of tokens
        (0.00004, 2, "< 0.01%"),
        (0.0004, 2, "0.04%"),
        (np.float32(0.25), 1, "25.0%"),
    ],
)
def test_percent_text_has_fixed_decimals(share, decimals, text) -> None:
    assert percent_text(share, decimals) == text


@pytest.mark.parametrize(
    ("p_value", "text"),
    [
        (0.0, "< 1e-300"),  # scipy's p-value underflows to 0 on a 50M-row store
        (5e-324, "< 1e-300"),
        (3.9e-86, "3.9e-86"),
        (0.00099, "9.9e-04"),
        (0.001, "0.001"),
        (0.042, "0.042"),
        (0.26, "0.260"),
        (1.0, "1.000"),
    ],
)
def test_p_value_text(p_value, text) -> None:
    assert p_value_text(p_value) == text


@pytest.mark.parametrize("missing", [None, float("nan"), np.nan, pd.NA])
def test_a_missing_number_is_the_one_marker(missing) -> None:
    assert percent_text(missing) == MISSING == p_value_text(missing) == "—"
