"""Analyses kept in the store at build: a kept result equals a fresh computation, other
settings are computed as before, and writing them never damages the store.

The planted store is the one of `test_controls` (known specialists, a one-token detector);
the oracle is the analysis run directly on the same store (`load_specialists`,
`load_chance_baseline`, `load_descriptions`, `load_scores`), which the tests of those
functions check against scipy and pandas.
"""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from explorer.analysis import precompute
from explorer.analysis.atlas import atlas_coordinates, kept_atlas
from explorer.analysis.controls import load_chance_baseline
from explorer.analysis.descriptions import DescriptionSettings, load_descriptions, load_scores
from explorer.analysis.enrichment import (
    TaxonomySettings,
    compare_saes,
    load_taxonomy,
    shuffle_baseline,
)
from explorer.analysis.field_metrics import DEFAULT_PROBING, sparse_probing
from explorer.analysis.lineage import DEFAULT_LINEAGE, correlation_lineage
from explorer.analysis.specialists import SpecialistSettings, load_specialists
from explorer.cli import main
from explorer.errors import StoreError
from explorer.store import writer as writer_module
from explorer.store.derived import Derived
from explorer.store.reader import Store
from explorer.store.schema import SaeInfo
from explorer.store.writer import StoreWriter, add_derived
from tests.planted import add_acts_with_stats, add_tokens
from tests.unit.test_controls import planted_acts, planted_texts, planted_tokens

DEFAULT = SpecialistSettings()


def write_planted(path: Path, derive=None) -> Path:
    texts = planted_texts()
    with StoreWriter(path, meta={"source": "planted"}, derive=derive) as writer:
        writer.add_sae(
            SaeInfo(sae="s0", hook_name="blocks.0.hook_resid_post", layer=0, d_in=8, d_sae=8)
        )
        writer.add_texts(texts[["text_id", "category", "source", "text", "labels"]])
        add_tokens(writer, planted_tokens(texts))
        add_acts_with_stats(writer, "s0", planted_acts(texts), 8)
    return path


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_planted(tmp_path_factory.mktemp("kept") / "kept.duckdb", precompute.derive)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_planted(tmp_path_factory.mktemp("plain") / "plain.duckdb")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_frame(kept: pd.DataFrame, fresh: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        kept.reset_index(drop=True), fresh.reset_index(drop=True), check_dtype=False
    )


def test_a_build_keeps_every_default_analysis(kept: Path) -> None:
    with Store.open(kept) as store:
        kinds = store.derived_kinds()
    assert kinds == {
        precompute.SPECIALISTS: precompute.key(DEFAULT),
        precompute.FREQUENCY: precompute.key(DEFAULT),
        precompute.CHANCE: precompute.key(DEFAULT),
        precompute.DESCRIPTIONS: precompute.key(DescriptionSettings()),
        precompute.TAXONOMY: precompute.key(TaxonomySettings()),
        precompute.LINEAGE: precompute.key(DEFAULT_LINEAGE),
        precompute.PROBING: precompute.key(DEFAULT_PROBING),
    }


def test_kept_specialists_equal_a_fresh_computation(kept: Path) -> None:
    with Store.open(kept) as store:
        assert store.derived(precompute.SPECIALISTS, precompute.key(DEFAULT)) is not None
        stored = precompute.specialists(store, DEFAULT)
        fresh = load_specialists(store, DEFAULT)
    for name in ("table", "features", "categories", "replication"):
        assert_same_frame(getattr(stored, name), getattr(fresh, name))
    assert stored.operation_categories == fresh.operation_categories == {"addition", "subtraction"}
    # the planted answers survive the round trip: the rare code specialist replicates
    found = stored.table.set_index(["feature", "category"])
    assert bool(found.loc[(0, "code"), "is_specialist"])
    assert bool(found.loc[(0, "code"), "replicated"])


def test_kept_chance_baseline_equals_a_fresh_computation(kept: Path) -> None:
    with Store.open(kept) as store:
        stored = precompute.chance_baseline(store, DEFAULT)
        fresh = load_chance_baseline(store, DEFAULT)
    assert stored.permutations == fresh.permutations == DEFAULT.permutations
    assert_same_frame(stored.hits, fresh.hits)
    assert_same_frame(stored.by_category(), fresh.by_category())


def test_kept_descriptions_and_scores_equal_a_fresh_computation(kept: Path) -> None:
    settings = DescriptionSettings()
    with Store.open(kept) as store:
        assert precompute.has_description_scores(store, settings)
        assert_same_frame(
            precompute.descriptions(store, "s0", settings), load_descriptions(store, "s0", settings)
        )
        assert_same_frame(
            precompute.description_scores(store, "s0", settings),
            load_scores(store, "s0", settings),
        )


def test_kept_taxonomy_equals_a_fresh_computation(kept: Path) -> None:
    settings = TaxonomySettings()
    with Store.open(kept) as store:
        assert store.derived(precompute.TAXONOMY, precompute.key(settings)) is not None
        assert_same_frame(
            precompute.taxonomy(store, "s0", settings), load_taxonomy(store, "s0", settings)
        )
        assert_same_frame(
            precompute.taxonomy_baseline(store, "s0", settings),
            shuffle_baseline(store, "s0", settings),
        )
        assert_same_frame(
            precompute.taxonomy_comparison(store, settings), compare_saes(store, settings)
        )


