"""Category families: which texts a category is contrasted with.

Owns how the store's texts fall into families of categories and the one-hot membership
matrices the specialist measures multiply with. A family is a set of categories that share
a universe of texts; a category is contrasted one-vs-rest *within its family* by default,
so a prose category is compared with the other prose texts and not with hundreds of
arithmetic texts (docs/methods.md#families):

- one family per text `source` over `texts.category` (the bundled prose categories, a user
  corpus's own categories); a source whose categories are arithmetic operations (its texts
  carry the label `op:<category>`) is the family "operation";
- the family "number" over the `num:` labels of `texts.labels` (a text may carry several),
  within the texts that carry any.

`contrast="corpus"` makes every family's universe the whole corpus. A family with a single
category has no rest to compare with and is contrasted with the whole corpus. It reads no
store and draws nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from scipy import sparse

Contrast = Literal["family", "corpus"]
OPERATION_FAMILY = "operation"
NUMBER_FAMILY = "number"
VALUE_PREFIX = "num:"
OPERATION_PREFIX = "op:"


@dataclass(frozen=True)
class Family:
    """One family: `universe` holds the positions (rows of the texts frame) of the texts its
    categories are contrasted within, `membership` is |universe| x categories, 1 where the
    text belongs to the category; `kind` says where the categories come from."""

    name: str
    kind: Literal["category", "operation", "value"]
    categories: list[str]
    universe: np.ndarray  # [texts in the universe] int64 positions
    membership: sparse.csr_matrix  # [texts in the universe, categories] 0/1


def _membership(rows: np.ndarray, columns: np.ndarray, shape: tuple[int, int]) -> sparse.csr_matrix:
    from scipy import sparse

    data = np.ones(len(rows), dtype=np.float64)
    matrix = sparse.csr_matrix((data, (rows, columns)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0  # a label listed twice on one text is still one membership
    return matrix


def _operation_sources(texts: pd.DataFrame) -> set[str]:
    """Sources whose every category is an operation (its texts carry `op:<category>`)."""
    own = texts.explode("labels")
    is_own = own["labels"].astype(str) == OPERATION_PREFIX + own["category"].astype(str)
    operations = set(own.loc[is_own, "category"])
    by_source = texts.groupby("source")["category"].agg(lambda c: set(c) <= operations)
    return set(by_source[by_source].index)


def category_families(texts: pd.DataFrame, contrast: Contrast = "family") -> list[Family]:
    """The families of `texts` (text_id, category, source, labels; one row per text with
    tokens, in the order of the activation matrix's columns), sorted by name."""
    n_texts = len(texts)
    everything = np.arange(n_texts, dtype=np.int64)
    operations = _operation_sources(texts)
    families: list[Family] = []
    for source, group in texts.groupby("source", sort=True):
        categories = sorted(group["category"].astype(str).unique())
        whole = contrast == "corpus" or len(categories) < 2
        universe = everything if whole else group.index.to_numpy(np.int64)
        code = pd.Categorical(texts["category"].astype(str), categories=categories).codes
        members = np.flatnonzero((texts["source"] == source).to_numpy() & (code >= 0))
        position = np.searchsorted(universe, members)
        name = OPERATION_FAMILY if source in operations else str(source)
        kind = "operation" if source in operations else "category"
        families.append(
            Family(
                name,
                kind,
                categories,
                universe,
                _membership(position, code[members], (len(universe), len(categories))),
            )
        )
    values = texts["labels"].explode()
    values = values[values.astype(str).str.startswith(VALUE_PREFIX)]
    if len(values):
        labels = sorted(values.unique(), key=_value_order)
        carriers = np.unique(values.index.to_numpy(np.int64))
        universe = everything if contrast == "corpus" else carriers
        position = np.searchsorted(universe, values.index.to_numpy(np.int64))
        code = pd.Categorical(values, categories=labels).codes
        families.append(
            Family(
                NUMBER_FAMILY,
                "value",
                labels,
                universe,
                _membership(position, code, (len(universe), len(labels))),
            )
        )
    return sorted(families, key=lambda family: family.name)


def _value_order(label: str) -> tuple[float, str]:
    """`num:` labels by their number (then as text)."""
    try:
        return (float(label[len(VALUE_PREFIX) :]), label)
    except ValueError:
        return (float("inf"), label)
