"""The frequency page's view kept at build: for every SAE and family it equals the view
computed from a fresh run of the specialists, its replication counts equal those counted
from the table of cells, and the page on a store that keeps it shows the same numbers as on
a store that does not, without reading the table of cells.

The store is the app tests' tiny bundle store (3 SAEs; the bundled, operation and number
families) with every default analysis added, as `python -m explorer derive` adds them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from explorer.analysis import precompute
from explorer.analysis.frequency import band_replication, frequency_view
from explorer.analysis.specialists import SpecialistSettings, family_names, load_specialists
from explorer.store import reader
from explorer.store.reader import Store
from explorer.store.writer import add_derived

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "frequency.py")
DEFAULT = SpecialistSettings()


@pytest.fixture(scope="module")
def kept_path(store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kept_frequency") / "kept.duckdb"
    shutil.copy(store_path, path)
    with Store.open(path) as store:
        entries = precompute.derived_entries(store)
    add_derived(path, entries)
    return path


def assert_same_frame(kept: pd.DataFrame, fresh: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        kept.reset_index(drop=True), fresh.reset_index(drop=True), check_dtype=False
    )


def test_every_kept_view_equals_a_fresh_computation(kept_path: Path) -> None:
    with Store.open(kept_path) as store:
        assert precompute.is_kept(store, precompute.FREQUENCY, DEFAULT)
        fresh = load_specialists(store, DEFAULT)
        saes = store.saes()
        families = family_names(fresh.categories)
        assert families == ["bundled", "operation", "number"]
        assert precompute.kept_families(store, DEFAULT) == families
        for sae, d_sae in zip(saes["sae"], saes["d_sae"], strict=True):
            for family in families:
                kept = precompute.kept_frequency_view(store, DEFAULT, sae, family)
                expected = frequency_view(fresh, sae, family, int(d_sae))
                assert kept is not None and len(kept.features) == d_sae
                assert_same_frame(kept.features, expected.features)
                assert_same_frame(kept.discovered, expected.discovered)
                assert_same_frame(kept.answers, expected.answers)
        other = SpecialistSettings(measure="auroc")
        assert precompute.kept_frequency_view(store, other, saes["sae"].iloc[0], "bundled") is None
        assert precompute.kept_families(store, other) is None


def test_replication_from_the_kept_features_equals_a_count_over_the_cells(
    kept_path: Path,
) -> None:
    """`band_replication` of the per-feature rows the build keeps equals a count of distinct
    features over the family's cells (discovered on one half, found again on the other)."""
    ranges = [(1, 10), (11, 64), (1, 128)]
    found = 0
    with Store.open(kept_path) as store:
        cells = load_specialists(store, DEFAULT).table
        for sae in store.saes()["sae"]:
            for family in ("bundled", "operation", "number"):
                view = precompute.kept_frequency_view(store, DEFAULT, sae, family)
                shown = band_replication(view.discovered, view.features, ranges)
                mine = cells[(cells["family"] == family) & (cells["sae"] == sae)]
                mine = mine[mine["discovered"]]
                ranks = view.features.set_index("feature")["freq_rank"]
                for row, (first, last) in zip(shown.itertuples(), ranges, strict=True):
                    inside = mine[mine["feature"].map(ranks).between(first, last)]
                    assert row.n_discovered == inside["feature"].nunique()
                    assert row.n_replicated == inside.loc[inside["replicated"], "feature"].nunique()
                found += int(shown["n_discovered"].iloc[-1])
    assert found > 0  # the counts are not all zero


def page_tables(at: AppTest) -> dict[str, pd.DataFrame]:
    """The tables of the page's default tab and of its tab of answers under each measure."""
    tables = {}
    for tab in (None, "The answer under each measure"):
        if tab is not None:
            at.session_state["tab"] = tab
            at.run()
        assert not at.exception, at.exception
        for frame in at.dataframe:
            for column in ("answer", "n_replicated", "n_features"):
                if column in frame.value.columns:
                    tables[column] = frame.value.reset_index(drop=True)
    return tables


def test_the_page_on_a_kept_store_shows_the_same_numbers_without_the_cells(
    kept_path: Path, store_path: Path, tiny_bundle_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    reads: list[tuple[str, list[str] | None]] = []
    read = reader.read_derived

    def recorded(cursor, kind, key, parts=None):
        reads.append((kind, None if parts is None else list(parts)))
        return read(cursor, kind, key, parts)

    monkeypatch.setattr(reader, "read_derived", recorded)
    shown = {}
    for name, path in (("plain", store_path), ("kept", kept_path)):
        reads.clear()  # the kept store's reads are the last run's
        monkeypatch.setenv("EXPLORER_STORE", str(path))
        for family in ("bundled", "operation"):
            at = AppTest.from_file(PAGE, default_timeout=120)
            at.query_params["family"] = family
            shown[name, family] = page_tables(at.run())
    for family in ("bundled", "operation"):
        plain, kept = shown["plain", family], shown["kept", family]
        assert sorted(kept) == ["answer", "n_features", "n_replicated"]
        for column in kept:
            assert_same_frame(kept[column], plain[column])
    assert ("frequency", None) in reads
    assert ("frequency", []) in reads  # the families, from its meta row
    assert "specialists" not in {kind for kind, _ in reads}
