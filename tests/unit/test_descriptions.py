"""Automatic descriptions, their held-out score and search, on a planted store.

The planted SAE `s` over two categories (`alpha`, `beta`), some texts labelled `op:addition`:
feature 0 fires exactly on the token " may"; 1 at random positions (10%, seeded); 2 on every
token of the `beta` texts (a tenth of them); 3 on the number tokens "7" and "12"; 4 never; 5
on every token; 6 on every token of the texts labelled `op:addition` (across both categories).
The expected counts come from pandas over the planted rows, never from the store's SQL.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from explorer.analysis import descriptions as describe
from explorer.analysis.descriptions import DescriptionSettings
from explorer.charts.compare import specialists_per_category_chart
from explorer.charts.lens import reverse_lookup_chart
from explorer.charts.rankings import feature_bar_chart
from explorer.charts.specialists import category_heatmap, frequency_scatter
from explorer.cli import main
from explorer.errors import InputError
from explorer.store.queries import descriptions as queries
from explorer.store.reader import Store
from explorer.store.schema import SaeInfo
from explorer.store.writer import StoreWriter
from tests.planted import add_acts_with_stats, add_tokens

VOCAB = [" may", "7", "12", " cat", " dog", " the", ",", ".", " run", " sea", " sky", " red"]
ABSENT = ["\x1a", "dney"]  # in the model's vocabulary, never in the corpus
N_TEXTS, TEXT_TOKENS, D_SAE = 200, 20, 8
SAE = SaeInfo(sae="s", hook_name="blocks.0.hook_resid_post", layer=0, d_in=8, d_sae=D_SAE)


def make_texts() -> pd.DataFrame:
    text_id = np.arange(N_TEXTS)
    return pd.DataFrame(
        {
            "text_id": text_id,
            "category": np.where(text_id % 10 == 1, "beta", "alpha"),
            "source": "planted",
            "text": [f"text {t}" for t in text_id],
            "labels": [["op:addition"] if t % 3 == 0 else ["op:subtraction"] for t in text_id],
        }
    )


def make_tokens() -> pd.DataFrame:
    ids = np.random.default_rng(0).integers(0, len(VOCAB), size=N_TEXTS * TEXT_TOKENS)
    return pd.DataFrame(
        {
            "text_id": np.repeat(np.arange(N_TEXTS), TEXT_TOKENS),
            "pos": np.tile(np.arange(1, TEXT_TOKENS + 1), N_TEXTS),
            "token_id": ids,
            "token": [VOCAB[i] for i in ids],
        }
    )


def make_acts(tokens: pd.DataFrame) -> pd.DataFrame:
    on = tokens["token_id"].isin
    random = np.random.default_rng(1).random(len(tokens)) < 0.1
    chosen = {
        0: on([0]),
        1: pd.Series(random, index=tokens.index),
        2: tokens["text_id"] % 10 == 1,
        3: on([1, 2]),
        5: pd.Series(True, index=tokens.index),
        6: tokens["text_id"] % 3 == 0,
    }
    parts = [
        tokens.loc[mask, ["text_id", "pos"]].assign(feature=feature, value=1.0 + feature)
        for feature, mask in chosen.items()
    ]
    return pd.concat(parts, ignore_index=True)[["feature", "text_id", "pos", "value"]]


def write_store(path: Path, texts: pd.DataFrame, tokens: pd.DataFrame, acts: pd.DataFrame):
    vocab = VOCAB + ABSENT
    absent_first = np.array([[len(VOCAB), len(VOCAB) + 1, f % len(VOCAB)] for f in range(D_SAE)])
    with StoreWriter(path, meta={"source": "planted"}) as writer:
        writer.add_sae(SAE)
        writer.add_texts(texts)
        add_tokens(writer, tokens)
        add_acts_with_stats(writer, SAE.sae, acts, D_SAE)
        writer.add_logit_lens(
            SAE.sae,
            top_token_ids=absent_first,
            top_logits=np.tile([3.0, 2.0, 1.0], (D_SAE, 1)),
            bottom_token_ids=np.zeros((D_SAE, 1), dtype=np.int64) + 3,
            bottom_logits=np.full((D_SAE, 1), -1.0),
            vocab=vocab,
        )


@pytest.fixture(scope="module")
def planted() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    tokens = make_tokens()
    return make_texts(), tokens, make_acts(tokens)


@pytest.fixture(scope="module")
def store(planted, tmp_path_factory: pytest.TempPathFactory) -> Store:
    path = tmp_path_factory.mktemp("descriptions") / "planted.duckdb"
    write_store(path, *planted)
    with Store.open(path) as opened:
        yield opened


@pytest.fixture(scope="module")
def described(store: Store) -> pd.DataFrame:
    descriptions = describe.load_descriptions(store, "s")
    scores = describe.load_scores(store, "s")
    return describe.described_features(descriptions, scores, store.labels("s")).set_index(
        "feature", drop=False
    )


def is_held_out(text_id: pd.Series) -> np.ndarray:
    """The split rule written out with Python integers."""
    return np.array([(int(t) * 2654435761) % 2**32 >= 2**31 for t in text_id])


def test_the_split_is_the_documented_hash_and_about_half(planted) -> None:
    texts, _, _ = planted
    held = is_held_out(texts["text_id"])
    assert (queries.held_out(texts["text_id"]) == held).all()
    assert 0.4 < held.mean() < 0.6
    for category in ("alpha", "beta"):  # each category falls into both halves
        assert 0.35 < held[texts["category"] == category].mean() < 0.65


def test_split_counts_equal_a_pandas_group_by(store: Store, planted) -> None:
    _, tokens, acts = planted
    joined = acts.merge(tokens, on=["text_id", "pos"])
    joined["held"] = is_held_out(joined["text_id"])
    expected = (
        joined.groupby(["feature", "token_id"])["held"]
        .agg(n_make=lambda held: int((~held).sum()), n_held="sum")
        .reset_index()
    )
    totals = expected.groupby("feature")[["n_make", "n_held"]].sum()
    expected = expected[
        (expected["n_make"] >= 2)
        & (expected["n_make"] >= 0.05 * expected["feature"].map(totals["n_make"]))
    ]
    split = queries.split_token_counts(store, "s", 0.05, 2)
    got = split.dropna(subset=["token_id"]).astype({"token_id": np.int64})
    pd.testing.assert_frame_equal(
        got[["feature", "token_id", "n_make", "n_held"]]
        .sort_values(["feature", "token_id"])
        .reset_index(drop=True),
        expected.sort_values(["feature", "token_id"]).reset_index(drop=True),
        check_dtype=False,
    )
    per_feature = split.drop_duplicates("feature").set_index("feature")
    assert per_feature["make_total"].to_dict() == totals["n_make"].to_dict()
    assert per_feature["held_total"].to_dict() == totals["n_held"].to_dict()

    halves = queries.token_counts_by_half(store).set_index("token_id")
    tokens_held = is_held_out(tokens["text_id"])
    assert halves["n_held"].to_dict() == tokens[tokens_held].groupby("token_id").size().to_dict()
    assert halves["n_make"].to_dict() == tokens[~tokens_held].groupby("token_id").size().to_dict()


def test_a_planted_one_token_feature_scores_one(described: pd.DataFrame) -> None:
    row = described.loc[0]
    assert row["tokens"] == [" may"]
    assert row["description"].startswith('" may"')
    assert row["kind"] == "word"
    assert row["f1"] == pytest.approx(1.0)
    assert row["precision"] == pytest.approx(1.0)
    assert row["recall"] == pytest.approx(1.0)
    assert row["balanced_accuracy"] == pytest.approx(1.0)


def test_a_random_feature_scores_near_chance(described: pd.DataFrame, planted) -> None:
    _, tokens, acts = planted
    row = described.loc[1]
    rate = (acts["feature"] == 1).sum() / len(tokens)
    assert row["scored"]
    assert row["balanced_accuracy"] == pytest.approx(0.5, abs=0.05)
    assert row["f1"] < 2 * rate  # about its firing rate, far from the planted feature's 1
    assert row["kind"] == "polysemantic"
    assert row["tokens"] == []


def test_score_counts_match_pandas_on_held_out_texts(described: pd.DataFrame, planted) -> None:
    """The number feature's set is "7" and "12": its counts on the held-out half by hand."""
    _, tokens, acts = planted
    held_tokens = tokens[is_held_out(tokens["text_id"])]
    active = acts[acts["feature"] == 3].merge(held_tokens, on=["text_id", "pos"])
    in_set = held_tokens["token_id"].isin([1, 2])
    tp = int(active["token_id"].isin([1, 2]).sum())
    row = described.loc[3]
    assert sorted(row["score_tokens"]) == [1, 2]
    assert (row["tp"], row["fp"], row["fn"]) == (tp, int(in_set.sum()) - tp, len(active) - tp)
    assert row["tn"] == len(held_tokens) - row["tp"] - row["fp"] - row["fn"]
    assert row["kind"] == "number"
    assert set(row["tokens"]) == {"7", "12"}


