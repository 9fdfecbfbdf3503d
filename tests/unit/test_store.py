"""The feature store: what the writer stores, what the reads return, and how builds fail.

Stores are built from small synthetic corpora (numpy, fixed seeds); every number the store
answers is checked against an independent pandas computation over the same input.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from explorer.errors import InputError, StoreError
from explorer.store import writer as store_module
from explorer.store.reader import Store
from explorer.store.schema import (
    HIST_BINS,
    QUANTILE_BINS,
    QUANTILE_EXAMPLES,
    TOPK_EXAMPLES,
    SaeInfo,
)
from explorer.store.writer import StoreWriter
from tests.oracles import feature_category_pandas
from tests.planted import add_tokens

REPO_ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = ("code", "maths", "prose")
ACTS_COLUMNS = ["sae", "feature", "text_id", "pos", "value"]


@dataclass
class Corpus:
    """What an extraction would hand the writer, as plain DataFrames."""

    saes: list[SaeInfo]
    texts: pd.DataFrame  # text_id, category, source, text, labels
    tokens: pd.DataFrame  # text_id, pos, token_id, token
    acts: pd.DataFrame  # sae, feature, text_id, pos, value; zeros included
    vocab: list[str]


def make_corpus(
    seed: int = 0, n_texts: int = 45, d_saes: tuple[int, ...] = (40, 24), **overrides
) -> Corpus:
    """A labelled corpus with dense activations of a few SAEs (most of them zero).

    Feature 0 of every SAE fires only on "code" texts; feature 1 takes few distinct values
    (ties); the last feature never fires (dead).
    """
    rng = np.random.default_rng(seed)
    vocab = [f"tok{i}" for i in range(60)] + ["<b>", "&amp;", " ", "é"]
    lengths = rng.integers(2, 14, n_texts)
    lengths[-1] = 1
    texts = pd.DataFrame(
        {
            "text_id": np.arange(100, 100 + n_texts),  # ids need not start at 0
            "category": [CATEGORIES[i % len(CATEGORIES)] for i in range(n_texts)],
            "source": "synthetic",
            "text": [f"text number {i}" for i in range(n_texts)],
            "labels": [["digits"] if i % 4 == 0 else [] for i in range(n_texts)],
        }
    )
    text_id = np.repeat(texts["text_id"].to_numpy(), lengths)
    pos = np.concatenate([np.arange(1, n + 1) for n in lengths])  # BOS at 0 is never a row
    token_id = rng.integers(0, len(vocab), len(text_id))
    tokens = pd.DataFrame(
        {"text_id": text_id, "pos": pos, "token_id": token_id, "token": np.array(vocab)[token_id]}
    )
    is_code = np.repeat(texts["category"].to_numpy() == "code", lengths)
    saes, acts = [], []
    for i, d_sae in enumerate(d_saes):
        name = f"blocks.{i}.hook_resid_pre"
        saes.append(SaeInfo(sae=name, hook_name=name, layer=i, d_in=16, d_sae=d_sae))
        density = 0.6 * np.arange(1, d_sae + 1) ** -0.7  # a power law of frequencies
        density[-1] = 0.0
        fires = rng.random((len(text_id), d_sae)) < density  # [tokens, d_sae]
        fires[:, 0] = is_code & (rng.random(len(text_id)) < 0.7)
        values = rng.exponential(1.0, fires.shape).astype(np.float32) + np.float32(0.01)
        values[:, 1] = np.ceil(values[:, 1] * 2) / 2
        values = np.where(fires, values, np.float32(0))
        token_idx, feature = np.nonzero(values >= 0)  # every cell, zeros too
        acts.append(
            pd.DataFrame(
                {
                    "sae": name,
                    "feature": feature,
                    "text_id": text_id[token_idx],
                    "pos": pos[token_idx],
                    "value": values[token_idx, feature],
                }
            )
        )
    corpus = Corpus(saes, texts, tokens, pd.concat(acts, ignore_index=True), vocab)
    return replace(corpus, **overrides)


def nonzero_acts(corpus: Corpus) -> pd.DataFrame:
    return corpus.acts[corpus.acts["value"] != 0].reset_index(drop=True)


def stats_of(acts: pd.DataFrame, d_sae: int) -> dict[str, np.ndarray]:
    """Per-feature statistics as the extraction computes them (nonzero rows of one SAE)."""
    grouped = acts.groupby("feature")["value"]
    index = pd.RangeIndex(d_sae)
    max_act = grouped.max().reindex(index, fill_value=0).to_numpy(np.float64)
    bins = np.minimum(
        np.floor(acts["value"].to_numpy(np.float64) / max_act[acts["feature"]] * HIST_BINS),
        HIST_BINS - 1,
    ).astype(int)
    hist = np.zeros((d_sae, HIST_BINS), dtype=np.int64)
    np.add.at(hist, (acts["feature"].to_numpy(), bins), 1)
    return {
        "n_active_tokens": grouped.size().reindex(index, fill_value=0).to_numpy(),
        "n_active_texts": acts.groupby("feature")["text_id"]
        .nunique()
        .reindex(index, fill_value=0)
        .to_numpy(),
        "mean_active": grouped.mean().reindex(index, fill_value=0).to_numpy(np.float64),
        "max": max_act,
        "hist": hist,
    }


def write_store(
    path: Path, corpus: Corpus, *, chunks: int = 3, rows_per_text_block: int = 10**6, **meta: str
) -> None:
    """Build a store from `corpus`, handing activations over in several chunks."""
    with StoreWriter(
        path, meta={"source": "test", **meta}, rows_per_text_block=rows_per_text_block
    ) as writer:
        for info in corpus.saes:
            writer.add_sae(info)
        writer.add_texts(corpus.texts)
        add_tokens(writer, corpus.tokens)
        nonzero = nonzero_acts(corpus)
        for info in corpus.saes:
            rows = corpus.acts[corpus.acts["sae"] == info.sae]
            for part in np.array_split(np.arange(len(rows)), chunks):
                chunk = rows.iloc[part]
                writer.add_acts(
                    info.sae,
                    chunk["feature"].to_numpy(),
                    chunk["text_id"].to_numpy(),
                    chunk["pos"].to_numpy(),
                    chunk["value"].to_numpy(),
                )
            writer.add_feature_stats(
                info.sae, stats_of(nonzero[nonzero["sae"] == info.sae], info.d_sae)
            )
            rng = np.random.default_rng(len(info.sae))
            top = rng.integers(0, len(corpus.vocab), (info.d_sae, 4))
            writer.add_logit_lens(
                info.sae,
                top_token_ids=top,
                top_logits=rng.normal(3, 1, top.shape),
                bottom_token_ids=top[:, ::-1],
                bottom_logits=rng.normal(-3, 1, top.shape),
                vocab=corpus.vocab,
            )


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return make_corpus()


@pytest.fixture(scope="session")
def store_path(tmp_path_factory: pytest.TempPathFactory, corpus: Corpus) -> Path:
    path = tmp_path_factory.mktemp("store") / "store.duckdb"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_module, "FLUSH_ROWS", 500)  # several Arrow inserts per table
        write_store(path, corpus, rows_per_text_block=700)  # several text blocks
    return path


@pytest.fixture()
def store(store_path: Path) -> Store:
    with Store.open(store_path) as opened:
        yield opened


def sae_names(corpus: Corpus) -> list[str]:
    return [info.sae for info in corpus.saes]


def texts_with_n_tokens(corpus: Corpus) -> pd.DataFrame:
    n_tokens = corpus.tokens.groupby("text_id").size().rename("n_tokens")
    return corpus.texts.join(n_tokens, on="text_id").fillna({"n_tokens": 0})


def stored_acts(store: Store, order_by: str) -> pd.DataFrame:
    with store.cursor() as cursor:
        return cursor.execute(
            "SELECT s.sae, a.feature::BIGINT AS feature, a.text_id::BIGINT AS text_id, "
            f"a.pos::BIGINT AS pos, a.value FROM acts a JOIN saes s USING (sae_idx) "
            f"ORDER BY {order_by}"
        ).df()


def test_acts_round_trip_exactly_and_only_nonzero(store: Store, corpus: Corpus) -> None:
    expected = nonzero_acts(corpus).sort_values(ACTS_COLUMNS[:4], ignore_index=True)
    stored = stored_acts(store, "s.sae, a.feature, a.text_id, a.pos")
    assert len(stored) < len(corpus.acts)  # the zeros given to add_acts were dropped
    pd.testing.assert_frame_equal(stored, expected, check_dtype=False)
    assert stored["value"].dtype == np.float32


def test_acts_are_physically_sorted_by_sae_text_block_feature_value(store: Store) -> None:
    physical = stored_acts(store, "a.rowid")
    with store.cursor() as cursor:
        sae_idx = cursor.execute("SELECT sae_idx FROM acts ORDER BY rowid").fetchnumpy()["sae_idx"]
    physical.insert(0, "sae_idx", sae_idx)
    physical.insert(1, "block", physical["text_id"] // int(store.meta()["acts_text_block"]))
    assert physical["block"].nunique() > 2
    expected = physical.sort_values(
        ["sae_idx", "block", "feature", "value", "text_id", "pos"],
        ascending=[True, True, True, False, True, True],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(physical, expected)


def test_a_small_store_is_sorted_by_feature_alone(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    write_store(path, make_corpus(seed=9, n_texts=12))
    with Store.open(path) as store:
        assert int(store.meta()["acts_text_block"]) > 111  # one block: ids 100..111
        physical = stored_acts(store, "a.rowid")
    expected = physical.sort_values(
        ["sae", "feature", "value", "text_id", "pos"],
        ascending=[True, True, False, True, True],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(physical, expected)


def test_the_built_file_uses_the_writers_row_group_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bigger row groups are what keep `acts` compact (see ROW_GROUP_ROWS): the writer must
    apply its size to the file it builds, not DuckDB's default of 122,880 rows."""
    monkeypatch.setattr(store_module, "ROW_GROUP_ROWS", 2048)  # DuckDB's smallest
    path = tmp_path / "store.duckdb"
    corpus = make_corpus(seed=3, n_texts=120)
    write_store(path, corpus)
    with duckdb.connect(str(path), read_only=True) as con:
        n_rows, groups, largest = con.execute(
            """SELECT sum(count), count(*), max(count) FROM pragma_storage_info('acts')
            WHERE column_name = 'value' AND segment_type <> 'VALIDITY'"""
        ).fetchone()
    assert n_rows == len(nonzero_acts(corpus)) > 2 * 2048
    assert largest == 2048
    assert groups >= n_rows / 2048
    with Store.open(path) as store:  # and it is an ordinary store
        assert store.table_counts()["acts"] == n_rows


