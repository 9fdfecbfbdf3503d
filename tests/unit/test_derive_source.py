"""`python -m explorer derive STORE [--source SPEC]`: the atlas is kept when a source holding
the store's SAEs gives their decoders, and otherwise the command says plainly why not.

The oracle for the kept maps is a fresh layout of the tiny bundle's own decoders, taken by
each SAE's hook name (not through the source matching under test).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from explorer.analysis import precompute
from explorer.analysis.atlas import ATLAS, atlas_coordinates, atlas_entry, kept_atlas
from explorer.build.derive_store import source_decoders
from explorer.build.single import build_store
from explorer.cli import main
from explorer.errors import InputError, plain_text
from explorer.sources.source import load_source
from explorer.store.derived import Derived
from explorer.store.reader import Store


def quick_analyses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `derive` keep one small stand-in analysis, and the real atlas when given
    decoders: for the tests of which source the atlas comes from, not of the analyses."""

    def entries(store: Store, decoders=None) -> list[Derived]:
        stand_in = Derived("example", "k", {"n_saes": pd.DataFrame({"n": [len(store.saes())]})})
        return [stand_in, atlas_entry(decoders)] if decoders else [stand_in]

    monkeypatch.setattr(precompute, "derived_entries", entries)


@pytest.fixture(scope="module")
def plain_store(tiny_bundle_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of the tiny bundle built without the kept analyses (as before they existed)."""
    path = tmp_path_factory.mktemp("derive") / "plain.duckdb"
    build_store(f"demo:{tiny_bundle_path}", "bundled+arithmetic:60", path)
    return path


def copy_of(store: Path, folder: Path, recorded_source: str | None = None) -> Path:
    """A copy of `store` in `folder`, its meta's source replaced by `recorded_source`."""
    path = folder / "store.duckdb"
    shutil.copyfile(store, path)
    if recorded_source is not None:
        with duckdb.connect(str(path)) as con:
            con.execute("UPDATE meta SET value = ? WHERE key = 'source'", [recorded_source])
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fresh_maps(store: Path, tiny_bundle) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Each SAE's own map and the joint map, laid out now from the bundle's decoders."""
    with Store.open(store) as opened:
        saes = opened.saes()
    decoders = {
        row.sae: tiny_bundle.saes[row.hook_name].W_dec.detach().float().numpy()
        for row in saes.itertuples()
    }
    own = {name: atlas_coordinates({name: decoder}) for name, decoder in decoders.items()}
    return own, atlas_coordinates(decoders)


def assert_keeps_fresh_maps(path: Path, tiny_bundle) -> None:
    own, joint = fresh_maps(path, tiny_bundle)
    with Store.open(path) as store:
        assert ATLAS in store.derived_kinds()
        for name, expected in own.items():
            pd.testing.assert_frame_equal(kept_atlas(store, [name]), expected)
        pd.testing.assert_frame_equal(kept_atlas(store, list(own)), joint)


def test_derive_keeps_the_atlas_from_the_source_the_store_records(
    plain_store, tiny_bundle, tiny_bundle_path, tmp_path, capsys
) -> None:
    path = copy_of(plain_store, tmp_path)
    with Store.open(path) as store:
        assert ATLAS not in store.derived_kinds()
    assert main(["derive", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("kept specialists, ")
    assert f", lineage, probing, atlas in {path} in " in out  # the analyses a build keeps
    assert f"atlas: laid out from the decoders of the source demo:{tiny_bundle_path}\n" in out
    assert "note:" not in out
    assert_keeps_fresh_maps(path, tiny_bundle)


def test_without_a_usable_source_the_atlas_is_not_kept_and_the_output_says_why(
    plain_store, tiny_bundle, tiny_bundle_path, tmp_path, capsys, monkeypatch
) -> None:
    """The recorded source's bundle is gone: the other analyses are kept, the note says why
    the atlas is not; the source given on the command line then keeps it."""
    moved = tmp_path / "moved-bundle"
    path = copy_of(plain_store, tmp_path, recorded_source=f"demo:{moved}")
    quick_analyses(monkeypatch)
    assert main(["derive", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"kept example in {path} in ")
    assert (
        f"note: the atlas was not kept: the source the store records (demo:{moved}) cannot be "
        "used: "
    ) in out
    assert (
        "the store keeps no atlas, so the Atlas page lays it out from the loaded source on a "
        "visit. To keep it, give --source the source whose SAEs the store was built from.\n"
    ) in out
    with Store.open(path) as store:
        assert set(store.derived_kinds()) == {"example"}

    assert main(["derive", str(path), "--source", f"demo:{tiny_bundle_path}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"kept example, atlas in {path} in ")
    assert f"atlas: laid out from the decoders of the source demo:{tiny_bundle_path}\n" in out
    assert_keeps_fresh_maps(path, tiny_bundle)

    assert main(["derive", str(path), "--source", "none"]) == 0  # the atlas kept stays
    out = capsys.readouterr().out
    assert (
        "note: the atlas was not kept: no source was asked for (--source none); the atlas the "
        "store kept before stays as it was."
    ) in out
    assert_keeps_fresh_maps(path, tiny_bundle)


def test_a_source_whose_saes_differ_in_size_is_refused_and_the_store_left_alone(
    plain_store, tmp_path, capsys
) -> None:
    """The committed demo bundle has SAEs of the same names as the tiny one's, of another
    width and size: matching by name alone would lay out the wrong directions."""
    path = copy_of(plain_store, tmp_path)
    before = digest(path)
    assert main(["derive", str(path), "--source", "demo"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: The source demo does not hold the store's SAEs: ")
    assert (
        "L0.resid_post has d_in 128 and d_sae 1,024 there, 32 and 128 in the store" in captured.err
    )
    assert "It holds L0.resid_post (128 x 1,024), " in captured.err
    assert captured.err.endswith(
        "(d_in x d_sae). Nothing was computed and the store is unchanged (--source none keeps "
        "every analysis but the atlas).\n"
    )
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.duckdb"]


def test_an_unreadable_source_given_is_refused(plain_store, tmp_path, capsys) -> None:
    path = copy_of(plain_store, tmp_path)
    before = digest(path)
    assert main(["derive", str(path), "--source", "nonsense:x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Invalid source: cannot read the source 'nonsense:x'.")
    assert "\\" not in err  # the terminal gets the message without markdown escapes
    assert digest(path) == before


def test_a_source_lacking_an_saes_name_is_named(plain_store, tiny_bundle_path) -> None:
    loaded = load_source(f"demo:{tiny_bundle_path}")
    with Store.open(plain_store) as store:
        saes = store.saes()
    decoders = source_decoders(saes, loaded)
    assert list(decoders) == saes["sae"].tolist()
    assert all(decoders[h.name].shape == tuple(h.sae.W_dec.shape) for h in loaded.saes)
    partial = dataclasses.replace(loaded, saes=loaded.saes[:1])
    missing = saes["sae"].iloc[1]
    with pytest.raises(InputError) as refused:
        source_decoders(saes, partial)
    assert f"SAEs: {missing} is not in it" in plain_text(refused.value)
