"""Finding features for a concept, on a hand-built store with a planted concept feature.

One SAE over 30 texts in three categories (code, prose, maths; 4 to 6 tokens each): feature
0 is the planted code concept (three tokens of every code text at 2, and two prose texts at
0.2), feature 1 fires on every token at 3 (strong but general), feature 2 is a weak code
feature (one token of each code text at 0.3, and of five maths texts at 0.2), feature 3
fires everywhere except on code, feature 4 is dead. The category score and the typed-example
score are checked against the same formulas computed with pandas / scipy from the planted
activations.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from explorer.analysis.concepts import (
    MAX_EXAMPLE_CHARS,
    MAX_EXAMPLES,
    category_concept,
    example_concept,
    parse_examples,
    stack_examples,
)
from explorer.analysis.text_activations import TextActivations, stored_text_activations
from explorer.errors import InputError, StoreError
from explorer.store.queries import relations as relation_queries
from explorer.store.reader import Store
from explorer.store.schema import SaeInfo
from tests.planted import tokens_of
from tests.unit.test_specialists import Planted, text_activations, write_planted

CATEGORIES = ("code", "prose", "maths")
TEXTS_PER_CATEGORY = 10
SAE = "s0"


def make_planted() -> Planted:
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
        acts += [(SAE, 1, text.text_id, p, 3.0) for p in range(1, text.n_tokens + 1)]
        if text.category == "code":
            acts += [(SAE, 0, text.text_id, p, 2.0) for p in (1, 2, 3)]
            acts.append((SAE, 2, text.text_id, 4, 0.3))
        else:
            acts.append((SAE, 3, text.text_id, 1, 1.0 + 0.1 * (text.text_id % 3)))
    acts += [(SAE, 0, text_id, 1, 0.2) for text_id in (10, 11)]
    acts += [(SAE, 2, text_id, 2, 0.2) for text_id in range(20, 25)]
    return Planted(
        saes=[SaeInfo(sae=SAE, hook_name="blocks.0.hook_resid_post", layer=0, d_in=8, d_sae=5)],
        texts=texts,
        tokens=tokens,
        acts=pd.DataFrame(acts, columns=["sae", "feature", "text_id", "pos", "value"]),
    )


@pytest.fixture(scope="module")
def planted() -> Planted:
    return make_planted()


@pytest.fixture(scope="module")
def store(planted: Planted, tmp_path_factory: pytest.TempPathFactory) -> Store:
    path: Path = tmp_path_factory.mktemp("concepts") / "planted.duckdb"
    write_planted(path, planted)
    with Store.open(path) as opened:
        yield opened


def expected_category_scores(planted: Planted, category: str) -> pd.DataFrame:
    """(mean text activation inside - outside) x Mann-Whitney AUROC, per live feature."""
    categories = planted.texts.set_index("text_id")["category"]
    rows = []
    for feature in sorted(planted.acts["feature"].unique()):
        acts = text_activations(planted, SAE, feature).astype(np.float64)
        inside = (categories[acts.index] == category).to_numpy()
        u = stats.mannwhitneyu(acts[inside], acts[~inside]).statistic
        auroc = u / (inside.sum() * (~inside).sum())
        mean_in, mean_out = acts[inside].mean(), acts[~inside].mean()
        rows.append(
            {
                "feature": feature,
                "concept_score": (mean_in - mean_out) * auroc,
                "mean_in": mean_in,
                "mean_out": mean_out,
                "auroc": auroc,
                "coverage": (acts[inside] > 0).mean(),
                "share": (acts[inside] > 0).sum() / (acts > 0).sum(),
            }
        )
    return pd.DataFrame(rows).set_index("feature")


@pytest.mark.parametrize("category", CATEGORIES)
def test_category_concept_equals_the_formula(store: Store, planted: Planted, category) -> None:
    found = category_concept(relation_queries.category_contrast(store, SAE, category), 10)
    expected = expected_category_scores(planted, category)
    positive = expected[expected["concept_score"] > 1e-9].sort_values(
        "concept_score", ascending=False
    )
    assert found["feature"].tolist() == positive.index.tolist()
    for column in ["concept_score", "mean_in", "mean_out", "auroc", "coverage", "share"]:
        np.testing.assert_allclose(
            found[column], positive[column].to_numpy(), rtol=1e-5, err_msg=column
        )


def test_the_planted_concept_feature_leads_its_category(store: Store) -> None:
    found = category_concept(relation_queries.category_contrast(store, SAE, "code"), 10)
    assert found["feature"].tolist() == [0, 2]  # the general and anti-code features drop out
    assert found.loc[0, "auroc"] == 1.0 and found.loc[0, "coverage"] == 1.0
    assert found.loc[0, "in_active"] == found.loc[0, "n_in"] == TEXTS_PER_CATEGORY
    assert category_concept(relation_queries.category_contrast(store, SAE, "code"), 1)[
        "feature"
    ].tolist() == [0]


def test_a_category_with_every_text_has_no_contrast() -> None:
    contrast = pd.DataFrame(
        {
            "feature": [0],
            "n_in": [5],
            "in_active": [5],
            "mean_in": [1.0],
            "n_total": [5],
            "n_active": [5],
            "act_sum": [5.0],
            "active_rank_sum": [15.0],
        }
    )
    assert category_concept(contrast, 10).empty


def test_category_contrast_reads_no_acts_and_checks_its_input(store: Store) -> None:
    sql = relation_queries._CATEGORY_CONTRAST_SQL
    assert not re.search(r"\b(FROM|JOIN)\s+acts\b", sql)
    assert relation_queries.categories(store) == sorted(CATEGORIES)
    with pytest.raises(InputError, match="Unknown category 'poetry'.*'code'"):
        relation_queries.category_contrast(store, SAE, "poetry")
    with pytest.raises(StoreError, match="Unknown SAE 's9'"):
        relation_queries.category_contrast(store, "s9", "code")
    with pytest.raises(InputError, match="1 to 500"):
        category_concept(relation_queries.category_contrast(store, SAE, "code"), 0)


def expected_example_scores(
    texts: list[TextActivations], frequency: pd.DataFrame
) -> dict[int, float]:
    """mean activation per example token x ln(that / corpus mean), by plain loops."""
    n_tokens = sum(len(text.tokens) for text in texts)
    sums: dict[int, float] = {}
    for text in texts:
        for feature, value in zip(text.acts["feature"], text.acts["value"], strict=True):
            sums[int(feature)] = sums.get(int(feature), 0.0) + float(value)
    corpus = {int(row.feature): row.mean_active * row.token_freq for row in frequency.itertuples()}
    floor = min(value for value in corpus.values() if value > 0)
    scores = {}
    for feature, total in sums.items():
        mean = total / n_tokens
        scores[feature] = mean * math.log(mean / max(corpus.get(feature, 0.0), floor))
    return scores


def test_example_concept_finds_the_planted_feature_from_code_texts(store: Store) -> None:
    """The stored activations of three code texts play the typed examples."""
    texts = [stored_text_activations(store, text_id, SAE) for text_id in (0, 1, 2)]
    frequency = store.frequency_table()
    acts, n_tokens = stack_examples(texts)
    assert n_tokens == 4 + 5 + 6
    assert acts["example"].tolist() == sorted(acts["example"].tolist())
    found = example_concept(acts, n_tokens, frequency, 10)
    expected = expected_example_scores(texts, frequency)
    positive = sorted((f for f in expected if expected[f] > 0), key=lambda f: -expected[f])
    assert found["feature"].tolist() == positive
    assert found["feature"].iloc[0] == 0  # the planted code concept
    np.testing.assert_allclose(found["concept_score"], [expected[f] for f in positive], rtol=1e-6)
    assert found.loc[0, "n_examples"] == 3
    assert found.loc[0, "active_share"] == pytest.approx(9 / 15)
    assert 1 not in found["feature"].tolist(), "the general feature is no more active here"


def test_example_concept_floors_features_dead_in_the_corpus() -> None:
    frequency = pd.DataFrame(
        {
            "feature": [0, 1, 2],
            "token_freq": [0.5, 0.01, 0.0],
            "mean_active": [2.0, 1.0, 0.0],
        }
    )
    acts = pd.DataFrame(
        {
            "example": [0, 0, 1, 1],
            "pos": [1, 2, 1, 2],
            "feature": [0, 1, 0, 2],
            "value": [2.0, 1.0, 2.0, 0.5],
        }
    )
    found = example_concept(acts, 4, frequency, 10).set_index("feature")
    # feature 0: mean 1.0 = its corpus mean 1.0 -> lift 1, score 0, left out
    assert found.index.tolist() == [1, 2]
    assert found.loc[1, "concept_score"] == pytest.approx(0.25 * math.log(0.25 / 0.01))
    assert found.loc[2, "lift"] == pytest.approx(0.125 / 0.01)  # floor: the rarest live feature
    assert found.loc[2, "corpus_mean"] == 0.0
    with pytest.raises(InputError, match="no tokens"):
        example_concept(acts, 0, frequency, 10)


def test_parse_examples_keeps_one_example_per_line() -> None:
    assert parse_examples("def f():\n\n   \n    return 1\r\nx = 2") == [
        "def f():",
        "    return 1",
        "x = 2",
    ]
    longest = "\n".join(["a" * MAX_EXAMPLE_CHARS] * MAX_EXAMPLES)
    assert len(parse_examples(longest)) == MAX_EXAMPLES


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "at least one example"),
        (" \n\t\n", "at least one example"),
        ("\n".join(["x"] * (MAX_EXAMPLES + 1)), f"at most {MAX_EXAMPLES} examples"),
        (
            "ok\n" + "a" * (MAX_EXAMPLE_CHARS + 1),
            f"Example 2 has {MAX_EXAMPLE_CHARS + 1} characters",
        ),
    ],
)
def test_parse_examples_bounds_what_is_typed(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_examples(text)
