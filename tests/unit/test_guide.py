"""The first visit's guide: which features Home suggests, which one the feature page opens on,
and that every page of the navigation says what it answers."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

from explorer.analysis.guide import PAGE_QUESTIONS, features_worth_opening, first_pick

ROOT = Path(__file__).resolve().parents[2]


def described(**overrides) -> pd.DataFrame:
    """Two SAEs' scored descriptions: a's best is #2 (F1 0.9), b's best is #7 (F1 0.95, tied
    on F1 with #5 and ahead on balanced accuracy); #9 of b is unscored."""
    table = pd.DataFrame(
        {
            "sae": ["a", "a", "a", "b", "b", "b"],
            "feature": [1, 2, 3, 5, 7, 9],
            "scored": [True, True, True, True, True, False],
            "f1": [0.4, 0.9, 0.1, 0.95, 0.95, float("nan")],
            "balanced_accuracy": [0.6, 0.9, 0.5, 0.8, 0.9, float("nan")],
            "held_active": [10, 10, 10, 10, 10, 0],
        }
    )
    return table.assign(**overrides)


def specialists(**overrides) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "sae": ["a", "b", "b", "a", "b"],
            "layer": [0, 1, 1, 0, 1],
            "feature": [4, 8, 6, 3, 2],
            "family": ["prose"] * 5,
            "category": ["code", "code", "math", "math", "math"],
            "score": [0.7, 0.9, 0.6, 0.6, 0.99],
            "support": [5, 5, 9, 5, 5],
            "is_specialist": [True, True, True, True, False],
        }
    )
    return table.assign(**overrides)


def test_each_sae_best_explained_then_each_category_strongest_specialist():
    picks = features_worth_opening(described(), specialists())
    assert list(zip(picks["sae"], picks["feature"], strict=True)) == [
        ("a", 2),  # the highest F1 of a
        ("b", 7),  # F1 tie with #5, higher balanced accuracy
        ("b", 8),  # code: 0.9 beats 0.7
        ("b", 6),  # math: #2 scores 0.99 but is no specialist; 0.6 tie, more support
    ]
    assert picks["why"].tolist() == [
        "best explained of a (description F1 0.90)",
        "best explained of b (description F1 0.95)",
        "strongest code specialist (score 0.90)",
        "strongest math specialist (score 0.60)",
    ]


def test_without_scores_only_specialists_are_suggested_and_the_page_has_no_pick():
    unscored = described().drop(columns=["f1", "balanced_accuracy", "held_active", "scored"])
    picks = features_worth_opening(unscored, specialists())
    assert picks["why"].str.startswith("strongest").all() and len(picks) == 2
    assert first_pick(unscored) is None
    assert first_pick(described(scored=False)) is None


def test_no_specialist_and_no_score_suggests_nothing():
    picks = features_worth_opening(described(scored=False), specialists(is_specialist=False))
    assert picks.empty and list(picks.columns) == ["why", "sae", "feature"]


def test_the_feature_page_opens_on_the_best_explained_feature_of_all_saes():
    assert first_pick(described()) == ("b", 7)


def test_every_page_of_the_navigation_says_what_it_answers():
    tree = ast.parse((ROOT / "streamlit_app.py").read_text())
    pages = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", "") == "Page"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }
    assert pages - {"app_pages/home.py"} == set(PAGE_QUESTIONS)
    assert all(question.endswith("?") for question in PAGE_QUESTIONS.values())
