"""Replication on another store, on two planted stores whose answers are known.

The discovery store is the controls' planted store (`tests/unit/test_controls.py`): feature 0
a rare code specialist, 4 a code specialist within the prose family. The replication store
holds a second corpus of the same categories, its prose texts from another source (`mine`, so
its prose family has another name) and 20 texts per category: feature 0 again fires on most
code texts (it replicates); feature 4, the planted spurious finding, fires on a seeded random
third of the texts (it does not). Its `maths` category is missing, so nothing is tested there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from explorer.analysis.replication import (
    check_same_source,
    load_store_replication,
    replicated_on,
)
from explorer.analysis.specialists import SpecialistSettings, category_matrix, load_specialists
from explorer.cli import main
from explorer.errors import InputError
from explorer.store.reader import Store
from tests.planted import write_one_sae_store
from tests.unit.test_controls import planted_acts, planted_texts, planted_tokens

SETTINGS = SpecialistSettings(permutations=20)
PER_CATEGORY = 20


def replication_texts() -> pd.DataFrame:
    texts = planted_texts()
    texts = texts[(texts["index"] < PER_CATEGORY) & (texts["category"] != "maths")]
    texts = texts.assign(source=texts["source"].replace({"bundled": "mine"}))
    return texts.assign(text_id=np.arange(len(texts)), text=texts["text"] + " again")


def replication_acts(texts: pd.DataFrame) -> pd.DataFrame:
    acts = planted_acts(texts.reset_index(drop=True))
    spurious = np.random.default_rng(3).random(len(texts)) < 1 / 3
    rows = [(4, int(text_id), 5, 1.0) for text_id in texts.loc[spurious, "text_id"]]
    kept = acts[acts["feature"] != 4]
    return pd.concat([kept, pd.DataFrame(rows, columns=kept.columns)], ignore_index=True)


def write(path: Path, texts: pd.DataFrame, acts: pd.DataFrame, source: str = "planted") -> Path:
    return write_one_sae_store(path, texts, planted_tokens(texts), acts, source=source)


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("replication")
    texts = planted_texts()
    other = replication_texts()
    return {
        "store": write(folder / "found.duckdb", texts, planted_acts(texts)),
        "other": write(folder / "user.duckdb", other, replication_acts(other)),
        "foreign": write(folder / "foreign.duckdb", other, replication_acts(other), "elsewhere"),
    }


@pytest.fixture(scope="module")
def replication(paths: dict[str, Path]):
    with Store.open(paths["store"]) as store, Store.open(paths["other"]) as other:
        result = load_specialists(store, SETTINGS)
        return result, load_store_replication(store, other, result.table, SETTINGS)


def finding(cells: pd.DataFrame, feature: int, category: str) -> pd.Series:
    rows = cells[(cells["feature"] == feature) & (cells["category"] == category)]
    assert len(rows) == 1, (feature, category)
    return rows.iloc[0]


def test_the_planted_specialist_replicates_and_the_spurious_one_does_not(replication) -> None:
    result, external = replication
    found = finding(external.cells, 0, "code")
    assert found["family"] == "bundled"  # the first store's family; re-tested in `mine`
    assert found["external_tested"] and found["external_replicated"]
    # selectivity on the other store, by hand: it fires on 20 of its 20 code texts only,
    # code is 20 of the 60 prose texts there
    assert found["external_score"] == pytest.approx((20 / 20 - 20 / 60) / (1 - 20 / 60))
    spurious = finding(external.cells, 4, "code")
    assert finding(result.table[result.table["is_specialist"]], 4, "code")["selectivity"] == 1.0
    assert spurious["external_tested"] and not spurious["external_replicated"]


def test_the_rates_count_the_tested_findings(replication) -> None:
    result, external = replication
    specialists = result.table[result.table["is_specialist"]]
    assert len(external.cells) == len(specialists)
    rates = external.rates.set_index("category")
    by_hand = external.cells[external.cells["external_tested"]].groupby("category")
    assert rates["discovered"].to_dict() == by_hand.size().to_dict()
    assert rates["replicated"].to_dict() == by_hand["external_replicated"].sum().to_dict()
    code = specialists[specialists["category"] == "code"]
    assert rates.loc["code", "discovered"] == len(code) == 3  # features 0, 3 and 4
    assert rates.loc["code", "replicated"] == 2  # 0 and the `def` detector 3, not 4
    assert set(external.categories["family"]) == {"mine", "operation"}


def test_a_category_missing_from_the_other_store_is_not_tested(paths: dict[str, Path]) -> None:
    table = pd.DataFrame(
        {"sae": ["s0"], "feature": [2], "family": ["bundled"], "category": ["maths"]}
    ).assign(is_specialist=True)
    with Store.open(paths["store"]) as store, Store.open(paths["other"]) as other:
        external = load_store_replication(store, other, table, SETTINGS)
    row = external.cells.iloc[0]
    assert not row["external_tested"] and not row["external_replicated"]
    assert external.rates.empty


def test_the_pages_count_the_store_replication(replication) -> None:
    result, external = replication
    chosen = replicated_on(result, external)
    matrix = category_matrix(chosen.table, chosen.categories).set_index("category")
    assert matrix.loc["code", "n_replicated"] == 2
    assert chosen.replication.equals(external.rates)
    assert (chosen.table["replicated"] == chosen.table["external_replicated"]).all()
    assert len(chosen.table) == len(result.table)


def test_another_source_or_the_same_store_is_refused(paths: dict[str, Path]) -> None:
    with Store.open(paths["store"]) as store, Store.open(paths["foreign"]) as foreign:
        with pytest.raises(InputError, match="another source or other SAEs"):
            check_same_source(store, foreign)
        with pytest.raises(InputError, match="another store"):
            check_same_source(store, store)


def test_the_export_replicates_on_another_store(paths: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "findings.csv"
    args = ["specialists", str(paths["store"]), "--out", str(out), "--permutations", "20"]
    assert main([*args, "--replicate-on", str(paths["other"])]) == 0
    written = pd.read_csv(out)
    chosen = written[written["is_specialist"]].set_index(["feature", "category"])
    assert chosen.loc[(0, "code"), "external_replicated"]
    assert not chosen.loc[(4, "code"), "external_replicated"]
    assert not written.loc[~written["is_specialist"], "external_tested"].any()
    assert main([*args, "--force", "--replicate-on", str(paths["foreign"])]) == 2
