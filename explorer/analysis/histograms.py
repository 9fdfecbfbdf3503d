"""Binned distributions for the feature page: stored activation histograms and value histograms.

Owns turning the store's per-feature histogram (`feature_stats.hist`: counts of nonzero
activations in equal bins over [0, max]) into a table of bin edges, counts, fractions and
densities, and binning any vector of values (e.g. a feature's logits over the vocabulary).
Density is per unit of the binned quantity: fraction / bin width, so it integrates to 1.
No streamlit, no SQL, no charts (see `explorer.charts.feature`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from explorer.errors import InputError

HISTOGRAM_COLUMNS = ["bin", "low", "high", "count", "fraction", "density"]


def _frame(edges: np.ndarray, counts: np.ndarray) -> pd.DataFrame:
    total = counts.sum()
    widths = np.diff(edges)
    fraction = counts / total if total else np.zeros(len(counts))
    with np.errstate(divide="ignore", invalid="ignore"):
        density = np.where(widths > 0, fraction / widths, 0.0)
    return pd.DataFrame(
        {
            "bin": np.arange(len(counts)),
            "low": edges[:-1],
            "high": edges[1:],
            "count": counts.astype(np.int64),
            "fraction": fraction,
            "density": density,
        },
        columns=HISTOGRAM_COLUMNS,
    )


def activation_histogram(hist: Sequence[int] | np.ndarray, max_value: float) -> pd.DataFrame:
    """The stored histogram of one feature's nonzero activations, with its bin edges.

    `hist` has one count per equal-width bin over [0, max_value] (the last bin includes
    max_value); a dead feature (max 0) gives zero-width bins and zero counts.
    """
    counts = np.asarray(hist, dtype=np.int64)
    if counts.ndim != 1 or len(counts) == 0:
        raise InputError("A histogram needs at least one bin.")
    if max_value < 0:
        raise InputError(f"A histogram's max must be >= 0, got {max_value}.")
    return _frame(np.linspace(0.0, float(max_value), len(counts) + 1), counts)


def value_histogram(values: np.ndarray, bins: int = 60) -> pd.DataFrame:
    """Counts of `values` in `bins` equal bins over [min, max] (as `numpy.histogram`)."""
    if not 1 <= bins <= 1000:
        raise InputError(f"bins must be from 1 to 1000, got {bins}.")
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise InputError("No values to bin.")
    counts, edges = np.histogram(values, bins=bins)
    return _frame(edges, counts)