def test_a_store_builds_in_a_folder_whose_name_has_quotes(tmp_path: Path, corpus: Corpus) -> None:
    folder = tmp_path / 'it\'s a "folder"; DROP TABLE acts; --'
    folder.mkdir()
    path = folder / "o'store.duckdb"
    write_store(path, corpus)
    with Store.open(path) as store:
        assert store.table_counts()["acts"] == len(nonzero_acts(corpus))
    assert sorted(p.name for p in folder.iterdir()) == ["o'store.duckdb"]  # no temp files left


@pytest.mark.parametrize("feature", [0, 1, 2, 5])
def test_top_examples_equal_a_pandas_sort(store: Store, corpus: Corpus, feature: int) -> None:
    sae = sae_names(corpus)[0]
    acts = nonzero_acts(corpus)
    rows = acts[(acts["sae"] == sae) & (acts["feature"] == feature)]
    expected = rows.sort_values(
        ["value", "text_id", "pos"], ascending=[False, True, True], ignore_index=True
    ).head(7)
    top = store.top_examples(sae, feature, k=7)
    assert top["rank"].tolist() == list(range(1, len(expected) + 1))
    pd.testing.assert_frame_equal(
        top[["text_id", "pos", "value"]],
        expected[["text_id", "pos", "value"]],
        check_dtype=False,
    )


