"""What keeps a server that serves store pages small, and that it changes no number shown.

A kept frame decoded a column at a time equals `pd.read_parquet` of its blob (values,
dtypes, index, list cells), and its rows of one family equal the frame's rows of that family;
one family's specialists read alone equal `in_family` of them all, also once replicated on
another store; Spearman's rho without scipy.stats equals `scipy.stats.spearmanr`; the
specialists are one object shared by every call (no copy per session or rerun); and the
modules of the store pages import none of scipy's heavy parts at the top (scipy.stats alone
is ~60 MB of a server; bench/README.md).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from explorer.analysis import precompute
from explorer.analysis.frequency import frequency_specialization_correlation, spearman
from explorer.analysis.replication import load_store_replication, replicated_on
from explorer.analysis.specialists import (
    Specialists,
    SpecialistSettings,
    family_names,
    in_family,
    load_specialists,
)
from explorer.store.derived import Derived, read_derived, write_derived
from explorer.store.reader import Store
from tests.unit.test_precompute import write_planted

ROOT = Path(__file__).resolve().parents[2]


def frames() -> dict[str, pd.DataFrame]:
    """Frames with every kind of column the kept analyses hold."""
    rng = np.random.default_rng(0)
    n = 1000
    return {
        "cells": pd.DataFrame(
            {
                "sae": rng.choice(["L0.resid_post", "L1.resid_post"], n),
                "layer": rng.integers(0, 4, n).astype(np.int32),
                "feature": rng.integers(0, 4096, n),
                "score": np.where(rng.random(n) < 0.1, np.nan, rng.random(n)),
                "is_specialist": rng.random(n) < 0.3,
                "token": pd.Series(rng.choice([" the", "\n", "é"], n), dtype="str").mask(
                    rng.random(n) < 0.2
                ),
            }
        ),
        "probes": pd.DataFrame(
            {"category": ["code", "maths"], "features": [[3, 1, 2], [0]], "k": [3, 1]}
        ),
        "kinds": pd.DataFrame(
            {"kind": pd.Categorical(["general", "dead", "general"]), "n": pd.array([1, None, 3])}
        ),
        "empty": pd.DataFrame({"sae": pd.Series([], dtype="str"), "x": pd.Series([], dtype=float)}),
    }


def test_a_kept_frame_reads_back_as_read_parquet_returns_it() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE meta (key VARCHAR, value VARCHAR)")
    written = frames()
    write_derived(con, [Derived("mixed", "k1", written, {"n": 1})])
    read = read_derived(con, "mixed", "k1")
    assert read is not None and read.values == {"n": 1}
    blobs = dict(con.execute("SELECT part, data FROM derived").fetchall())
    for part, frame in written.items():
        expected = pd.read_parquet(io.BytesIO(blobs[part]))
        pd.testing.assert_frame_equal(read.frames[part], expected, check_exact=True)
        if part != "probes":  # list cells come back as arrays, from read_parquet too
            pd.testing.assert_frame_equal(read.frames[part], frame, check_exact=True)
    assert read.frames["probes"]["features"].map(list).tolist() == [[3, 1, 2], [0]]
    only = read_derived(con, "mixed", "k1", parts=["probes"])
    assert only is not None and list(only.frames) == ["probes"]


def test_the_rows_of_one_family_are_the_frames_rows_with_their_positions() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE meta (key VARCHAR, value VARCHAR)")
    rng = np.random.default_rng(1)
    cells = pd.DataFrame(
        {
            "family": pd.Series(rng.choice(["bundled", "number", "operation"], 500), dtype="str"),
            "score": rng.random(500),
            "n": pd.array(rng.integers(0, 9, 500)),
        }
    )
    cells.loc[3, "family"] = None
    other = pd.DataFrame({"sae": ["s0", "s1"], "d_sae": [8, 16]})  # no family column
    write_derived(con, [Derived("cut", "k", {"cells": cells, "other": other})])
    for family in ("bundled", "number", "absent"):
        read = read_derived(con, "cut", "k", where=("family", family))
        assert read is not None
        expected = cells[cells["family"] == family]
        pd.testing.assert_frame_equal(read.frames["cells"], expected, check_exact=True)
        pd.testing.assert_frame_equal(read.frames["other"], other, check_exact=True)
    assert len(read_derived(con, "cut", "k", where=("family", "bundled")).frames["cells"]) > 100


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_planted(tmp_path_factory.mktemp("kept") / "kept.duckdb", precompute.derive)


def test_every_frame_a_build_keeps_reads_back_as_read_parquet_returns_it(kept: Path) -> None:
    with Store.open(kept) as store, store.cursor() as cursor:
        kinds = store.derived_kinds()
        rows = cursor.execute("SELECT kind, part, data FROM derived").fetchall()
        for kind, key in kinds.items():
            read = read_derived(cursor, kind, key)
            assert read is not None
            for part, frame in read.frames.items():
                data = next(d for k, p, d in rows if (k, p) == (kind, part))
                expected = pd.read_parquet(io.BytesIO(data))
                pd.testing.assert_frame_equal(frame, expected, check_exact=True)
    assert len(rows) >= 10


def assert_same_specialists(got: Specialists, expected: Specialists) -> None:
    for name in ("table", "features", "categories", "replication"):
        pd.testing.assert_frame_equal(getattr(got, name), getattr(expected, name), check_exact=True)
    assert got.settings == expected.settings
    assert got.operation_categories == expected.operation_categories


def test_one_familys_specialists_read_alone_equal_in_family_of_them_all(
    kept: Path, tmp_path: Path
) -> None:
    settings = SpecialistSettings()
    with Store.open(kept) as store:
        every = precompute.specialists(store, settings)
        families = sorted(set(every.categories["family"]))
        assert len(families) >= 2
        for family in families:
            alone = precompute.family_specialists(store, settings, family)
            assert alone is not None and set(alone.table["family"]) <= {family}
            assert_same_specialists(alone, in_family(every, family))
        other = SpecialistSettings(min_support=3)  # not kept: the caller computes it
        assert precompute.family_specialists(store, other, families[0]) is None
    # replicated on another store of the same source, before or after the cut
    copy = tmp_path / "copy.duckdb"
    shutil.copy(kept, copy)
    with Store.open(kept) as store, Store.open(copy) as second:
        replication = load_store_replication(store, second, every.table, settings)
    from explorer.ui.specialist_views import _in_families

    for family in families:
        alone = in_family(every, family)
        after = _in_families(replicated_on(alone, replication), alone)
        assert_same_specialists(after, in_family(replicated_on(every, replication), family))


def test_a_store_without_frequency_views_names_its_families_from_the_kept_categories(
    kept: Path, tmp_path: Path
) -> None:
    older = tmp_path / "older.duckdb"  # as built before the frequency views were kept
    shutil.copy(kept, older)
    with duckdb.connect(str(older)) as con:
        con.execute("DELETE FROM derived WHERE kind = ?", [precompute.FREQUENCY])
        con.execute("DELETE FROM meta WHERE key = ?", [f"derived:{precompute.FREQUENCY}"])
    settings = SpecialistSettings()
    with Store.open(older) as store:
        assert not precompute.is_kept(store, precompute.FREQUENCY, settings)
        expected = family_names(load_specialists(store, settings).categories)
        assert precompute.kept_families(store, settings) == expected
        assert precompute.kept_families(store, SpecialistSettings(min_support=3)) is None


def test_the_app_reads_one_family_as_in_family_of_them_all(kept: Path) -> None:
    from explorer.ui import cached

    settings = SpecialistSettings(min_support=3)  # computed, then cut: the store keeps no such
    with Store.open(kept) as store:
        for chosen in (SpecialistSettings(), settings):
            every = precompute.specialists(store, chosen)
            for family in sorted(set(every.categories["family"])):
                alone = cached.family_specialists(store, chosen, family)
                assert alone is cached.family_specialists(store, chosen, family)
                assert_same_specialists(alone, in_family(every, family))


def scipy_spearman(x, y) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input warns; both answers are NaN
        result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


@pytest.mark.parametrize("seed", range(40))
def test_spearman_equals_scipy_with_ties_and_perfect_orders(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 400))
    x = pd.Series(rng.random(n) if seed % 2 else np.round(rng.random(n), 1))  # ties
    y = pd.Series(rng.random(n))
    if seed % 5 == 0:
        y = -3 * x  # rho -1, p 0
    elif seed % 5 == 1:
        y = (x + rng.normal(0, 0.05, n)).round(2)
    rho, p_value = spearman(x, y)
    expected_rho, expected_p = scipy_spearman(x, y)
    assert rho == expected_rho
    assert p_value == pytest.approx(expected_p, rel=1e-12, abs=0.0)


def test_spearman_is_nan_where_scipy_is() -> None:
    for x, y in [([1, 1, 1, 1], [1, 2, 3, 4]), ([1, 2, 3], [5, 5, 5])]:
        assert np.isnan(scipy_spearman(x, y)).all()
        assert np.isnan(spearman(pd.Series(x, dtype=float), pd.Series(y, dtype=float))).all()
    few = pd.DataFrame({"token_freq": [0.1, 0.2], "best_score": [0.5, 0.7]})
    answer = frequency_specialization_correlation(few)
    assert answer["n"] == 2 and np.isnan(answer["rho"]) and np.isnan(answer["p_value"])


def test_the_specialists_are_one_object_shared_by_every_call(kept: Path) -> None:
    from explorer.ui import cached

    settings = SpecialistSettings()
    with Store.open(kept) as store:
        first = cached.specialists(store, settings)
        again = cached.specialists(store, settings)
        fresh = precompute.specialists(store, settings)
    assert again is first  # st.cache_data returned a new unpickled copy of 35 MB per call
    pd.testing.assert_frame_equal(first.table, fresh.table)


# the modules the store pages import at their top (besides streamlit, pandas and DuckDB)
STORE_PAGE_MODULES = [
    "explorer.ui.state",
    "explorer.ui.cached",
    "explorer.ui.specialist_views",
    "explorer.ui.compare_views",
    "explorer.analysis.precompute",
    "explorer.analysis.compare",
    "explorer.analysis.controls",
    "explorer.analysis.frequency",
    "explorer.analysis.enrichment",
    "explorer.analysis.field_metrics",
    "explorer.analysis.lineage",
    "explorer.charts.specialists",
    "explorer.charts.frequency",
]
HEAVY = ["scipy.stats", "scipy.optimize", "scipy.sparse", "scipy.special"]


def test_the_store_pages_modules_import_no_heavy_part_of_scipy() -> None:
    script = (
        "import importlib, json, sys\n"
        f"for name in {STORE_PAGE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(set({HEAVY!r}) & set(sys.modules))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
