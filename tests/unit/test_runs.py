"""Intervention runs as the ablation lab reports them: the verdict sentence for a planted
corpus result (checked against scipy's Welch test), the default category to test, and the
ledger's CSV and JSON exports (columns and values read back with pandas and json)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_ind

from explorer.live.interventions import Intervention, category_summary, specialization_test
from explorer.live.runs import (
    SIGNIFICANCE,
    CorpusRun,
    default_target,
    ledger_csv,
    ledger_json,
    ledger_table,
)
from explorer.store.reader import Store
from tests.planted import write_small_store

PAYLOAD = "![x](http://host/t.png) $x$ `code`"


def planted_run(inside: list[float], outside: list[float], target: str = "code") -> CorpusRun:
    effects = pd.DataFrame(
        {
            "setting": 0,
            "text_id": range(len(inside) + len(outside)),
            "category": [target] * len(inside) + ["prose"] * len(outside),
            "delta_loss": inside + outside,
        }
    )
    return CorpusRun(
        Intervention("s0", (3,), "zero"),
        None,
        target,
        (),
        effects,
        category_summary(effects),
        specialization_test(effects, target),
    )


def test_the_verdict_sentence_of_a_planted_result_quotes_welchs_test() -> None:
    inside, outside = [0.5, 0.62, 0.7, 0.55], [0.0, 0.01, -0.01, 0.0, 0.02]
    run = planted_run(inside, outside)
    expected = ttest_ind(inside, outside, equal_var=False, alternative="greater")
    assert expected.pvalue < SIGNIFICANCE
    assert run.hurts_target() and run.n_texts == 9
    assert run.verdict() == (
        f"The intervention **hurts** code texts more than the others: mean change in loss "
        f"{np.mean(inside):+.5f} on 4 texts vs {np.mean(outside):+.5f} on 5 "
        f"(t = {expected.statistic:.2f}, one-sided p = {expected.pvalue:.2g}, "
        f"significant below {SIGNIFICANCE})."
    )


@pytest.mark.parametrize(
    ("inside", "outside"),
    [
        ([0.1, -0.1, 0.05, -0.05], [0.0, 0.01, -0.01, 0.02]),  # no difference: p near 0.5
        ([-0.5, -0.6, -0.55], [0.0, 0.01, -0.01]),  # the category gains: the wrong side
    ],
)
def test_no_significant_harm_reads_does_not_hurt(inside, outside) -> None:
    run = planted_run(inside, outside)
    assert ttest_ind(inside, outside, equal_var=False, alternative="greater").pvalue >= 0.05
    assert not run.hurts_target()
    assert run.verdict().startswith("The intervention **does not hurt** code texts")


def test_the_verdict_escapes_a_category_named_as_markup() -> None:
    sentence = planted_run([0.5, 0.6, 0.7], [0.0, 0.0, 0.01], target=PAYLOAD).verdict()
    assert "![x](" not in sentence and "$x$" not in sentence and "`code`" not in sentence
    assert sentence.replace("\\", "").count(PAYLOAD) == 1  # shown as typed once unescaped


def test_the_default_category_is_where_the_feature_specialises() -> None:
    categories = ["code", "maths", "prose"]
    scores = pd.DataFrame({"category": ["prose", "maths", "gone"], "score": [0.2, 0.9, 5.0]})
    assert default_target(categories, scores) == "maths"  # "gone" is not a category here
    assert default_target(categories, scores.iloc[:0]) == "code"
    tied = pd.DataFrame({"category": ["prose", "maths"], "score": [1.0, 1.0]})
    assert default_target(categories, tied) == "maths"
    assert default_target([], scores) is None


@pytest.fixture
def ledger(tmp_path: Path) -> pd.DataFrame:
    path = tmp_path / "ledger.duckdb"
    write_small_store(path, ["code", "code", "prose"])
    runs = [
        ({"kind": "text", "intervention": {"sae": "s0", "features": [3], "mode": "zero"},
          "text": 'a "quoted", text\nwith a newline', "generation": None},
         {"n_tokens": 7, "mean_delta_loss": 0.125, "generation_clean": None}),
        ({"kind": "corpus", "intervention": {"sae": "s0", "features": [1, 2], "mode": "scale",
          "value": 2.0}, "category": None, "target": "code", "scales": []},
         {"n_texts": 3, "mean_delta_loss": -0.5, "per_category": {"code": -0.75}}),
    ]  # fmt: skip
    with Store.open(path) as store:
        for settings, metrics in runs:
            store.save_intervention("s0", settings, metrics)
        return store.interventions()


def test_the_csv_export_has_one_row_per_run_with_its_json(ledger: pd.DataFrame) -> None:
    exported = pd.read_csv(io.StringIO(ledger_csv(ledger)))
    assert exported.columns.tolist() == ["id", "sae", "settings", "metrics", "created_at"]
    assert exported["id"].tolist() == [2, 1]  # newest first, as listed
    assert (exported["sae"] == "s0").all()
    first = json.loads(exported["settings"].iloc[1])
    assert first["text"] == 'a "quoted", text\nwith a newline'
    assert json.loads(exported["metrics"].iloc[0]) == {
        "n_texts": 3,
        "mean_delta_loss": -0.5,
        "per_category": {"code": -0.75},
    }


def test_the_json_export_holds_settings_and_metrics_as_objects(ledger: pd.DataFrame) -> None:
    records = json.loads(ledger_json(ledger))
    assert [record["id"] for record in records] == [2, 1]
    assert set(records[0]) == {"id", "sae", "settings", "metrics", "created_at"}
    assert records[0]["settings"]["target"] == "code"
    assert records[0]["settings"]["intervention"]["features"] == [1, 2]
    assert records[1]["metrics"] == {"n_tokens": 7, "mean_delta_loss": 0.125,
                                     "generation_clean": None}  # fmt: skip
    created = pd.Timestamp(records[1]["created_at"])
    assert created == pd.Timestamp(ledger["created_at"].iloc[1])


def test_the_ledger_listing_describes_each_run(ledger: pd.DataFrame) -> None:
    listing = ledger_table(ledger)
    assert listing["feature"].tolist() == [1, 3]
    assert listing["kind"].tolist() == ["corpus", "text"]
    assert listing["size"].tolist() == [3, 7]
    assert listing["description"].iloc[0].endswith("; test: code")
    assert listing["mean_delta_loss"].tolist() == [-0.5, 0.125]


def test_the_csv_export_quotes_a_cell_a_spreadsheet_would_run(ledger: pd.DataFrame) -> None:
    forged = ledger.assign(sae=['=HYPERLINK("http://x","y")', "-s0"])
    exported = pd.read_csv(io.StringIO(ledger_csv(forged)))
    assert exported["sae"].tolist() == ['\'=HYPERLINK("http://x","y")', "'-s0"]
    assert json.loads(exported["settings"].iloc[1])["kind"] == "text"  # JSON starts with {