def test_top_examples_of_a_tied_feature_break_ties_by_text_and_position(
    store: Store, corpus: Corpus
) -> None:
    sae = sae_names(corpus)[0]
    top = store.top_examples(sae, 1, k=50)
    assert top["value"].duplicated().any()  # feature 1 takes few distinct values
    keys = list(zip(-top["value"], top["text_id"], top["pos"], strict=True))
    assert keys == sorted(keys)


def test_feature_topk_is_the_first_rows_with_their_tokens(store: Store, corpus: Corpus) -> None:
    sae = sae_names(corpus)[1]
    for feature in range(4):
        topk = store.feature_topk(sae, feature)
        top = store.top_examples(sae, feature, k=TOPK_EXAMPLES)
        pd.testing.assert_frame_equal(topk.drop(columns="token"), top, check_dtype=False)
        tokens = corpus.tokens.set_index(["text_id", "pos"])["token"]
        assert topk["token"].tolist() == [
            tokens[(t, p)] for t, p in zip(topk["text_id"], topk["pos"], strict=True)
        ]


def test_feature_quantiles_cover_the_activation_range(store: Store, corpus: Corpus) -> None:
    sae = sae_names(corpus)[0]
    acts = nonzero_acts(corpus)
    for feature in (2, 3):
        values = acts[(acts["sae"] == sae) & (acts["feature"] == feature)]["value"]
        bins = np.minimum(
            np.floor(values.to_numpy(np.float64) / values.max() * QUANTILE_BINS),
            QUANTILE_BINS - 1,
        )
        expected_per_bin = pd.Series(bins).value_counts().clip(upper=QUANTILE_EXAMPLES)
        examples = store.feature_quantiles(sae, feature)
        assert examples.groupby("bin").size().to_dict() == expected_per_bin.to_dict()
        assert (examples["value"] >= examples["bin_low"] - 1e-6).all()
        assert (examples["value"] <= examples["bin_high"] + 1e-6).all()
        assert examples["bin_high"].max() == pytest.approx(values.max())
        assert examples["bin"].max() == QUANTILE_BINS - 1  # the max lies in the top bin
        ranks = examples.groupby("bin")["rank"].apply(list)
        assert all(r == list(range(1, len(r) + 1)) for r in ranks)


@pytest.mark.parametrize("sae_index", [0, 1])
def test_feature_category_equals_a_pandas_computation(
    store: Store, corpus: Corpus, sae_index: int
) -> None:
    sae = sae_names(corpus)[sae_index]
    acts = nonzero_acts(corpus)
    expected = feature_category_pandas(acts[acts["sae"] == sae], texts_with_n_tokens(corpus))
    table = store.feature_category(sae)
    pd.testing.assert_frame_equal(table, expected, check_dtype=False, rtol=1e-9)
    # the specialist: feature 0 fires on code only, the dead feature has no rows
    by_category = table[table["feature"] == 0].set_index("category")["n_tokens_active"]
    assert by_category["code"] > 0 and by_category.drop("code").eq(0).all()
    assert corpus.saes[sae_index].d_sae - 1 not in set(table["feature"])
    one = store.feature_category(sae, feature=0)
    assert one["category"].tolist() == sorted(CATEGORIES)


@pytest.mark.parametrize("sae_index", [0, 1])
def test_feature_stats_are_stored_and_match_the_sql_derivation(
    store: Store, corpus: Corpus, sae_index: int
) -> None:
    info = corpus.saes[sae_index]
    acts = nonzero_acts(corpus)
    given = stats_of(acts[acts["sae"] == info.sae], info.d_sae)
    stats = store.feature_stats(info.sae)
    assert stats["feature"].tolist() == list(range(info.d_sae))
    assert stats["n_active_tokens"].tolist() == given["n_active_tokens"].tolist()
    assert stats["token_freq"].to_numpy() == pytest.approx(
        given["n_active_tokens"] / len(corpus.tokens)
    )
    assert stats["text_freq"].to_numpy() == pytest.approx(
        given["n_active_texts"] / len(corpus.texts)
    )
    expected_rank = (
        pd.DataFrame({"n": given["n_active_tokens"], "feature": range(info.d_sae)})
        .sort_values(["n", "feature"], ascending=[False, True])
        .assign(rank=range(1, info.d_sae + 1))
        .sort_values("feature")["rank"]
    )
    assert stats["freq_rank"].tolist() == expected_rank.tolist()
    assert np.stack(stats["hist"]).tolist() == given["hist"].tolist()
    assert np.stack(stats["hist"]).sum(axis=1).tolist() == given["n_active_tokens"].tolist()

    derived = store.compute_feature_stats(info.sae)  # float64 sums; the extraction's float32
    pd.testing.assert_frame_equal(
        derived.drop(columns="hist"), stats.drop(columns="hist"), check_dtype=False, rtol=1e-6
    )
    assert np.stack(derived["hist"]).tolist() == np.stack(stats["hist"]).tolist()
    assert store.feature_stats(info.sae, feature=3)["feature"].tolist() == [3]


