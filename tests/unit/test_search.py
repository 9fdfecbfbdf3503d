"""Feature search: labels matched literally (wildcards and quotes are plain characters),
promoted tokens found in the planted logit lens, and the features of a text ranked by their
largest or summed activation. Expected rows are recomputed from the planted arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from explorer.analysis.text_activations import (
    TextActivations,
    rank_text_features,
    with_share_of_max,
)
from explorer.errors import InputError, StoreError
from explorer.store.queries.search import escape_like, search_labels, search_tokens
from explorer.store.reader import Store
from tests.unit.test_lens_checks import (
    DECODER,
    LENS_K,
    SAE,
    VOCAB,
    identity_unembed,
    planted_rows,
    write_lens_store,
)

LABELS = {
    0: "100% sure",
    1: "100 percent",
    2: "snake_case",
    3: "snakeXcase",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    path = tmp_path_factory.mktemp("search") / "search.duckdb"
    write_lens_store(path, planted_rows())
    with Store.open(path) as opened:
        opened.save_label(SAE, 1, "it's an O'Brien feature")  # replaced below: not searchable
        for feature, label in LABELS.items():
            opened.save_label(SAE, feature, label, note=f"note {feature}")
        yield opened


def found(frame: pd.DataFrame) -> list[int]:
    return frame["feature"].tolist()


@pytest.mark.parametrize(
    ("query", "features"),
    [
        ("100%", [0]),
        ("%", [0]),
        ("_", [2]),
        ("e_c", [2]),
        ("SNAKE", [2, 3]),
        ("100", [0, 1]),
        ("'", []),
        ("O'Brien", []),
        ("\\", []),
        ("percent", [1]),
        (" sure ", [0]),
    ],
)
def test_label_search_is_literal_and_case_insensitive(store, query, features) -> None:
    expected = [f for f, label in LABELS.items() if query.strip().lower() in label.lower()]
    assert found(search_labels(store, query)) == expected == features


def test_label_search_returns_the_current_label_and_note(store) -> None:
    rows = search_labels(store, "case", sae=SAE)
    assert rows.to_dict("records") == [
        {"sae": SAE, "feature": 2, "label": "snake_case", "note": "note 2"},
        {"sae": SAE, "feature": 3, "label": "snakeXcase", "note": "note 3"},
    ]
    assert found(search_labels(store, "case", limit=1)) == [2]


def test_label_search_refuses_bad_input(store) -> None:
    for empty in ("", "   "):
        with pytest.raises(InputError, match="empty"):
            search_labels(store, empty)
    with pytest.raises(InputError, match="at most 200"):
        search_labels(store, "x" * 201)
    with pytest.raises(StoreError, match="Unknown SAE"):
        search_labels(store, "snake", sae="nope")
    with pytest.raises(InputError, match="1 to 1000"):
        search_labels(store, "snake", limit=0)


def test_escape_like_escapes_wildcards_and_the_escape() -> None:
    assert escape_like("a%b_c\\d'e") == "a\\%b\\_c\\\\d'e"


def expected_token_hits(predicate, max_rank: int) -> list[tuple[int, int]]:
    """(feature, rank) of stored promoted tokens (1..max_rank) that satisfy `predicate`,
    best rank, then largest logit first."""
    logits = identity_unembed(DECODER).numpy()
    hits = []
    for feature, row in enumerate(logits):
        for rank, token_id in enumerate(np.argsort(-row, kind="stable")[:LENS_K], start=1):
            if rank <= max_rank and predicate(VOCAB[token_id]):
                hits.append((rank, -row[token_id], feature))
    return [(feature, rank) for rank, _, feature in sorted(hits)]


def test_token_search_finds_the_planted_features(store) -> None:
    six = search_tokens(store, "six", "exact", max_rank=3)
    assert list(zip(six["feature"], six["rank"], strict=True)) == [(2, 1), (0, 2)]
    assert six["token"].tolist() == [" six", " six"]
    np.testing.assert_allclose(six["logit"], [DECODER[2, 6], DECODER[0, 6]])
    assert six["label"].tolist() == [LABELS[2], LABELS[0]]
    assert found(search_tokens(store, " five ", "exact", max_rank=2)) == [0]
    assert found(search_tokens(store, "five", "exact")) == [0, 2]  # rank 3 of feature 2
    assert found(search_tokens(store, "six", "exact", max_rank=1)) == [2]
    assert search_tokens(store, "si", "exact").empty
    assert search_tokens(store, "nine", "substring").empty


@pytest.mark.parametrize(("query", "max_rank"), [("E", 3), ("e", 1), ("SIX", 2), ("o", 2)])
def test_token_substring_search_equals_a_direct_scan(store, query, max_rank) -> None:
    rows = search_tokens(store, query, "substring", sae=SAE, max_rank=max_rank)
    expected = expected_token_hits(lambda token: query.lower() in token.lower(), max_rank)
    assert list(zip(rows["feature"], rows["rank"], strict=True)) == expected
    assert len(expected) > 0


def test_token_search_refuses_bad_input(store) -> None:
    with pytest.raises(InputError, match="empty"):
        search_tokens(store, " ")
    with pytest.raises(InputError, match="one of"):
        search_tokens(store, "six", "fuzzy")
    with pytest.raises(InputError, match="from 1 to 100"):
        search_tokens(store, "six", max_rank=0)


def test_text_features_ranked_by_max_or_sum() -> None:
    acts = pd.DataFrame(
        {
            "pos": [1, 1, 2, 2, 3, 3, 3],
            "feature": [5, 9, 5, 7, 7, 9, 2],
            "value": [1.0, 3.0, 2.0, 0.5, 0.5, 3.0, 2.5],
        }
    )
    text = TextActivations(sae="s", tokens=["a", " b", "c"], acts=acts)
    by_max = rank_text_features(text, "max", 10)
    grouped = acts.groupby("feature")["value"]
    expected_max = (
        grouped.max().reset_index().sort_values(["value", "feature"], ascending=[False, True])
    )
    assert by_max["feature"].tolist() == expected_max["feature"].tolist() == [9, 2, 5, 7]
    assert by_max.set_index("feature")["sum"].to_dict() == grouped.sum().to_dict()
    assert by_max.set_index("feature")["n_tokens"].to_dict() == grouped.size().to_dict()
    assert by_max.set_index("feature")["peak_token"].to_dict() == {9: "a", 2: "c", 5: " b", 7: " b"}
    assert (by_max["sae"] == "s").all()
    by_sum = rank_text_features(text, "sum", 2)
    assert by_sum["feature"].tolist() == [9, 5]
    shared = with_share_of_max(by_sum, {9: 6.0, 5: 0.0})
    np.testing.assert_allclose(shared["share_of_max"], [0.5, np.nan])
    empty = rank_text_features(TextActivations("s", ["a"], acts.iloc[:0]), "max", 5)
    assert empty.empty
    with pytest.raises(InputError, match="one of"):
        rank_text_features(text, "mean", 5)
