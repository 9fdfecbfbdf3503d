"""How a person reads a number anywhere in the app: one text per kind of number.

Owns the text of shares and frequencies (fixed-decimal percentages of values in [0, 1]),
of p- and q-values (fixed decimals, scientific notation only below 0.001, and a floor for
those that underflow to 0), and the one marker of a missing value. Tables apply these
through `explorer.ui.tables`; a page's metric or a sentence calls them directly. It owns no
column names and no table layout.
"""

from __future__ import annotations

import math

MISSING = "—"  # a value that is not there: never None, null or NaN
P_FLOOR = 1e-300  # a p-value below this underflowed (it is often exactly 0 in float64)
P_SCIENTIFIC = 1e-3  # below this a p-value is written as 3.1e-05, at or above it as 0.042


def _number(value: object) -> float | None:
    """`value` as a float, or None when it is missing (None, NaN, pandas' NA)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def percent_text(share: object, decimals: int = 1) -> str:
    """`share` (a fraction, 0.1423) as a percentage with `decimals` fixed decimals ("14.2%");
    a positive share too small to show at that precision says so ("< 0.1%"), not "0.0%"."""
    number = _number(share)
    if number is None:
        return MISSING
    percent, unit = 100.0 * number, 10.0**-decimals
    if 0 < percent < unit / 2:
        return f"< {unit:.{decimals}f}%"
    return f"{percent:.{decimals}f}%"


def p_value_text(p_value: object) -> str:
    """A p- or q-value: three decimals from 0.001 up ("0.042"), two significant digits in
    scientific notation below ("3.1e-05"), and "< 1e-300" for one that underflowed to 0."""
    number = _number(p_value)
    if number is None:
        return MISSING
    if number < P_FLOOR:
        return f"< {P_FLOOR:.0e}"
    if number < P_SCIENTIFIC:
        return f"{number:.1e}"
    return f"{number:.3f}"
