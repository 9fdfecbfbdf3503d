"""Sharded builds: merged shards give the single build's tables; bad folders get clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from explorer.analysis import precompute
from explorer.analysis.specialists import SpecialistSettings, load_specialists
from explorer.build.extract import BuildSettings
from explorer.build.shards import (
    INCOMPLETE,
    MANIFESTS,
    ShardSpec,
    merge_shards,
    merged_top_examples,
    read_shards,
    write_shard,
)
from explorer.build.single import build_store
from explorer.cli import main
from explorer.corpus import resolve_corpus
from explorer.errors import InputError, StoreError, plain_text
from explorer.sources.source import load_source
from explorer.store.reader import Store
from explorer.tokenize import batch_plan, tokenize_corpus

pytestmark = pytest.mark.slow  # heavy: left out of the quick loop (pyproject markers)

CORPUS = "bundled+arithmetic:60"
SETTINGS = BuildSettings(batch_size=16)
# meta keys that say when and how a store was written, not what it holds
WRITE_META = {"created_at", "shards"}


@pytest.fixture(scope="module")
def loaded(tiny_bundle_path):
    return load_source(f"demo:{tiny_bundle_path}")


@pytest.fixture(scope="module")
def single_store(loaded, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("single") / "single.duckdb"
    build_store(loaded, CORPUS, path, SETTINGS)
    return path


@pytest.fixture(scope="module")
def shard_folders(loaded, tmp_path_factory) -> dict[int, Path]:
    """Folders of 2 and 3 shards of CORPUS, written once for the module (do not modify)."""
    folders = {}
    for n_shards in (2, 3):
        folder = tmp_path_factory.mktemp("shards") / f"of{n_shards}"
        for index in range(n_shards):
            write_shard(loaded, CORPUS, folder, ShardSpec(index, n_shards), SETTINGS)
        folders[n_shards] = folder
    return folders


@pytest.fixture
def two_shards(shard_folders, tmp_path) -> Path:
    """A copy of the 2-shard folder that a test may damage."""
    return Path(shutil.copytree(shard_folders[2], tmp_path / "shards"))


def read_tables(path: Path) -> dict[str, pd.DataFrame]:
    """Every table of the store but the kept analyses (`derived` and its meta rows), which
    the tests compare through the analyses themselves."""
    with duckdb.connect(str(path), read_only=True) as con:
        names = [
            row[0]
            for row in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
            ).fetchall()
        ]
        tables = {name: con.execute(f"SELECT * FROM {name}").df() for name in names}
    tables.pop("derived", None)
    tables["meta"] = tables["meta"][~tables["meta"]["key"].str.startswith("derived:")]
    return tables


def canonical(table: pd.DataFrame) -> pd.DataFrame:
    """Rows in a fixed order: lists become tuples; sorted by the exact columns, then floats."""
    table = table.copy()
    for column in table.columns:
        if table[column].dtype == object:
            table[column] = table[column].map(
                lambda v: tuple(v) if isinstance(v, list | np.ndarray) else v
            )
    floats = [c for c in table.columns if pd.api.types.is_float_dtype(table[c])]
    exact = [c for c in table.columns if c not in floats]
    return table.sort_values([*exact, *floats], ignore_index=True)


def assert_same_tables(merged: Path, single: Path) -> None:
    got, expected = read_tables(merged), read_tables(single)
    assert set(got) == set(expected)
    for name in sorted(expected):
        a, b = got[name], expected[name]
        if name == "meta":
            a, b = a[~a.key.isin(WRITE_META)], b[~b.key.isin(WRITE_META)]
        assert len(a) == len(b), name
        pd.testing.assert_frame_equal(
            canonical(a), canonical(b), check_exact=False, rtol=1e-6, atol=1e-9, obj=name
        )


@pytest.mark.parametrize("n_shards", [2, 3])
def test_merged_shards_equal_a_single_build(shard_folders, single_store, tmp_path, n_shards):
    out = tmp_path / "merged.duckdb"
    report = merge_shards(shard_folders[n_shards], out)
    assert_same_tables(out, single_store)
    with Store.open(out) as merged, Store.open(single_store) as single:
        assert merged.meta()["shards"] == str(n_shards)
        assert report.n_texts == len(single.texts())
        assert report.n_tokens == single.table_counts()["tokens"]
        # quality: the same tokens and the same CE texts, so equal up to summation
        for column in ["l0", "explained_variance", "ce_loss_recovered", "dead_fraction"]:
            np.testing.assert_allclose(
                merged.saes()[column], single.saes()[column], rtol=1e-12, err_msg=column
            )
        counts = single.table_counts()
        assert counts["acts"] == sum(report.n_rows.values()) > 0
        assert counts["feature_category"] > 0 and counts["feature_topk"] > 0


def test_shards_split_the_batches_of_a_single_build(loaded, shard_folders):
    corpus = resolve_corpus(CORPUS)
    tokenized = tokenize_corpus(loaded, corpus.texts)
    plan = batch_plan(tokenized, SETTINGS.batch_size)
    shards = read_shards(shard_folders[3])
    text_ids = [set(pd.read_parquet(shard.files("texts")[0]).text_id.tolist()) for shard in shards]
    assert set().union(*text_ids) == set(corpus.texts.text_id)
    assert sum(map(len, text_ids)) == len(corpus)  # no text in two shards
    for shard, ids in zip(shards, text_ids, strict=True):
        expected = np.concatenate(plan[shard.index :: 3])
        assert ids == set(corpus.texts.text_id.iloc[expected])
        assert shard.manifest["n_tokens"] == tokenized.n_tokens[expected].sum()
    # round robin over length-sorted batches: shards differ by at most one batch's tokens
    tokens = [shard.manifest["n_tokens"] for shard in shards]
    largest_batch = max(tokenized.n_tokens[batch].sum() for batch in plan)
    assert max(tokens) - min(tokens) <= largest_batch


def test_more_shards_than_batches_leaves_empty_shards_that_merge(loaded, tmp_path):
    settings = BuildSettings(batch_size=16, max_texts=20)  # 2 batches
    single = tmp_path / "single.duckdb"
    build_store(loaded, CORPUS, single, settings)
    for index in range(3):
        report = write_shard(loaded, CORPUS, tmp_path / "shards", ShardSpec(index, 3), settings)
        assert (report.n_texts == 0) == (index == 2)
    merge_shards(tmp_path / "shards", tmp_path / "merged.duckdb")
    assert_same_tables(tmp_path / "merged.duckdb", single)


def test_merged_top_examples_equal_the_store_topk(shard_folders, single_store):
    with Store.open(single_store) as store:
        sae = store.saes().sae.iloc[-1]
        top = merged_top_examples(shard_folders[3], sae, k=20)
        for feature in top.feature.unique()[:50]:
            expected = store.feature_topk(sae, int(feature))
            got = top[top.feature == feature]
            np.testing.assert_allclose(got.value.to_numpy(), expected.value.to_numpy())
            assert got["rank"].tolist() == expected["rank"].tolist()


def test_rewriting_a_shard_replaces_it(loaded, two_shards, single_store, tmp_path):
    write_shard(loaded, CORPUS, two_shards, ShardSpec(1, 2), SETTINGS)
    merge_shards(two_shards, tmp_path / "merged.duckdb")
    assert_same_tables(tmp_path / "merged.duckdb", single_store)


def test_a_missing_shard_is_named(two_shards, tmp_path):
    (two_shards / MANIFESTS / "shard=1.json").unlink()
    with pytest.raises(StoreError, match=r"has 1 of 2 shards: missing shard\(s\) 1\b"):
        merge_shards(two_shards, tmp_path / "merged.duckdb")
    assert not (tmp_path / "merged.duckdb").exists()


def test_a_shard_of_another_corpus_is_named(loaded, two_shards, tmp_path):
    write_shard(loaded, "bundled+arithmetic:50", two_shards, ShardSpec(1, 2), SETTINGS)
    with pytest.raises(StoreError, match="not of one build") as error:
        merge_shards(two_shards, tmp_path / "merged.duckdb")
    message = plain_text(error.value)  # as a terminal shows it
    assert "corpus differs" in message
    assert 'shard(s) 0: "bundled+arithmetic:60"' in message
    assert 'shard(s) 1: "bundled+arithmetic:50"' in message


def test_shards_of_other_settings_or_counts_are_named(loaded, two_shards, tmp_path):
    write_shard(loaded, CORPUS, two_shards, ShardSpec(2, 3), BuildSettings(batch_size=8))
    with pytest.raises(StoreError) as error:
        read_shards(two_shards)
    message = plain_text(error.value)
    assert "n_shards differs (shard(s) 0, 1: 2; shard(s) 2: 3)" in message
    assert "settings differs" in message


def test_an_empty_folder_gets_a_clear_message(tmp_path):
    with pytest.raises(StoreError, match="holds no finished shard"):
        merge_shards(tmp_path, tmp_path / "merged.duckdb")
    with pytest.raises(StoreError, match="No shard folder"):
        merge_shards(tmp_path / "nothing", tmp_path / "merged.duckdb")


def test_a_killed_shard_write_is_ignored_when_complete_and_named_when_missing(
    two_shards, single_store, tmp_path
):
    # a write killed half way: its temporary folder with some partitions, no manifest
    leftover = two_shards / INCOMPLETE / "shard=1.otherhost.12345"
    shutil.copytree(two_shards / "acts", leftover / "acts")
    merge_shards(two_shards, tmp_path / "merged.duckdb")  # shard 1 is complete: ignored
    assert_same_tables(tmp_path / "merged.duckdb", single_store)

    (two_shards / MANIFESTS / "shard=1.json").unlink()  # killed before publishing shard 1
    with pytest.raises(StoreError, match="missing shard") as error:
        merge_shards(two_shards, tmp_path / "merged2.duckdb")
    assert "unfinished writes, killed or still running" in plain_text(error.value)
    assert str(leftover) in plain_text(error.value)


def test_a_damaged_shard_file_is_named(two_shards, tmp_path):
    manifest = json.loads((two_shards / MANIFESTS / "shard=0.json").read_text())
    part = manifest["files"]["acts"]["L1.resid_post"][0]
    (two_shards / part).unlink()
    with pytest.raises(StoreError, match=rf"Shard 0 .* is damaged: cannot read {part}"):
        merge_shards(two_shards, tmp_path / "merged.duckdb")


@pytest.mark.parametrize(
    ("text", "message"),
    [("2/2", "Shard 2 of 2 does not exist"), ("1", "takes I/N"), ("0/0", "must be 1 to")],
)
def test_bad_shard_specs_are_refused(text, message):
    with pytest.raises(InputError, match=message):
        ShardSpec.parse(text)
    assert ShardSpec.parse(" 1/4 ") == ShardSpec(1, 4)


def test_cli_writes_shards_and_merges_them(tiny_bundle_path, single_store, tmp_path, capsys):
    base = ["build", "--source", f"demo:{tiny_bundle_path}", "--corpus", CORPUS]
    base += ["--batch-size", "16", "--threads", "1"]
    for index in range(2):
        assert main([*base, "--shard", f"{index}/2", "--out", str(tmp_path / "shards")]) == 0
    assert "wrote shard 1/2 into" in capsys.readouterr().out
    out = tmp_path / "merged.duckdb"
    assert main(["merge", str(tmp_path / "shards"), "--out", str(out)]) == 0
    assert f"wrote {out} from 2 shards" in capsys.readouterr().out
    assert_same_tables(out, single_store)
    # the CLI's merge keeps the analyses, equal to those computed on the single build
    settings = SpecialistSettings()
    with Store.open(out) as merged, Store.open(single_store) as single:
        assert set(merged.derived_kinds()) >= {"specialists", "chance", "descriptions"}
        assert single.derived_kinds() == {}
        pd.testing.assert_frame_equal(
            precompute.specialists(merged, settings).table.reset_index(drop=True),
            load_specialists(single, settings).table.reset_index(drop=True),
            check_dtype=False,
        )


def test_cli_refuses_bad_shard_arguments_with_a_message(tiny_bundle_path, tmp_path, capsys):
    base = ["build", "--source", f"demo:{tiny_bundle_path}", "--corpus", CORPUS]
    assert main([*base, "--shard", "3/2", "--out", str(tmp_path)]) == 2
    assert "Shard 3 of 2 does not exist" in capsys.readouterr().err
    assert main([*base, "--shard", "0/2"]) == 2
    assert "give --out FOLDER" in capsys.readouterr().err
    assert main(["merge", str(tmp_path), "--out", str(tmp_path / "s.duckdb")]) == 2
    assert "holds no finished shard" in capsys.readouterr().err