def test_text_views_return_the_text_its_tokens_and_activations(
    store: Store, corpus: Corpus
) -> None:
    text_id = int(corpus.texts["text_id"].iloc[3])
    text = store.text(text_id)
    assert text is not None and text["text"] == corpus.texts["text"].iloc[3]
    assert text["category"] == corpus.texts["category"].iloc[3]
    assert text["n_tokens"] == (corpus.tokens["text_id"] == text_id).sum()
    assert store.text(999_999) is None

    tokens = store.text_tokens(text_id)
    expected_tokens = corpus.tokens[corpus.tokens["text_id"] == text_id]
    assert tokens["pos"].tolist() == expected_tokens["pos"].tolist()
    assert tokens["token"].tolist() == expected_tokens["token"].tolist()

    sae = sae_names(corpus)[0]
    acts = nonzero_acts(corpus)
    rows = acts[(acts["sae"] == sae) & (acts["text_id"] == text_id)]
    expected = rows.sort_values(
        ["pos", "value", "feature"], ascending=[True, False, True], ignore_index=True
    )[["pos", "feature", "value"]]
    pd.testing.assert_frame_equal(store.text_acts(text_id, sae), expected, check_dtype=False)
    chosen = expected[expected["feature"].isin([2, 3])].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        store.text_acts(text_id, sae, features=[3, 2, 3]), chosen, check_dtype=False
    )
    assert store.text_acts(text_id, sae, features=[]).empty


def test_texts_and_categories(store: Store, corpus: Corpus) -> None:
    texts = store.texts()
    assert texts["text_id"].tolist() == corpus.texts["text_id"].tolist()
    assert [list(labels) for labels in texts["labels"]] == corpus.texts["labels"].tolist()
    code = store.texts(category="code")
    assert set(code["category"]) == {"code"}
    assert len(code) == (corpus.texts["category"] == "code").sum()
    categories = store.categories().set_index("category")
    assert categories["n_tokens"].sum() == len(corpus.tokens)


def test_logit_lens_lists_top_tokens_then_bottom_tokens(store: Store, corpus: Corpus) -> None:
    lens = store.logit_lens(sae_names(corpus)[0], 2)
    assert lens["rank"].tolist() == [1, 2, 3, 4, -1, -2, -3, -4]
    top, bottom = lens[lens["rank"] > 0], lens[lens["rank"] < 0]
    assert top["logit"].is_monotonic_decreasing and bottom["logit"].is_monotonic_increasing
    assert (top["logit"].min() > bottom["logit"].max()).all()
    assert lens["token"].tolist() == [corpus.vocab[i] for i in lens["token_id"]]


def test_meta_and_saes_describe_the_build(store: Store, corpus: Corpus) -> None:
    meta = store.meta()
    assert meta["schema_version"] == store_module.SCHEMA_VERSION
    assert meta["source"] == "test"
    versions = json.loads(meta["versions"])
    for package in ("torch", "transformer-lens", "sae-lens", "duckdb"):
        assert versions[package] == importlib.metadata.version(package)
    saes = store.saes()
    assert saes["sae"].tolist() == sae_names(corpus)
    assert saes["d_sae"].tolist() == [info.d_sae for info in corpus.saes]
    for info in corpus.saes:  # the one SAE reference every read takes
        ref = store.sae(info.sae)
        assert (ref.name, ref.hook_name, ref.layer, ref.d_in, ref.d_sae) == (
            info.sae,
            info.hook_name,
            info.layer,
            info.d_in,
            info.d_sae,
        )


def test_unknown_sae_and_out_of_range_features_are_refused(store: Store, corpus: Corpus) -> None:
    sae = sae_names(corpus)[0]
    with pytest.raises(StoreError, match="blocks.0.hook_resid_pre"):
        store.top_examples("blocks.9.hook_resid_pre", 0)
    d_sae = corpus.saes[0].d_sae
    for bad in (d_sae, -1, 2.0, "3", True):
        with pytest.raises(InputError):
            store.top_examples(sae, bad)
    with pytest.raises(InputError, match=f"0 to {d_sae - 1}"):
        store.feature_stats(sae, d_sae)
    with pytest.raises(InputError):
        store.text_acts(100, sae, features=[0, d_sae])
    with pytest.raises(InputError):
        store.top_examples(sae, 0, k=0)
    with pytest.raises(InputError):
        store.text_tokens(-5)


def test_table_counts_and_export_round_trip(store: Store, corpus: Corpus, tmp_path: Path) -> None:
    counts = store.table_counts()
    assert counts["acts"] == len(nonzero_acts(corpus))
    assert counts["tokens"] == len(corpus.tokens)
    assert counts["feature_stats"] == sum(info.d_sae for info in corpus.saes)

    parquet = store.export("acts", tmp_path / "acts.parquet", format="parquet")
    exported = pd.read_parquet(parquet).sort_values(ACTS_COLUMNS[:4], ignore_index=True)
    expected = nonzero_acts(corpus).sort_values(ACTS_COLUMNS[:4], ignore_index=True)
    pd.testing.assert_frame_equal(exported[ACTS_COLUMNS], expected, check_dtype=False)

    csv = store.export("feature_category", tmp_path / "fc.csv", format="csv")
    from_csv = pd.read_csv(csv)
    assert len(from_csv) == counts["feature_category"]
    assert set(from_csv["sae"]) == set(sae_names(corpus))
    sae = sae_names(corpus)[0]
    stored = store.feature_category(sae)
    mine = from_csv[from_csv["sae"] == sae].drop(columns="sae").sort_values(["feature", "category"])
    pd.testing.assert_frame_equal(
        mine.reset_index(drop=True), stored, check_dtype=False, rtol=1e-12
    )


def test_export_of_an_unknown_table_lists_the_tables(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="feature_category"):
        store.export("activations", tmp_path / "x.csv", format="csv")
    with pytest.raises(InputError):
        store.export("acts", tmp_path / "x.json", format="json")
    with pytest.raises(StoreError, match="does not exist"):
        store.export("acts", tmp_path / "missing" / "x.csv", format="csv")