def test_kinds_categories_and_labels(described: pd.DataFrame) -> None:
    assert described.loc[2, "categories"] == ["beta"]
    assert described.loc[2, "kind"] == "context"
    assert described.loc[4, "kind"] == "dead"
    assert described.loc[4, "description"] == "dead: never fires on this corpus"
    assert np.isnan(described.loc[4, "f1"])
    assert described.loc[5, "kind"] == "dense"
    assert described.loc[5, "description"].startswith("dense: fires on 100% of tokens")
    assert described.loc[6, "text_labels"] == ["op:addition"]
    assert "op:addition" in described.loc[6, "description"]
    assert described.loc[0, "categories"] == []  # " may" is in both categories alike


def test_promoted_tokens_skip_tokens_absent_from_the_corpus(
    store: Store, described: pd.DataFrame
) -> None:
    promoted = queries.promoted_in_corpus(store, "s", 1)
    assert promoted["rank"].tolist() == [3] * D_SAE
    assert promoted["token"].tolist() == [VOCAB[f % len(VOCAB)] for f in range(D_SAE)]
    assert described.loc[0, "description"].endswith('promotes " may"')
    lens = store.logit_lens("s", 0)
    shown, hidden = describe.corpus_only(lens, queries.corpus_token_ids(store, lens["token_id"]))
    assert hidden == 2
    assert shown["token"].tolist() == [" may", " cat"]


