"""Rankings of one SAE's features on a hand-built store whose answers are planted.

Two SAEs over 30 texts in three categories (code, prose, maths; 4 to 6 tokens each). SAE
`s0` plants the strongest feature (0: one activation of 9 on one prose token), the most
frequent (1: every token at 0.5), a code specialist (2: two tokens of every code text at 2),
the composite winner (3: every odd position of every text at 3, so frequency x mean beats
feature 1), a dead feature (4) and a thin maths feature (5: two maths texts at 0.1). SAE `s1`
plants a prose specialist (0) and a general feature (1). Every ranking is checked against
the same question answered with pandas / scipy over the planted activations.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from explorer.analysis.rankings import (
    MAX_RANKED,
    RANKING_COLUMNS,
    RANKINGS,
    rank_features,
)
from explorer.analysis.specialists import SpecialistSettings, load_specialists
from explorer.charts import feature_href
from explorer.charts.rankings import feature_bar_chart
from explorer.errors import InputError
from explorer.store.reader import Store
from explorer.store.schema import SaeInfo
from tests.planted import tokens_of
from tests.unit.test_specialists import Planted, text_activations, write_planted

CATEGORIES = ("code", "prose", "maths")
TEXTS_PER_CATEGORY = 10


def make_planted(**overrides) -> Planted:
    texts = pd.DataFrame(
        [
            {
                "text_id": c * TEXTS_PER_CATEGORY + index,
                "category": category,
                "source": "planted",
                "text": f"{category} text {index}",
                "labels": [],
                "n_tokens": 4 + (c * TEXTS_PER_CATEGORY + index) % 3,
            }
            for c, category in enumerate(CATEGORIES)
            for index in range(TEXTS_PER_CATEGORY)
        ]
    )
    tokens = tokens_of(texts)
    acts = []
    for text in texts.itertuples():
        positions = range(1, text.n_tokens + 1)
        acts += [("s0", 1, text.text_id, p, 0.5) for p in positions]
        acts += [("s0", 3, text.text_id, p, 3.0) for p in positions if p % 2]
        acts += [("s1", 1, text.text_id, 1, 0.2 + 0.1 * (text.text_id % 4))]
        if text.category == "code":
            acts += [("s0", 2, text.text_id, p, 2.0) for p in (1, 2)]
        if text.category == "prose":
            acts += [("s1", 0, text.text_id, p, 1.0) for p in (1, 2, 3)]
    acts.append(("s0", 0, 10, 2, 9.0))
    acts += [("s0", 5, text_id, 1, 0.1) for text_id in (20, 21)]
    planted = Planted(
        saes=[
            SaeInfo(sae="s0", hook_name="blocks.0.hook_resid_post", layer=0, d_in=8, d_sae=6),
            SaeInfo(sae="s1", hook_name="blocks.1.hook_resid_post", layer=1, d_in=8, d_sae=4),
        ],
        texts=texts,
        tokens=tokens,
        acts=pd.DataFrame(acts, columns=["sae", "feature", "text_id", "pos", "value"]),
    )
    return replace(planted, **overrides)


@pytest.fixture(scope="module")
def planted() -> Planted:
    return make_planted()


@pytest.fixture(scope="module")
def store(planted: Planted, tmp_path_factory: pytest.TempPathFactory) -> Store:
    path: Path = tmp_path_factory.mktemp("rankings") / "planted.duckdb"
    write_planted(path, planted)
    with Store.open(path) as opened:
        yield opened


def frequency_of(store: Store, sae: str) -> pd.DataFrame:
    table = store.frequency_table()
    return table[table["sae"] == sae]


def expected_stats(planted: Planted, sae: str) -> pd.DataFrame:
    """max, token_freq, mean_active, composite of each live feature, from the raw rows."""
    rows = planted.acts[planted.acts["sae"] == sae]
    values = rows["value"].astype(np.float32).astype(np.float64)
    grouped = values.groupby(rows["feature"])
    stats_ = pd.DataFrame(
        {"max": grouped.max(), "n_active": grouped.size(), "mean_active": grouped.mean()}
    )
    stats_["token_freq"] = stats_["n_active"] / len(planted.tokens)
    stats_["composite"] = stats_["token_freq"] * stats_["mean_active"]
    return stats_


@pytest.mark.parametrize(
    ("ranking", "column", "expected_order"),
    [
        ("strongest", "max", [0, 3, 2, 1, 5]),
        ("most frequent", "token_freq", [1, 3, 2, 5, 0]),
        ("composite", "composite", [3, 1, 2, 0, 5]),
    ],
)
def test_planted_features_lead_their_rankings(
    store: Store, planted: Planted, ranking, column, expected_order
) -> None:
    expected = expected_stats(planted, "s0")
    by_value = expected.sort_values(column, ascending=False, kind="stable").index.tolist()
    assert by_value == expected_order  # the planted order, recomputed with pandas
    ranked = rank_features(frequency_of(store, "s0"), ranking, 10)
    assert ranked["feature"].tolist() == expected_order
    assert ranked["rank"].tolist() == [1, 2, 3, 4, 5]
    assert ranked.columns.tolist() == ["rank", "sae", "feature", *RANKING_COLUMNS[ranking]]
    np.testing.assert_allclose(
        ranked[column], expected.loc[expected_order, column].to_numpy(), rtol=1e-6
    )
    assert 4 not in ranked["feature"].tolist(), "the dead feature is never ranked"


def test_the_count_cuts_the_ranking(store: Store) -> None:
    ranked = rank_features(frequency_of(store, "s0"), "strongest", 2)
    assert ranked["feature"].tolist() == [0, 3]
    # s1: both features fire on 30 of the 150 tokens; the tie goes to the lower id
    s1 = rank_features(frequency_of(store, "s1"), "most frequent", 10)
    assert s1["feature"].tolist() == [0, 1] and set(s1["sae"]) == {"s1"}
    assert s1["token_freq"].tolist() == pytest.approx([30 / 150, 30 / 150])


def test_most_selective_puts_the_planted_specialist_first(store: Store, planted: Planted) -> None:
    settings = SpecialistSettings(measure="score", min_support=1)  # notebook score, every cell
    table = load_specialists(store, settings).table
    ranked = rank_features(
        frequency_of(store, "s0"), "most selective", 10, table[table.sae == "s0"]
    )
    categories = planted.texts.set_index("text_id")["category"]
    best = {}
    for feature in (0, 1, 2, 3, 5):
        acts = text_activations(planted, "s0", feature)
        strong = categories[acts.index[acts >= np.float32(0.5) * acts.max()]]
        scores = {c: int((strong == c).sum()) - int((strong != c).sum()) for c in CATEGORIES}
        category = min(sorted(CATEGORIES), key=lambda c: (-scores[c], -(strong == c).sum()))
        best[feature] = (category, scores[category], int((strong == category).sum()))
    first = ranked.iloc[0]
    assert (first["feature"], first["category"], first["is_specialist"]) == (2, "code", True)
    assert first["score"] == best[2][1] == TEXTS_PER_CATEGORY
    assert first["auroc"] == 1.0 and first["share"] == 1.0
    assert not ranked["is_specialist"].iloc[1:].any()
    # the rest: by score, then support (strong texts of the category), then feature id
    rest = sorted((f for f in best if f != 2), key=lambda f: (-best[f][1], -best[f][2], f))
    assert ranked["feature"].tolist()[1:] == rest
    for row in ranked.itertuples():
        assert (row.category, row.score, row.support) == best[row.feature]


def test_most_selective_by_auroc_equals_mann_whitney(store: Store, planted: Planted) -> None:
    table = load_specialists(store, SpecialistSettings(measure="auroc")).table
    ranked = rank_features(
        frequency_of(store, "s1"), "most selective", 10, table[table.sae == "s1"]
    )
    categories = planted.texts.set_index("text_id")["category"]
    best = {}
    for feature in (0, 1):
        acts = text_activations(planted, "s1", feature)
        aurocs = {}
        for category in sorted(CATEGORIES):
            inside = (categories[acts.index] == category).to_numpy()
            u = stats.mannwhitneyu(acts[inside], acts[~inside]).statistic
            aurocs[category] = u / (inside.sum() * (~inside).sum())
        best[feature] = max(aurocs.items(), key=lambda item: item[1])
    assert best[0] == ("prose", 1.0)
    assert ranked[["feature", "category", "is_specialist"]].values.tolist() == [
        [0, "prose", True],
        [1, best[1][0], False],  # fires on every text: never significant
    ]
    for row in ranked.itertuples():
        assert row.auroc == pytest.approx(best[row.feature][1], abs=1e-12)
        assert row.score == row.auroc


@pytest.mark.parametrize(
    ("ranking", "k", "message"),
    [
        ("loudest", 10, "ranking must be one of strongest"),
        ("strongest", 0, f"1 to {MAX_RANKED}"),
        ("strongest", MAX_RANKED + 1, f"1 to {MAX_RANKED}"),
        ("strongest", 2.5, f"1 to {MAX_RANKED}"),
        ("most selective", 10, "needs the specialist table"),
    ],
)
def test_bad_requests_say_what_to_choose(store: Store, ranking, k, message) -> None:
    with pytest.raises(InputError, match=message):
        rank_features(frequency_of(store, "s0"), ranking, k)


def test_one_sae_at_a_time(store: Store) -> None:
    with pytest.raises(InputError, match="one SAE at a time"):
        rank_features(store.frequency_table(), "strongest", 10)
    assert set(RANKINGS) == set(RANKING_COLUMNS)


def test_feature_bar_chart_links_every_bar_to_its_feature() -> None:
    frame = pd.DataFrame(
        {
            "sae": ["s0", "s0", "s1"],
            "feature": [3, 1, 0],
            "jaccard": [0.9, 0.5, 0.2],
            "n_both": [9, 5, 2],
        }
    )
    spec = feature_bar_chart(frame, "jaccard", "Jaccard similarity", {"n_both": "both"}).to_dict()
    data = pd.DataFrame(next(iter(spec["datasets"].values())))
    assert data["href"].tolist() == [
        feature_href(s, f) for s, f in [("s0", 3), ("s0", 1), ("s1", 0)]
    ]
    assert data["label"].tolist() == ["s0 #3", "s0 #1", "s1 #0"]
    assert spec["encoding"]["href"]["field"] == "href"
    assert spec["encoding"]["x"]["title"] == "Jaccard similarity"
    assert spec["encoding"]["y"]["sort"] == {"field": "jaccard", "order": "descending"}
    assert [t["title"] for t in spec["encoding"]["tooltip"]][-1] == "both"
