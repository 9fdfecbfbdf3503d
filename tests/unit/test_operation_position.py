"""Operations scored at the `=` position, on a planted store whose answer is known.

The controls' planted corpus (`tests/unit/test_controls.py`: four prose categories and the
operations addition and subtraction, 30 texts each), with arithmetic texts tokenised as
`w + w = w = w`-like sequences: the operator at position 2 (`+` in addition texts, `-` in
subtraction texts) and `=` (as " =" or "=") at positions 3 and 5. One SAE plants:

- 0, an operator detector: fires on `+` (position 2) of every addition text;
- 1, an operation feature at `=`: fires at the first `=` (position 3) of every addition text;
- 2, a general `=` feature: fires at both `=` of every arithmetic text;
- 3, a code specialist (prose, unaffected by the option).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from explorer.analysis.controls import load_chance_baseline
from explorer.analysis.families import category_families
from explorer.analysis.specialists import (
    SpecialistSettings,
    load_specialists,
    read_activations,
    scored_activations,
)
from explorer.store.reader import Store
from tests.planted import write_one_sae_store
from tests.unit.test_controls import planted_texts

N_TOKENS = 6
OPERATORS = {"addition": (601, "+"), "subtraction": (602, "-")}
EQUALS = {3: (600, "="), 5: (603, " =")}


def tokens(texts: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for text_id, category in zip(texts["text_id"], texts["category"], strict=True):
        for pos in range(1, N_TOKENS + 1):
            token_id, token = 100 + (7 * text_id + pos) % 50, f"w{pos}"
            if category in OPERATORS and pos == 2:
                token_id, token = OPERATORS[category]
            elif category in OPERATORS and pos in EQUALS:
                token_id, token = EQUALS[pos]
            rows.append({"text_id": text_id, "pos": pos, "token_id": token_id, "token": token})
    return pd.DataFrame(rows)


def acts(texts: pd.DataFrame) -> pd.DataFrame:
    rows = []
    addition = texts.loc[texts["category"] == "addition", "text_id"]
    arithmetic = texts.loc[texts["source"] == "arithmetic", "text_id"]
    code = texts.loc[texts["category"] == "code", "text_id"]
    rows += [(0, int(t), 2, 2.0) for t in addition]
    rows += [(1, int(t), 3, 1.0 + 0.1 * (t % 3)) for t in addition]
    rows += [(2, int(t), pos, 0.5) for t in arithmetic for pos in EQUALS]
    rows += [(3, int(t), 4, 1.0) for t in code]
    return pd.DataFrame(rows, columns=["feature", "text_id", "pos", "value"])


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = planted_texts()
    path = tmp_path_factory.mktemp("equals") / "planted.duckdb"
    return write_one_sae_store(path, texts, tokens(texts), acts(texts))


def specialists(path: Path, position: str) -> pd.DataFrame:
    with Store.open(path) as store:
        table = load_specialists(store, SpecialistSettings(operation_position=position)).table
    chosen = table[table["is_specialist"]]
    return chosen.set_index(["feature", "category"])


def test_over_the_text_the_operator_detector_passes_as_a_specialist(store_path: Path) -> None:
    chosen = specialists(store_path, "text")
    assert {(0, "addition"), (1, "addition"), (3, "code")} <= set(chosen.index)
    assert chosen.loc[(0, "addition"), "token"] == "+"


def test_at_the_equals_only_the_feature_at_equals_is_a_specialist(store_path: Path) -> None:
    chosen = specialists(store_path, "equals")
    operations = chosen[chosen["family"] == "operation"]
    assert set(operations.index) == {(1, "addition")}
    # it fires at one of the text's two `=`, so its activation there is its value / 2
    row = operations.loc[(1, "addition")]
    assert row["selectivity"] == 1.0 and row["n_texts_active"] == 30
    assert (3, "code") in chosen.index  # prose families are scored as before


def test_the_activation_at_equals_is_the_mean_over_the_texts_equals(store_path: Path) -> None:
    texts = planted_texts()
    planted = acts(texts)
    marks = tokens(texts)
    marks = marks[marks["token"].str.strip() == "="]
    at = planted.merge(marks[["text_id", "pos"]], on=["text_id", "pos"])
    n_marks = marks.groupby("text_id").size()
    expected = (
        at.groupby(["feature", "text_id"])["value"].sum()
        / n_marks.reindex(
            at.groupby(["feature", "text_id"]).size().index.get_level_values("text_id")
        ).to_numpy()
    )
    with Store.open(store_path) as store:
        read = read_activations(store)
        families = category_families(read.texts)
        scored = scored_activations(
            store, read, families, SpecialistSettings(operation_position="equals")
        )
        assert scored_activations(store, read, families, SpecialistSettings()) == {}
    assert set(scored) == {"operation"}
    matrix = scored["operation"].matrix.tocoo()
    got = pd.Series(
        matrix.data,
        index=pd.MultiIndex.from_arrays(
            [
                read.features["feature"].to_numpy()[matrix.row],
                read.texts["text_id"].to_numpy()[matrix.col],
            ]
        ),
    ).sort_index()
    np.testing.assert_allclose(got.to_numpy(), expected.sort_index().to_numpy(), rtol=1e-6)
    assert got.index.equals(expected.sort_index().index)


def test_the_null_scores_operations_where_the_table_does(store_path: Path) -> None:
    lenient = {"min_support": 1, "min_selectivity": 0.0, "fdr": 0.5, "permutations": 20}
    operator_hits = {}
    for position in ("text", "equals"):
        settings = SpecialistSettings(operation_position=position, **lenient)
        with Store.open(store_path) as store:
            hits = load_chance_baseline(store, settings).hits
        operator_hits[position] = int(
            ((hits["family"] == "operation") & (hits["feature"] == 0)).sum()
        )
    # over the text, shuffled labels make the operator detector a chance specialist at times;
    # at `=` it is silent, so no shuffle can call it
    assert operator_hits["text"] > 0 and operator_hits["equals"] == 0