def test_lens_lists_in_corpus_renumber_past_hidden_tokens(store: Store) -> None:
    lists = queries.lens_tokens_in_corpus(store, "s", 2).set_index("feature")
    assert lists.index.tolist() == list(range(D_SAE))
    assert (lists["n_hidden"] == 2).all()  # both absent tokens of every feature's top three
    assert (lists["n_stored"] == 4).all()  # three promoted, one suppressed
    for feature in range(D_SAE):
        assert list(lists.loc[feature, "promoted"]) == [VOCAB[feature % len(VOCAB)]]
        assert list(lists.loc[feature, "suppressed"]) == [VOCAB[3]]


def test_a_user_label_overrides_the_description(described: pd.DataFrame) -> None:
    labels = pd.DataFrame({"sae": ["s", "s"], "feature": [3, 3], "label": ["digits", "old"]})
    table = describe.with_user_labels(described.reset_index(drop=True), labels)
    row = table.set_index("feature").loc[3]
    assert row["label"] == "digits"
    assert row["shown"] == "digits" + describe.USER_LABEL_SUFFIX
    assert table.set_index("feature").loc[0, "shown"] == described.loc[0, "description"]


def test_search_ranks_whole_parts_first_and_covers_user_labels(described: pd.DataFrame) -> None:
    table = described.reset_index(drop=True)
    found = describe.search_descriptions(table, "addition")
    assert found["feature"].tolist() == [6]
    assert found["match"].tolist() == ["a whole word"]
    assert describe.search_descriptions(table, "BETA")["feature"].tolist()[0] == 2
    labels = pd.DataFrame({"sae": ["s"], "feature": [5], "label": ["beta-ish everything"]})
    labelled = describe.with_user_labels(described.reset_index(drop=True), labels)
    found = describe.search_descriptions(labelled, "beta")
    assert found["feature"].tolist()[:2] == [5, 2]  # the user's label first
    assert found["match"].tolist()[:2] == ["your label", "a whole part"]
    assert describe.search_descriptions(labelled, "m_y").empty  # literal, no wildcard
    assert describe.search_descriptions(labelled, "m.y").empty


