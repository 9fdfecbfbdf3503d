"""Feature-page store reads equal the same questions answered with pandas over all of `acts`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from explorer.errors import InputError, StoreError
from explorer.store.queries import feature as fq
from explorer.store.reader import Store
from tests.stores import TINY, build_payload_store

SAE = "L1.resid_post"


@pytest.fixture(scope="module")
def store(tiny_bundle_path, tmp_path_factory):
    path = build_payload_store(tiny_bundle_path, tmp_path_factory.mktemp("feature_queries"))
    with Store.open(path) as opened:
        yield opened


@pytest.fixture(scope="module")
def acts(store) -> pd.DataFrame:
    with store.cursor() as cursor:
        return cursor.execute(
            """SELECT s.sae, a.feature::BIGINT AS feature, a.text_id::BIGINT AS text_id,
            a.pos::BIGINT AS pos, a.value FROM acts a JOIN saes s USING (sae_idx)"""
        ).df()


@pytest.fixture(scope="module")
def tokens(store) -> pd.DataFrame:
    with store.cursor() as cursor:
        return cursor.execute(
            "SELECT text_id::BIGINT AS text_id, pos::BIGINT AS pos, token FROM tokens"
        ).df()


@pytest.fixture(scope="module")
def busy_feature(acts) -> int:
    """A feature of SAE that fires on many tokens, but not on all of them."""
    counts = acts[acts["sae"] == SAE].groupby("feature").size().sort_values()
    return int(counts.index[len(counts) // 2])


def test_live_features_and_neighbours_in_id_order(store, acts):
    fired = sorted(acts.loc[acts["sae"] == SAE, "feature"].unique())
    assert fq.live_features(store, SAE).tolist() == fired
    dead = sorted(set(range(TINY.d_sae)) - set(fired))
    assert dead, "the tiny SAE has dead features to skip over"
    for feature in (fired[0], fired[len(fired) // 2], fired[-1], dead[0]):
        below = [f for f in fired if f < feature]
        above = [f for f in fired if f > feature]
        assert fq.adjacent_live_feature(store, SAE, feature, -1) == (below[-1] if below else None)
        assert fq.adjacent_live_feature(store, SAE, feature, 1) == (above[0] if above else None)


def test_example_windows_hold_the_tokens_and_activations_around_each_example(
    store, acts, tokens, busy_feature
):
    top = store.feature_topk(SAE, busy_feature).head(6)
    windows = fq.example_windows(store, SAE, busy_feature, top, before=5, after=3)
    mine = acts[(acts["sae"] == SAE) & (acts["feature"] == busy_feature)]
    values = mine.set_index(["text_id", "pos"])["value"]
    n_tokens = tokens.groupby("text_id")["pos"].max()
    for example, row in enumerate(top.itertuples()):
        got = windows[windows["example"] == example]
        text = tokens[tokens["text_id"] == row.text_id]
        expected = text[(text["pos"] >= row.pos - 5) & (text["pos"] <= row.pos + 3)]
        assert got["pos"].tolist() == expected["pos"].tolist()
        assert got["token"].tolist() == expected["token"].tolist()
        want = [values.get((row.text_id, p), 0.0) for p in expected["pos"]]
        np.testing.assert_allclose(got["value"], want, rtol=1e-6)
        assert got.loc[got["center"], "pos"].tolist() == [row.pos]
        assert got.loc[got["center"], "value"].iloc[0] == pytest.approx(row.value)
        assert got["cut_before"].all() == (row.pos - 5 > 1)
        assert got["cut_after"].all() == (row.pos + 3 < n_tokens[row.text_id])
    assert (windows["value"] > 0).sum() > len(top), "windows hold activations besides the peak"


def test_texts_with_feature_give_every_token_and_mark_the_peak(store, acts, tokens, busy_feature):
    mine = acts[(acts["sae"] == SAE) & (acts["feature"] == busy_feature)]
    text_ids = [int(mine["text_id"].iloc[0]), int(tokens["text_id"].max())]
    got = fq.texts_with_feature(store, SAE, busy_feature, text_ids)
    for example, text_id in enumerate(text_ids):
        rows = got[got["example"] == example]
        text = tokens[tokens["text_id"] == text_id]
        assert rows["token"].tolist() == text["token"].tolist()
        values = mine[mine["text_id"] == text_id].set_index("pos")["value"]
        np.testing.assert_allclose(rows["value"], values.reindex(text["pos"]).fillna(0), rtol=1e-6)
        if len(values):
            assert rows.loc[rows["center"], "pos"].tolist() == [int(values.idxmax())]
        else:
            assert not rows["center"].any()


def test_text_maxima_and_scales_equal_pandas(store, acts, busy_feature):
    mine = acts[(acts["sae"] == SAE) & (acts["feature"] == busy_feature)]
    expected = mine.groupby("text_id")["value"].agg(["max", "size"])
    got = fq.feature_text_maxima(store, SAE, busy_feature).set_index("text_id")
    assert sorted(got.index) == sorted(expected.index)
    np.testing.assert_allclose(got["max_value"], expected.loc[got.index, "max"], rtol=1e-6)
    assert got["n_active"].tolist() == expected.loc[got.index, "size"].tolist()
    assert got["max_value"].is_monotonic_decreasing
    categories = store.texts().set_index("text_id")["category"]
    assert got["category"].tolist() == categories.loc[got.index].tolist()
    dead = sorted(set(range(TINY.d_sae)) - set(acts.loc[acts["sae"] == SAE, "feature"]))[0]
    scales = fq.feature_scales(store, SAE, [busy_feature, dead])
    assert scales[busy_feature] == pytest.approx(float(mine["value"].max()), rel=1e-6)
    assert scales[dead] == 0.0


@pytest.mark.parametrize("other_sae", [None, "L2.resid_post"])
def test_token_co_firing_is_jaccard_over_positions(store, acts, busy_feature, other_sae):
    own = acts[(acts["sae"] == SAE) & (acts["feature"] == busy_feature)]
    candidates = acts[acts["sae"] == (other_sae or SAE)]
    both = candidates.merge(own[["text_id", "pos"]], on=["text_id", "pos"])
    n_both = both.groupby("feature").size()
    n_active = candidates.groupby("feature").size()
    jaccard = (n_both / (len(own) + n_active.loc[n_both.index] - n_both)).rename("jaccard")
    if other_sae is None:
        jaccard = jaccard.drop(busy_feature)
    expected = jaccard.reset_index().sort_values(["jaccard", "feature"], ascending=[False, True])
    got = fq.co_firing(store, SAE, busy_feature, k=15, level="token", other_sae=other_sae)
    assert got["feature"].tolist() == expected["feature"].head(15).tolist()
    np.testing.assert_allclose(got["jaccard"], expected["jaccard"].head(15), rtol=1e-9)
    assert got["n_both"].tolist() == n_both.loc[got["feature"]].tolist()
    assert got["n_active"].tolist() == n_active.loc[got["feature"]].tolist()
    assert set(got["sae"]) == {other_sae or SAE}


def test_text_co_firing_is_jaccard_over_texts(store, acts, busy_feature):
    own_texts = set(acts.loc[(acts["sae"] == SAE) & (acts["feature"] == busy_feature), "text_id"])
    per_feature = acts[acts["sae"] == SAE].groupby("feature")["text_id"].agg(set)
    jaccard = per_feature.map(lambda texts: len(texts & own_texts) / len(texts | own_texts))
    jaccard = jaccard.drop(busy_feature)
    jaccard = jaccard[jaccard > 0].rename("jaccard").reset_index()
    expected = jaccard.sort_values(["jaccard", "feature"], ascending=[False, True]).head(10)
    got = fq.co_firing(store, SAE, busy_feature, k=10, level="text")
    assert got["feature"].tolist() == expected["feature"].tolist()
    np.testing.assert_allclose(got["jaccard"], expected["jaccard"], rtol=1e-9)


def test_text_categories_of_chosen_texts(store):
    texts = store.texts()
    chosen = [int(texts["text_id"].iloc[0]), int(texts["text_id"].iloc[-1]), 10**6]
    got = fq.text_categories(store, chosen)
    expected = texts.set_index("text_id").loc[chosen[:2], "category"]
    assert got["text_id"].tolist() == chosen[:2]
    assert got["category"].tolist() == expected.tolist()


def test_unknown_saes_and_bad_feature_ids_are_refused(store):
    with pytest.raises(StoreError, match="L0.resid_post"):
        fq.co_firing(store, "x' OR 1=1 --", 0)
    with pytest.raises(StoreError, match="Unknown SAE"):
        fq.co_firing(store, SAE, 0, other_sae="nope")
    with pytest.raises(InputError, match="0 to 127"):
        fq.example_windows(store, SAE, TINY.d_sae, pd.DataFrame({"text_id": [0], "pos": [1]}))
    with pytest.raises(InputError, match="integer"):
        fq.feature_text_maxima(store, SAE, "3")
    with pytest.raises(InputError, match="before"):
        fq.example_windows(store, SAE, 0, pd.DataFrame({"text_id": [0], "pos": [1]}), before=65)
    with pytest.raises(InputError, match="level"):
        fq.co_firing(store, SAE, 0, level="sentence")
    with pytest.raises(InputError, match="k must"):
        fq.co_firing(store, SAE, 0, k=0)