def test_labels_and_interventions_survive_a_rebuild(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    corpus = make_corpus(seed=1, n_texts=12)
    sae = corpus.saes[0].sae
    write_store(path, corpus)
    with Store.open(path) as store:
        store.save_label(sae, 3, "closing brackets", note="fires on ')'")
        store.save_label(sae, 3, "closing brackets in code")
        run_id = store.save_intervention(sae, {"kind": "ablate", "feature": 3}, {"dloss": 0.25})
        labels = store.labels(sae, 3)
        assert labels["label"].tolist() == ["closing brackets in code", "closing brackets"]
        assert store.top_examples(sae, 3, k=2)["rank"].tolist() == [1, 2]  # reads still work

    write_store(path, make_corpus(seed=2, n_texts=15), source="rebuilt")
    with Store.open(path) as store:
        assert store.meta()["source"] == "rebuilt"
        assert store.table_counts()["texts"] == 15
        assert store.labels()["label"].tolist() == ["closing brackets in code", "closing brackets"]
        assert store.labels()["note"].tolist() == ["", "fires on ')'"]
        runs = store.interventions(sae)
        assert runs["id"].tolist() == [run_id]
        assert '"dloss": 0.25' in runs["metrics"].iloc[0]
    assert not list(tmp_path.glob("*.tmp-*")) and not list(tmp_path.glob("*.wal"))


def test_a_label_saved_while_other_threads_read_is_seen_by_everyone(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    corpus = make_corpus(seed=3, n_texts=10)
    sae = corpus.saes[0].sae
    write_store(path, corpus)
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_forever() -> None:
        try:
            while not stop.is_set():
                assert len(store.top_examples(sae, 0, k=3)) > 0
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    with Store.open(path) as store:
        readers = [threading.Thread(target=read_forever) for _ in range(3)]
        for reader in readers:
            reader.start()
        for i in range(5):
            store.save_label(sae, i, f"label {i}")
        stop.set()
        for reader in readers:
            reader.join()
        assert not errors
        assert len(store.labels(sae)) == 5


def test_label_input_is_bounded(store_path: Path, corpus: Corpus) -> None:
    with Store.open(store_path) as store:
        with pytest.raises(InputError):
            store.save_label(sae_names(corpus)[0], 0, "   ")
        with pytest.raises(InputError):
            store.save_label(sae_names(corpus)[0], 0, "x" * 201)


def test_a_failed_build_leaves_the_previous_store_untouched(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    write_store(path, make_corpus(seed=4, n_texts=9))
    with Store.open(path) as store:
        before = store.table_counts()
    with pytest.raises(RuntimeError, match="extraction failed"):  # noqa: SIM117
        with StoreWriter(path, meta={}) as writer:
            writer.add_texts(make_corpus(seed=5, n_texts=20).texts)
            raise RuntimeError("extraction failed")
    with Store.open(path) as store:
        assert store.table_counts() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.duckdb"]


def test_a_build_refused_at_finish_leaves_the_previous_store_untouched(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    write_store(path, make_corpus(seed=4, n_texts=9))
    bad = make_corpus(seed=6, n_texts=9)
    bad.acts.loc[bad.acts.index[-1], ["pos", "value"]] = [0, 1.0]  # an activation on BOS
    with pytest.raises(StoreError, match="without a token row"):
        write_store(path, bad)
    with Store.open(path) as store:
        assert store.table_counts()["texts"] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.duckdb"]


KILLED_BUILD = """
import sys
import numpy as np
from explorer.store.schema import SaeInfo
from explorer.store.writer import StoreWriter

with StoreWriter(sys.argv[1], meta={}) as writer:
    writer.add_sae(SaeInfo(sae="s", hook_name="h", layer=0, d_in=4, d_sae=8))
    rng = np.random.default_rng(0)
    n = 200_000
    for step in range(10_000):
        writer.add_acts(
            "s", rng.integers(0, 8, n), rng.integers(0, 50, n), rng.integers(1, 9, n),
            rng.random(n) + 0.1,
        )
        if step == 8:  # after the first Arrow insert
            print("building", flush=True)
"""


def test_a_build_killed_midway_leaves_the_previous_store_readable(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    write_store(path, make_corpus(seed=7, n_texts=11))
    with Store.open(path) as store:
        before = store.table_counts()
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_BUILD), str(path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
    )
    try:
        assert child.stdout.readline().strip() == b"building"
        assert list(tmp_path.glob(f"store.duckdb.tmp-{child.pid}*"))  # it was writing
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    with Store.open(path) as store:
        assert store.table_counts() == before
    # the next build removes what the killed one left behind
    write_store(path, make_corpus(seed=8, n_texts=13))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.duckdb"]
    with Store.open(path) as store:
        assert store.table_counts()["texts"] == 13


def test_building_into_a_missing_folder_names_the_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(StoreError, match=str(missing)):
        StoreWriter(missing / "store.duckdb")


def test_building_onto_a_folder_or_under_a_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a folder"):
        StoreWriter(tmp_path)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(StoreError, match="not a folder"):
        StoreWriter(a_file / "store.duckdb")


def test_building_where_files_cannot_be_written_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(StoreError, match="no write permission"):
            StoreWriter(locked / "store.duckdb")
    elif Path("/proc").is_dir():
        # root ignores permission bits; /proc refuses new files even to root
        with pytest.raises(StoreError, match="cannot create"):
            StoreWriter("/proc/store.duckdb")
    else:
        pytest.skip("running as root without /proc: no folder refuses writes")


def test_opening_a_missing_store_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a store this app can open.*python -m explorer build"):
        Store.open(tmp_path / "store.duckdb")


def read_everything(path: Path) -> None:
    with Store.open(path) as store:
        for sae in store.saes()["sae"]:
            store.feature_category(sae)
            store.feature_stats(sae)
            store.top_examples(sae, 0, k=50)
        store.table_counts()
        store.texts()


def test_a_garbage_file_is_refused_on_open(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    path.write_bytes(np.random.default_rng(0).bytes(20_000))
    with pytest.raises(StoreError, match="not a store this app can open"):
        Store.open(path)
    with pytest.raises(StoreError, match="cannot be read"):
        StoreWriter(path)  # a rebuild would lose its labels: refuse, say what to do


@pytest.mark.parametrize("damage", ["overwrite", "truncate"])
def test_a_damaged_store_raises_store_error(store_path: Path, tmp_path: Path, damage: str) -> None:
    path = tmp_path / "store.duckdb"
    data = bytearray(store_path.read_bytes())
    if damage == "overwrite":
        start = len(data) // 3
        data[start:] = np.random.default_rng(1).bytes(len(data) - start)
    else:
        del data[len(data) // 2 :]
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError):
        read_everything(path)


def test_a_duckdb_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE meta (key VARCHAR, value VARCHAR)")
    with pytest.raises(StoreError, match="missing tables"):
        Store.open(path)


def test_a_store_of_another_schema_version_is_refused(store_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    path.write_bytes(store_path.read_bytes())
    with duckdb.connect(str(path)) as con:
        con.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 0"):
        Store.open(path)


def test_the_writer_refuses_inconsistent_input(tmp_path: Path, corpus: Corpus) -> None:
    info = corpus.saes[0]
    with StoreWriter(tmp_path / "s.duckdb") as writer:
        writer.add_sae(info)
        with pytest.raises(StoreError, match="twice"):
            writer.add_sae(info)
        with pytest.raises(StoreError, match="positive"):
            writer.add_acts(info.sae, [0, 1], [100, 100], [1, 2], [0.5, -0.1])
        with pytest.raises(StoreError, match="out of range"):
            writer.add_acts(info.sae, [info.d_sae], [100], [1], [0.5])
        with pytest.raises(StoreError, match="equal lengths"):
            writer.add_acts(info.sae, [0, 1], [100], [1], [0.5])
        with pytest.raises(StoreError, match="add_sae"):
            writer.add_acts("unknown", [0], [100], [1], [0.5])
        with pytest.raises(StoreError, match="one row per feature"):
            writer.add_feature_stats(info.sae, {"feature": [0], "hist": np.zeros((1, 32))})
        writer.abort()
    assert not (tmp_path / "s.duckdb").exists()
    assert not list(tmp_path.iterdir())


# -- user data: the sidecar -----------------------------------------------------------------


def legacy_store(path: Path, corpus: Corpus) -> tuple[list[tuple], list[tuple]]:
    """A store as builds made before the sidecar: labels and runs inside the DuckDB file."""
    write_store(path, corpus)
    sae = corpus.saes[0].sae
    labels = [
        (sae, 2, "old label", "an old note", pd.Timestamp("2026-01-01 10:00:00")),
        (sae, 2, "newer old label", "", pd.Timestamp("2026-01-02 10:00:00.123456")),
        (sae, 5, "it's quoted; --", "x", pd.Timestamp("2026-01-03 09:00:00")),
    ]
    runs = [
        (1, sae, '{"mode": "zero"}', '{"dloss": 0.5}', pd.Timestamp("2026-01-01 11:00:00")),
        (2, sae, '{"mode": "scale"}', '{"dloss": 0.25}', pd.Timestamp("2026-01-02 11:00:00")),
    ]
    with duckdb.connect(str(path)) as con:
        con.executemany("INSERT INTO labels VALUES (?, ?, ?, ?, ?)", labels)
        con.executemany("INSERT INTO interventions VALUES (?, ?, ?, ?, ?)", runs)
    return labels, runs


def test_saves_go_to_the_sidecar_and_never_change_the_store_file(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    corpus = make_corpus(seed=6, n_texts=10)
    sae = corpus.saes[0].sae
    write_store(path, corpus)
    before = path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino
    with Store.open(path) as store:
        store.save_label(sae, 1, "first")
        run_id = store.save_intervention(sae, {"mode": "zero"}, {"dloss": 1.5})
        assert not store.changed_on_disk()
        assert store.user_data_path == tmp_path / "store.duckdb.user.sqlite"
    assert (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino) == before
    with Store.open(path) as store, store.cursor() as cursor:
        assert cursor.execute("SELECT count(*) FROM labels").fetchone()[0] == 0
        assert store.labels()["label"].tolist() == ["first"]
        assert store.interventions()["id"].tolist() == [run_id]
        labels = store.labels()
        assert labels.dtypes.astype(str).to_dict() == {
            "sae": labels["sae"].dtype.name,
            "feature": "int64",
            "label": labels["label"].dtype.name,
            "note": labels["note"].dtype.name,
            "created_at": "datetime64[us]",
        }
        age = pd.Timestamp.now(tz="UTC").tz_localize(None) - labels["created_at"].iloc[0]
        assert pd.Timedelta(0) <= age < pd.Timedelta(minutes=5)  # stored in UTC


def test_many_threads_save_labels_and_runs_while_others_read(tmp_path: Path) -> None:
    """8 writer threads x 25 saves (labels and ledger runs alternating) and 3 reader threads
    on one Store: every write lands once, with its own content, and no thread raises."""
    path = tmp_path / "store.duckdb"
    corpus = make_corpus(seed=7, n_texts=10)
    sae, d_sae = corpus.saes[0].sae, corpus.saes[0].d_sae
    write_store(path, corpus)
    writers, saves = 8, 25
    errors: list[BaseException] = []
    run_ids: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    reads = [0]

    with Store.open(path) as store:
        top = store.top_examples(sae, 0, k=3)

        def write(thread: int) -> None:
            try:
                for i in range(saves):
                    if i % 2:
                        run_id = store.save_intervention(sae, {"thread": thread, "i": i}, {})
                        with lock:
                            run_ids.append(run_id)
                    else:
                        store.save_label(sae, (thread * saves + i) % d_sae, f"t{thread} s{i}")
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        def read() -> None:
            try:
                while not stop.is_set():
                    assert store.top_examples(sae, 0, k=3).equals(top)
                    store.labels(sae)
                    store.interventions()
                    reads[0] += 1
            except BaseException as exc:
                errors.append(exc)

        readers = [threading.Thread(target=read) for _ in range(3)]
        threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
        for thread in readers + threads:
            thread.start()
        for thread in threads:
            thread.join()
        stop.set()
        for thread in readers:
            thread.join()
        assert not errors, errors
        assert reads[0] > 0
        labels = store.labels(sae)
        runs = store.interventions()

    expected_labels = {
        (f"t{t} s{i}", (t * saves + i) % d_sae)
        for t in range(writers)
        for i in range(saves)
        if i % 2 == 0
    }
    assert len(labels) == len(expected_labels) == writers * 13
    assert set(zip(labels["label"], labels["feature"], strict=True)) == expected_labels
    assert labels["created_at"].is_monotonic_decreasing  # newest first, in commit order
    expected_runs = {(t, i) for t in range(writers) for i in range(saves) if i % 2}
    settings = [json.loads(s) for s in runs["settings"]]
    assert {(s["thread"], s["i"]) for s in settings} == expected_runs
    assert len(runs) == writers * 12
    assert sorted(run_ids) == sorted(runs["id"]) == list(range(1, writers * 12 + 1))
    assert runs["id"].is_monotonic_decreasing


def test_two_stores_on_one_path_save_at_once(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    corpus = make_corpus(seed=8, n_texts=10)
    sae = corpus.saes[0].sae
    write_store(path, corpus)
    errors: list[BaseException] = []
    with Store.open(path) as first, Store.open(path) as second:
        start = threading.Barrier(2)

        def save(store: Store, name: str) -> None:
            start.wait()
            try:
                for i in range(30):
                    store.save_label(sae, i % 10, f"{name} {i}")
                    store.save_intervention(sae, {"by": name, "i": i}, {})
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=save, args=(first, "first")),
            threading.Thread(target=save, args=(second, "second")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        for store in (first, second):  # each sees the other's saves
            assert sorted(store.labels()["label"]) == sorted(
                f"{name} {i}" for name in ("first", "second") for i in range(30)
            )
            assert len(store.interventions()) == 60


SAVING_PROCESS = """
import sys
from explorer.store.reader import Store
path, name, sae = sys.argv[1:4]
with Store.open(path) as store:
    for i in range(40):
        store.save_label(sae, i % 10, f"{name} {i}")
        store.save_intervention(sae, {"by": name, "i": i}, {"n": i})
"""


def test_processes_saving_to_one_store_at_once_all_land(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    corpus = make_corpus(seed=9, n_texts=10)
    sae = corpus.saes[0].sae
    write_store(path, corpus)
    names = ["p0", "p1", "p2"]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SAVING_PROCESS, str(path), name, sae],
            cwd=REPO_ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    with Store.open(path) as store:  # this process saves too, meanwhile
        for i in range(40):
            store.save_label(sae, i % 10, f"main {i}")
        outcomes = [(p.wait(timeout=120), p.stderr.read()) for p in processes]
        assert outcomes == [(0, "")] * len(names)
        labels = store.labels()
        runs = store.interventions()
    assert sorted(labels["label"]) == sorted(
        f"{name} {i}" for name in [*names, "main"] for i in range(40)
    )
    assert len(runs) == 40 * len(names) == runs["id"].nunique()
    for name in names:  # each process's runs in its own order
        mine = [json.loads(s)["i"] for s in runs["settings"] if json.loads(s)["by"] == name]
        assert mine == list(range(39, -1, -1))


def test_an_older_store_keeps_its_labels_and_runs(tmp_path: Path) -> None:
    """Labels and runs saved inside an older store's DuckDB file are copied into the
    sidecar once, stay after a rebuild, and export as before."""
    path = tmp_path / "store.duckdb"
    corpus = make_corpus(seed=10, n_texts=10)
    sae = corpus.saes[0].sae
    labels, runs = legacy_store(path, corpus)
    newest_first = [row[2] for row in sorted(labels, key=lambda row: row[4], reverse=True)]
    for _ in range(2):  # a second open imports nothing again
        with Store.open(path) as store:
            assert store.labels()["label"].tolist() == newest_first
            assert store.labels(sae, 5)["note"].tolist() == ["x"]
            assert store.interventions()["id"].tolist() == [2, 1]
            assert store.interventions()["created_at"].tolist() == [runs[1][4], runs[0][4]]
    with Store.open(path) as store:
        store.save_label(sae, 5, "new label")
        assert store.interventions()["id"].max() == 2
        assert store.save_intervention(sae, {"mode": "clamp"}, {}) == 3

    write_store(path, make_corpus(seed=11, n_texts=12), source="rebuilt")  # no labels inside
    with Store.open(path) as store, store.cursor() as cursor:
        assert store.meta()["source"] == "rebuilt"
        assert cursor.execute("SELECT count(*) FROM labels").fetchone()[0] == 0
        assert store.labels()["label"].tolist() == ["new label", *newest_first]
        assert store.interventions()["id"].tolist() == [3, 2, 1]
        exported = pd.read_csv(store.export("labels", tmp_path / "labels.csv", format="csv"))
    assert exported["label"].tolist() == [*newest_first[::-1], "new label"]
    assert exported.columns.tolist() == ["sae", "feature", "label", "note", "created_at"]


def test_a_rebuild_of_an_older_store_keeps_its_labels_without_an_open(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    corpus = make_corpus(seed=12, n_texts=10)
    labels, _ = legacy_store(path, corpus)
    write_store(path, make_corpus(seed=13, n_texts=12))  # never opened with the sidecar
    with Store.open(path) as store:
        assert sorted(store.labels()["label"]) == sorted(row[2] for row in labels)
        assert len(store.interventions()) == 2


def test_labels_join_store_tables_through_the_sidecar(tmp_path: Path) -> None:
    from explorer.store.queries.lens import lens_overview
    from explorer.store.queries.search import search_labels

    path = tmp_path / "store.duckdb"
    corpus = make_corpus(seed=14, n_texts=10)
    sae = corpus.saes[0].sae
    write_store(path, corpus)
    with Store.open(path) as store:
        assert lens_overview(store, sae)["label"].isna().all()
        assert search_labels(store, "bracket").empty
        store.save_label(sae, 3, "bracket opener")
        store.save_label(sae, 3, "closing bracket")
        store.save_label(corpus.saes[1].sae, 3, "other SAE's bracket")
        overview = lens_overview(store, sae).set_index("feature")["label"]
        assert overview[3] == "closing bracket" and overview.drop(3).isna().all()
        found = search_labels(store, "bracket")
        assert list(zip(found["sae"], found["feature"], found["label"], strict=True)) == [
            (sae, 3, "closing bracket"),
            (corpus.saes[1].sae, 3, "other SAE's bracket"),
        ]


def test_a_sidecar_locked_too_long_says_so_and_saves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from explorer.store import user_data

    path = tmp_path / "store.duckdb"
    corpus = make_corpus(seed=15, n_texts=10)
    sae = corpus.saes[0].sae
    write_store(path, corpus)
    monkeypatch.setattr(user_data, "BUSY_TIMEOUT_S", 0.2)
    with Store.open(path) as store:
        store.save_label(sae, 1, "before")
        holder = sqlite3.connect(store.user_data_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer that never finishes
        try:
            with pytest.raises(StoreError) as raised:
                store.save_label(sae, 1, "during")
            with pytest.raises(StoreError):
                store.save_intervention(sae, {}, {})
            assert store.labels()["label"].tolist() == ["before"]  # reads do not wait
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        message = str(raised.value)
        assert "locked" in message and "nothing was saved" in message
        assert "another process" not in message and "PID" not in message
        assert sys.executable not in message
        store.save_label(sae, 1, "after")
        assert store.labels()["label"].tolist() == ["after", "before"]


@pytest.mark.parametrize("obstacle", ["folder", "not a database"])
def test_a_sidecar_that_cannot_be_written_raises_a_plain_store_error(
    tmp_path: Path, obstacle: str
) -> None:
    path = tmp_path / "store.duckdb"
    corpus = make_corpus(seed=16, n_texts=10)
    sae = corpus.saes[0].sae
    write_store(path, corpus)
    sidecar = tmp_path / "store.duckdb.user.sqlite"
    if obstacle == "folder":
        sidecar.mkdir()
    else:
        sidecar.write_text("label,feature\n")
    with Store.open(path) as store:
        assert store.top_examples(sae, 0, k=1)["rank"].tolist() == [1]  # reads still work
        with pytest.raises(StoreError, match="Cannot save to the labels and runs file") as raised:
            store.save_intervention(sae, {"mode": "zero"}, {"dloss": 0.1})
    assert str(sidecar) in str(raised.value)
    assert "another process" not in str(raised.value)


# -- export ---------------------------------------------------------------------------------


def test_export_never_replaces_the_store_its_sidecar_or_a_database(
    store_path: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    other_sqlite = tmp_path / "notes.db"
    import sqlite3

    with sqlite3.connect(other_sqlite) as con:
        con.execute("CREATE TABLE t (x)")
    link = tmp_path / "link.csv"
    link.symlink_to(store_path)
    with Store.open(store_path) as store:
        sidecar = store.user_data_path
        before = {p: p.read_bytes() for p in (store_path, other, other_sqlite)}
        for target in (store_path, link, sidecar, other, other_sqlite):
            for force in (False, True):
                with pytest.raises(StoreError, match="Cannot export to"):
                    store.export("texts", target, format="csv", force=force)
        assert {p: p.read_bytes() for p in before} == before
        assert not sidecar.exists() or sidecar.is_file()
        store.export("texts", tmp_path / "texts.csv", format="csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "link.csv",
        "notes.db",
        "other.duckdb",
        "texts.csv",
    ]


def test_export_replaces_an_existing_file_only_with_force(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "texts.csv"
    out.write_text("my own notes\n")
    with pytest.raises(StoreError, match="exists.*--force"):
        store.export("texts", out, format="csv")
    assert out.read_text() == "my own notes\n"
    store.export("texts", out, format="csv", force=True)
    pd.testing.assert_frame_equal(
        pd.read_csv(out)[["text_id", "category"]],
        store.texts()[["text_id", "category"]],
        check_dtype=False,
    )
    assert [p.name for p in tmp_path.iterdir()] == ["texts.csv"]  # no temporary file left


def test_the_export_command_refuses_with_a_nonzero_exit(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from explorer.cli import main

    before = store_path.read_bytes()
    argv = ["export", str(store_path), "--table", "labels", "--format", "csv"]
    assert main([*argv, "--out", str(store_path)]) == 2
    assert "Cannot export to" in capsys.readouterr().err
    assert main([*argv, "--out", str(store_path), "--force"]) == 2
    assert store_path.read_bytes() == before
    with Store.open(store_path) as store:  # still a store
        assert store.meta()["schema_version"]
    out = tmp_path / "labels.csv"
    out.write_text("keep me\n")
    assert main([*argv, "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_text() == "keep me\n"
    assert main([*argv, "--out", str(out), "--force"]) == 0
    assert pd.read_csv(out).columns.tolist() == ["sae", "feature", "label", "note", "created_at"]