def test_search_reads_descriptions_kept_in_the_store_alike(described: pd.DataFrame) -> None:
    """A description table kept in the store comes back from Parquet with numpy arrays in its
    list columns (tokens, categories, text labels), not lists: the search finds the same
    features in the same order (adding the columns as a whole broadcast the arrays and
    raised a ValueError on the demo store)."""
    table = described.reset_index(drop=True)
    kept = pd.read_parquet(io.BytesIO(table.to_parquet()))
    assert isinstance(kept["categories"].iloc[0], np.ndarray)  # what the store gives back
    for text in ["addition", "beta", "number"]:
        fresh = describe.search_descriptions(table, text)
        again = describe.search_descriptions(kept, text)
        assert again["feature"].tolist() == fresh["feature"].tolist(), text
        assert again["match"].tolist() == fresh["match"].tolist(), text
    assert describe.search_terms(kept).tolist() == describe.search_terms(table).tolist()


def test_rankings_by_score_order_scored_features_only(described: pd.DataFrame) -> None:
    table = described.reset_index(drop=True)
    best = describe.rank_by_score(table, best=True, k=3)
    assert best["feature"].tolist()[:2] == [3, 0]  # F1 1 both; 3 has more held-out tokens
    assert best["rank"].tolist() == [1, 2, 3]
    assert best["f1"].is_monotonic_decreasing
    worst = describe.rank_by_score(table, best=False, k=10)
    assert worst["f1"].is_monotonic_increasing
    assert set(worst["feature"]) == set(table.loc[table["scored"], "feature"])  # no dead one


def test_score_distribution_counts_live_and_scored_features(described: pd.DataFrame) -> None:
    table = described.reset_index(drop=True)
    row = describe.compare_scores({"s": table}).iloc[0]
    scored = table.loc[table["scored"], "f1"]
    assert (row["sae"], row["n_live"], row["n_scored"]) == ("s", 6, len(scored))
    assert row["f1_median"] == pytest.approx(scored.median())
    assert row["f1_at_least_half"] == pytest.approx((scored >= 0.5).mean())


def test_search_refuses_empty_and_long_texts(described: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="empty"):
        describe.search_descriptions(described, "  ")
    with pytest.raises(InputError, match="at most"):
        describe.search_descriptions(described, "x" * 201)


@pytest.mark.parametrize(
    "settings",
    [
        {"max_tokens": 0},
        {"min_token_share": 0.0},
        {"min_token_share": float("nan")},
        {"min_token_lift": 0.5},
        {"n_promoted": 9},
        {"max_categories": True},
    ],
)
def test_bad_settings_are_refused(settings: dict) -> None:
    with pytest.raises(InputError):
        DescriptionSettings(**settings)