def test_kept_lineage_and_probes_equal_a_fresh_computation(kept: Path) -> None:
    with Store.open(kept) as store:
        assert_same_frame(precompute.lineage(store), correlation_lineage(store))
        probes = precompute.probing(store)
        assert_same_frame(probes, sparse_probing(store))
    assert len(probes) > 0


def test_a_build_with_decoders_keeps_the_atlas(tmp_path: Path) -> None:
    decoders = {"s0": np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32)}
    decoders["s0"][5] = decoders["s0"][4]  # a planted pair of identical directions
    path = write_planted(tmp_path / "atlas.duckdb", partial(precompute.derive, decoders=decoders))
    with Store.open(path) as store:
        points = kept_atlas(store, ["s0"])
        assert points is not None
        assert_same_frame(points, atlas_coordinates(decoders))
    pair = points.set_index("feature").loc[[4, 5], ["x", "y"]].to_numpy()
    assert np.allclose(pair[0], pair[1])


def test_other_settings_and_plain_stores_are_computed(kept: Path, plain: Path) -> None:
    other = SpecialistSettings(measure="auroc", permutations=20)
    with Store.open(kept) as store:
        assert store.derived(precompute.SPECIALISTS, precompute.key(other)) is None
        assert_same_frame(
            precompute.specialists(store, other).table, load_specialists(store, other).table
        )
    with Store.open(plain) as store:
        assert store.derived_kinds() == {}
        assert not precompute.has_description_scores(store, DescriptionSettings())
        assert_same_frame(
            precompute.specialists(store, DEFAULT).table, load_specialists(store, DEFAULT).table
        )


def test_a_failing_derive_keeps_the_old_store(tmp_path: Path) -> None:
    path = write_planted(tmp_path / "store.duckdb")
    before = digest(path)

    def broken(_: Path) -> list[Derived]:
        raise RuntimeError("analysis failed")

    with pytest.raises(RuntimeError, match="analysis failed"):
        write_planted(path, broken)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.duckdb"]


def test_add_derived_swaps_in_a_complete_file(tmp_path: Path) -> None:
    path = write_planted(tmp_path / "store.duckdb")
    entry = Derived("example", "k1", {"rows": pd.DataFrame({"feature": [1, 2], "x": [0.5, 1.5]})})
    with Store.open(path) as old_reader:
        add_derived(path, [entry])
        assert old_reader.changed_on_disk()  # a new file: open readers reopen
    with Store.open(path) as store:
        kept = store.derived("example", "k1")
        assert store.derived("example", "k2") is None
        assert len(store.saes()) == 1
    assert_same_frame(kept.frames["rows"], entry.frames["rows"])
    # replacing the kind drops its old tables
    add_derived(path, [Derived("example", "k2", {"other": pd.DataFrame({"y": [3]})})])
    with Store.open(path) as store:
        assert store.derived("example", "k1") is None
        assert list(store.derived("example", "k2").frames) == ["other"]


def test_add_derived_failure_leaves_the_store_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_planted(tmp_path / "store.duckdb")
    before = digest(path)
    real_write = writer_module.write_derived

    def fails_after_writing(con, entries) -> None:
        real_write(con, entries)  # the copy now holds the new tables
        raise duckdb.IOException("disk full")

    monkeypatch.setattr(writer_module, "write_derived", fails_after_writing)
    entry = Derived("example", "k", {"rows": pd.DataFrame({"x": [1.0]})})
    with pytest.raises(StoreError, match="disk full.*the store is unchanged"):
        add_derived(path, [entry])
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.duckdb"]


def test_derived_names_are_checked() -> None:
    with pytest.raises(StoreError, match="lower-case"):
        Derived("x; DROP TABLE acts", "k", {})


def test_derive_command_keeps_the_analyses_in_an_older_store(
    plain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "older.duckdb"
    path.write_bytes(plain.read_bytes())
    assert main(["derive", str(path)]) == 0
    assert "kept specialists, frequency, chance, descriptions, taxonomy, lineage, probing in" in (
        capsys.readouterr().out
    )
    with Store.open(path) as store:
        assert set(store.derived_kinds()) == {
            "specialists",
            "frequency",
            "chance",
            "descriptions",
            "taxonomy",
            "lineage",
            "probing",
        }
        kept = precompute.specialists(store, DEFAULT).table
        assert_same_frame(kept, load_specialists(store, DEFAULT).table)
    assert main(["derive", str(tmp_path / "missing.duckdb")]) == 2
    assert "is not a store this app can open" in capsys.readouterr().err


def test_one_part_of_a_kept_analysis_is_read_alone(tmp_path: Path) -> None:
    path = write_planted(tmp_path / "store.duckdb")
    first, second = pd.DataFrame({"a": [1, 2]}), pd.DataFrame({"b": ["x"]})
    add_derived(path, [Derived("example", "k", {"first": first, "second": second}, {"n": 2})])
    with Store.open(path) as store:
        one = store.derived("example", "k", parts=["second"])
        assert list(one.frames) == ["second"] and one.values == {"n": 2}
        assert_same_frame(one.frames["second"], second)
        assert list(store.derived("example", "k").frames) == ["first", "second"]
        assert store.derived("example", "other", parts=["second"]) is None
