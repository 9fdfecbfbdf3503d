"""A feature's page data: request parsing, histograms, examples, exports, the category view."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from explorer.analysis.feature_data import category_view, load_feature_data, resolve_feature_request
from explorer.analysis.histograms import activation_histogram, value_histogram
from explorer.errors import InputError, plain_text
from explorer.store.reader import Store
from explorer.store.schema import HIST_BINS
from tests.stores import build_payload_store

SAE = "L1.resid_post"
SAES = pd.DataFrame({"sae": ["L0", "L1"], "d_sae": [128, 64]})


@pytest.fixture(scope="module")
def store(tiny_bundle_path, tmp_path_factory):
    path = build_payload_store(tiny_bundle_path, tmp_path_factory.mktemp("feature_data"))
    with Store.open(path) as opened:
        yield opened


@pytest.fixture(scope="module")
def feature_acts(store) -> pd.DataFrame:
    """The busiest feature of SAE and its activations."""
    with store.cursor() as cursor:
        return cursor.execute(
            """WITH mine AS (SELECT a.* FROM acts a JOIN saes s USING (sae_idx) WHERE s.sae = ?),
            busiest AS (SELECT feature FROM mine GROUP BY feature ORDER BY count(*) DESC, feature
                LIMIT 1)
            SELECT feature::BIGINT AS feature, text_id::BIGINT AS text_id, pos::BIGINT AS pos,
                value FROM mine WHERE feature = (SELECT feature FROM busiest)""",
            [SAE],
        ).df()


@pytest.mark.parametrize(
    ("sae", "feature", "expected", "problem"),
    [
        (None, None, ("L0", 7), None),
        ("L1", "12", ("L1", 12), None),
        ("L1", " 63 ", ("L1", 63), None),
        ("L9", "3", ("L0", 3), "There is no SAE 'L9'"),
        ("L1", "64", ("L1", 0), "Feature 64 is out of range for L1: it has features 0 to 63"),
        ("L0", "-1", ("L0", 7), "Feature -1 is out of range"),
        ("L0", "abc", ("L0", 7), "'abc' is not an integer"),
        ("L0", "1e3", ("L0", 7), "not an integer"),
        ("<b>", "<script>", ("L0", 7), "There is no SAE '<b>'"),  # as a terminal shows it
    ],
)
def test_query_parameters_resolve_to_a_feature_with_a_message(sae, feature, expected, problem):
    request = resolve_feature_request(SAES, sae, feature, default_features={"L0": 7})
    assert (request.sae, request.feature) == expected
    if problem is None:
        assert request.problems == ()
    else:
        assert any(problem in plain_text(message) for message in request.problems)


def test_activation_histogram_edges_counts_and_density_match_acts(store, feature_acts):
    feature = int(feature_acts["feature"].iloc[0])
    stats = store.feature_stats(SAE, feature).iloc[0]
    histogram = activation_histogram(stats["hist"], stats["max"])
    values = feature_acts["value"].to_numpy(np.float64)
    top = values.max()
    bins = np.minimum(np.floor(values / top * HIST_BINS), HIST_BINS - 1).astype(int)
    assert histogram["count"].tolist() == np.bincount(bins, minlength=HIST_BINS).tolist()
    np.testing.assert_allclose(histogram["low"], np.arange(HIST_BINS) * top / HIST_BINS, rtol=1e-6)
    np.testing.assert_allclose(histogram["high"].iloc[-1], top, rtol=1e-6)
    widths = histogram["high"] - histogram["low"]
    assert (histogram["density"] * widths).sum() == pytest.approx(1.0)
    assert histogram["fraction"].sum() == pytest.approx(1.0)


def test_dead_feature_histogram_is_all_zero():
    histogram = activation_histogram([0] * 4, 0.0)
    assert histogram["count"].sum() == 0 and (histogram["density"] == 0).all()
    with pytest.raises(InputError):
        activation_histogram([], 1.0)


def test_value_histogram_equals_numpy():
    values = np.random.default_rng(0).normal(size=1000)
    histogram = value_histogram(values, bins=25)
    counts, edges = np.histogram(values, bins=25)
    assert histogram["count"].tolist() == counts.tolist()
    np.testing.assert_allclose(histogram["low"], edges[:-1])
    np.testing.assert_allclose(histogram["high"], edges[1:])
    with pytest.raises(InputError):
        value_histogram(values, bins=0)


def test_feature_data_holds_the_stored_examples_with_windows(store, feature_acts):
    feature = int(feature_acts["feature"].iloc[0])
    data = load_feature_data(store, SAE, feature, before=4, after=2)
    assert not data.is_dead and data.neuronpedia_url is None
    top_values = np.sort(feature_acts["value"].to_numpy())[::-1][: len(data.top)]
    np.testing.assert_allclose(data.top["value"], top_values, rtol=1e-6)
    categories = store.texts().set_index("text_id")["category"]
    assert data.top["category"].tolist() == categories.loc[data.top["text_id"]].tolist()
    assert len(data.windows["example"].unique()) == len(data.top) + len(data.quantiles)
    centers = data.windows[data.windows["center"]].set_index("example")
    for example, row in zip(data.top_examples, data.top.itertuples(), strict=True):
        assert centers.loc[example, "pos"] == row.pos
        assert centers.loc[example, "value"] == pytest.approx(row.value)
    for example, row in zip(data.quantile_examples, data.quantiles.itertuples(), strict=True):
        assert centers.loc[example, "value"] == pytest.approx(row.value)
    captions = data.top_captions()
    assert captions[0].startswith(f"#1  {data.top['value'].iloc[0]:.3f}")
    assert len(data.quantile_captions()) == len(data.quantiles)


def test_exports_carry_the_numbers_on_the_page(store, feature_acts):
    feature = int(feature_acts["feature"].iloc[0])
    data = load_feature_data(store, SAE, feature)
    document = json.loads(data.to_json())
    assert document["feature"] == feature and document["sae"] == SAE
    assert document["stats"]["n_active_tokens"] == len(feature_acts)
    assert len(document["histogram"]) == HIST_BINS
    assert [row["logit"] for row in document["logit_lens"]] == pytest.approx(
        data.logit_lens["logit"].tolist()
    )
    csv = pd.read_csv(io.StringIO(data.to_csv()))
    assert len(csv) == len(data.top) + len(data.quantiles)
    np.testing.assert_allclose(csv.loc[csv["kind"] == "top", "value"], data.top["value"], 1e-6)
    first = data.windows[data.windows["example"] == 0]["token"]
    assert csv["context"].iloc[0] == "".join(first)


def test_dead_feature_data_has_no_examples(store, feature_acts):
    with store.cursor() as cursor:
        dead = cursor.execute(
            """SELECT min(feature)::BIGINT FROM feature_stats JOIN saes USING (sae_idx)
            WHERE sae = ? AND n_active_tokens = 0""",
            [SAE],
        ).fetchone()[0]
    data = load_feature_data(store, SAE, dead)
    assert data.is_dead and data.top.empty and data.windows.empty
    assert data.example_texts().empty
    assert json.loads(data.to_json())["examples"] == []


def test_category_view_puts_the_category_first_then_the_strongest_others(store, feature_acts):
    feature = int(feature_acts["feature"].iloc[0])
    texts = store.texts()
    maxima = feature_acts.groupby("text_id")["value"].max()
    view = category_view(store, SAE, feature, "python_code", n_texts=5)
    target = view.texts[view.texts["target"]]
    others = view.texts[~view.texts["target"]]
    python = texts[texts["category"] == "python_code"]["text_id"]
    expected_target = (
        pd.DataFrame({"text_id": python, "max": maxima.reindex(python).fillna(0).to_numpy()})
        .sort_values(["max", "text_id"], ascending=[False, True])
        .head(5)
    )
    assert target["text_id"].tolist() == expected_target["text_id"].tolist()
    not_python = maxima[~maxima.index.isin(python)].sort_values(ascending=False)
    assert others["text_id"].tolist() == not_python.index[:5].tolist()
    assert (others["category"] != "python_code").all()
    assert view.scale == pytest.approx(float(feature_acts["value"].max()), rel=1e-6)
    for example, text_id in zip(view.texts["example"], view.texts["text_id"], strict=True):
        n_tokens = int(texts.set_index("text_id").loc[text_id, "n_tokens"])
        assert (view.windows["example"] == example).sum() == n_tokens
    assert view.captions()[0].startswith("python_code · text ")
    with pytest.raises(InputError, match="no texts of category"):
        category_view(store, SAE, feature, "no-such-category")