def test_describe_command_writes_every_feature_and_refuses_to_overwrite(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "descriptions.csv"
    assert main(["describe", str(store.path), "--out", str(out)]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert table["feature"].tolist() == list(range(D_SAE))
    assert table.loc[0, "description"].startswith('" may"')
    assert json.loads(table.loc[3, "tokens"]) in (["7", "12"], ["12", "7"])
    assert "s: 6 of 6 live features scored" in capsys.readouterr().out
    before = out.read_bytes()
    assert main(["describe", str(store.path), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["describe", str(store.path), "--out", str(store.path), "--force"]) == 2
    assert main(["describe", str(store.path), "--out", str(out), "--force"]) == 0


def test_feature_bars_show_the_description_in_their_tooltip() -> None:
    frame = pd.DataFrame(
        {"sae": ["s", "s"], "feature": [0, 3], "jaccard": [0.5, 0.2], "description": ["a", "b"]}
    )
    tooltips = feature_bar_chart(frame, "jaccard", "Jaccard").to_dict()["encoding"]["tooltip"]
    assert {"field": "description", "type": "nominal", "title": "description"} in tooltips
    plain = feature_bar_chart(frame.drop(columns="description"), "jaccard", "Jaccard").to_dict()
    assert all(t["field"] != "description" for t in plain["encoding"]["tooltip"])


def test_lens_charts_show_the_description_in_their_tooltip() -> None:
    lookup = pd.DataFrame(
        {
            "feature": [0, 3],
            "direction": ["promotes", "suppresses"],
            "rank": [1, 1],
            "logit": [0.5, -0.2],
            "description": ["a", "b"],
        }
    )
    tooltips = reverse_lookup_chart(lookup, "s", " may").to_dict()["encoding"]["tooltip"]
    assert {"field": "description", "type": "nominal", "title": "description"} in tooltips
    plain = reverse_lookup_chart(lookup.drop(columns="description"), "s", " may").to_dict()
    assert all(t["field"] != "description" for t in plain["encoding"]["tooltip"])


def test_the_category_heatmap_shows_the_best_features_description() -> None:
    matrix = pd.DataFrame(
        {
            "sae": ["s", "s"],
            "layer": [0, 0],
            "category": ["alpha", "beta"],
            "best_feature": [0, 2],
            "best_score": [0.9, 0.8],
            "n_specialists": [1, 1],
            "description": ['" may"', "beta"],
        }
    )
    spec = category_heatmap(matrix, "best_score", "score").to_dict()
    tooltips = spec["layer"][0]["encoding"]["tooltip"]
    assert {"field": "description", "type": "nominal", "title": "its description"} in tooltips


def test_the_specialists_bars_show_the_best_features_description() -> None:
    matrix = pd.DataFrame(
        {
            "sae": ["s"],
            "layer": [0],
            "category": ["alpha"],
            "best_feature": [0],
            "best_score": [0.9],
            "n_specialists": [1],
            "description": ['" may"'],
        }
    )
    tooltips = specialists_per_category_chart(matrix).to_dict()["encoding"]["tooltip"]
    assert {"field": "description", "type": "nominal", "title": "its description"} in tooltips


def test_score_summary_says_why_a_feature_has_no_score(described: pd.DataFrame) -> None:
    assert describe.score_summary(described.loc[0]).startswith(
        "Description score on held-out texts: F1 1.00 (precision 1.00, recall 1.00,"
    )
    assert "never fires" in describe.score_summary(described.loc[4])
    without_score = described.loc[0].drop(["f1", "precision", "recall", "balanced_accuracy"])
    assert "not computed on this page" in describe.score_summary(without_score)


def test_the_frequency_scatter_shows_each_features_description() -> None:
    features = pd.DataFrame(
        {
            "sae": ["s", "s"],
            "feature": [0, 3],
            "n_active_tokens": [10, 5],
            "token_freq": [0.1, 0.05],
            "freq_rank": [1, 2],
            "best_score": [0.9, 0.2],
            "best_category": ["alpha", "beta"],
            "specialist_category": ["alpha", None],
            "is_specialist": [True, False],
            "kind": ["category", "general"],
            "value_label": [None, None],
            "description": ['" may"', '"7", "12"'],
        }
    )
    tooltips = frequency_scatter(features, "token_freq", "score").to_dict()["encoding"]["tooltip"]
    assert {"field": "description", "type": "nominal", "title": "description"} in tooltips
