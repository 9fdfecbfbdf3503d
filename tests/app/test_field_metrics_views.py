"""The field's metrics on the Compare page and feature lineage on the Feature page, on the
tiny bundle's store: the numbers the pages show equal independent computations (numpy over
the stored activations and the loaded decoders)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from explorer.analysis.field_metrics import FIELD_METRICS, sparse_probing
from explorer.sources.source import load_source
from explorer.store.reader import Store

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "app_pages" / "compare.py")  # the `page` fixture's (tests/app/conftest.py)
FEATURE = str(ROOT / "app_pages" / "feature.py")
SAES = ["L0.resid_post", "L1.resid_post", "L2.resid_post"]


@pytest.fixture(scope="module")
def decoders(tiny_bundle_path) -> dict[str, np.ndarray]:
    loaded = load_source(f"demo:{tiny_bundle_path}")
    return {h.name: h.sae.W_dec.detach().double().numpy() for h in loaded.saes}


@pytest.fixture(scope="module")
def token_matrices(store_path) -> dict[str, np.ndarray]:
    """Dense [tokens, d_sae] activations of every SAE, tokens in (text_id, pos) order."""
    with Store.open(store_path) as store:
        tokens = store.query("SELECT text_id, pos FROM tokens ORDER BY text_id, pos")
        index = {key: i for i, key in enumerate(zip(tokens["text_id"], tokens["pos"], strict=True))}
        matrices = {}
        for row in store.saes().itertuples():
            acts = store.query(
                """SELECT a.text_id, a.pos, a.feature, a.value FROM acts a JOIN saes s
                USING (sae_idx) WHERE s.sae = ?""",
                [row.sae],
            )
            matrix = np.zeros((len(tokens), row.d_sae))
            at = [index[key] for key in zip(acts["text_id"], acts["pos"], strict=True)]
            matrix[at, acts["feature"].to_numpy()] = acts["value"]
            matrices[row.sae] = matrix
        return matrices


METRICS_TAB = "The field's metrics"
LINEAGE_TAB = "Lineage across layers"  # the feature page's tab (one tab runs at a time)


@pytest.fixture
def page(page):
    """The Compare page opened on its tab of the field's metrics (one tab runs at a time)."""
    page.session_state["tab"] = METRICS_TAB
    return page


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def frame_with(at: AppTest, column: str) -> list[pd.DataFrame]:
    return [frame.value for frame in at.dataframe if column in frame.value.columns]


def test_compare_shows_every_metric_per_sae(page, store_path) -> None:
    at = page.run()
    assert not at.exception, at.exception
    [shown] = frame_with(at, "metric")
    assert list(shown.columns) == ["metric", *SAES]
    with Store.open(store_path) as store:
        saes = store.saes().set_index("sae")
        probing = sparse_probing(store)
    table = shown.set_index("metric")
    for name in ("explained_variance", "ce_loss_recovered", "kl_divergence", "l2_ratio"):
        assert table.loc[FIELD_METRICS[name], SAES].tolist() == pytest.approx(
            saes.loc[SAES, name].tolist()
        )
    means = probing[probing["k"] == 5].groupby("sae")["accuracy"].mean()
    shown_k5 = table.loc[FIELD_METRICS["probe_k5"], SAES]
    assert shown_k5.tolist() == pytest.approx(means[SAES].tolist())
    assert FIELD_METRICS["mean_max_cosine"] not in table.index  # decoder metrics switched off
    best = means.idxmax()
    assert any(f"k = 5: {best}" in caption.value for caption in at.caption)
    # each row in its kind's number style: shares as percentages, L0 one decimal, scores three
    [element] = [frame for frame in at.dataframe if "metric" in frame.value.columns]
    texts = convert_arrow_bytes_to_pandas_df(element.proto.arrow_data.styler.display_values)
    texts = texts.set_index(shown["metric"])
    for name in ("dead_fraction", "dense_fraction"):
        shares = saes.loc[SAES, name]
        assert texts.loc[FIELD_METRICS[name], SAES].tolist() == [f"{100 * v:.1f}%" for v in shares]
    l0 = saes.loc[SAES, "l0"]
    assert texts.loc[FIELD_METRICS["l0"], SAES].tolist() == [f"{v:.1f}" for v in l0]
    k5 = texts.loc[FIELD_METRICS["probe_k5"], SAES]
    assert k5.tolist() == [f"{v:.3f}" for v in means[SAES]]
    # the features each probe uses (k = 1 by default), with their probe's accuracy, in an
    # expander whose table runs only while it is open
    assert not [f for f in at.dataframe if {"link", "accuracy"} <= set(f.value.columns)]
    at.session_state["probe_features"] = True
    at.run()
    [features] = [f for f in at.dataframe if {"link", "accuracy"} <= set(f.value.columns)]
    probes = probing[probing["k"] == 1].explode("features")
    assert features.value["feature"].tolist() == probes["features"].astype(int).tolist()
    assert features.value["accuracy"].tolist() == pytest.approx(probes["accuracy"].tolist())
    assert json.loads(features.proto.columns)["accuracy"]["type_config"]["format"] == "%.3f"


def test_decoder_metrics_equal_numpy_cosines(page, decoders) -> None:
    at = page.run()
    at.toggle(key="compare_page.decoders").set_value(True).run()
    assert not at.exception, at.exception
    table = frame_with(at, "metric")[0].set_index("metric")
    for sae in SAES:
        cosines = unit(decoders[sae]) @ unit(decoders[sae]).T
        np.fill_diagonal(cosines, -2)
        shown = table.loc[FIELD_METRICS["mean_max_cosine"], sae]
        assert shown == pytest.approx(cosines.max(axis=1).mean(), abs=1e-5)
    matched = (unit(decoders[SAES[0]]) @ unit(decoders[SAES[1]]).T).max(axis=1)
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["consistency (mean max cosine)"] == f"{matched.mean():.3f}"
    assert metrics["share matched (>= 0.7)"] == f"{(matched >= 0.7).mean():.1%}"


def test_feature_lineage_shows_correlations_and_cosines(
    page, store_path, token_matrices, decoders
) -> None:
    with Store.open(store_path) as store:
        stats = store.feature_stats("L1.resid_post")
    feature = int(stats.sort_values("n_active_tokens").iloc[-1]["feature"])
    at = AppTest.from_file(FEATURE, default_timeout=120)  # `page` has set the environment
    at.query_params.update({"sae": "L1.resid_post", "feature": str(feature), "tab": LINEAGE_TAB})
    at.run()
    assert not at.exception, at.exception
    cosine_table, correlation_table = frame_with(at, "similarity")
    x = token_matrices["L1.resid_post"][:, feature]
    for sae in ("L0.resid_post", "L2.resid_post"):
        others = token_matrices[sae]
        live = others.std(axis=0) > 0
        r = np.array([np.corrcoef(x, others[:, c])[0, 1] if live[c] else -np.inf
                      for c in range(others.shape[1])])  # fmt: skip
        rows = correlation_table[correlation_table["sae"] == sae]
        assert rows["feature"].tolist() == np.argsort(-r, kind="stable")[:3].tolist()
        assert rows["similarity"].tolist() == pytest.approx(np.sort(r)[::-1][:3], abs=1e-6)
        cos = unit(decoders[sae]) @ unit(decoders["L1.resid_post"][feature : feature + 1]).T
        rows = cosine_table[cosine_table["sae"] == sae]
        assert rows["feature"].iloc[0] == int(cos[:, 0].argmax())
        assert rows["similarity"].iloc[0] == pytest.approx(cos.max(), abs=1e-5)
    assert set(correlation_table["sae"]) == {"L0.resid_post", "L2.resid_post"}
    assert correlation_table["description"].str.len().gt(0).any()
    assert at.subheader and any(h.value == "Lineage across layers" for h in at.subheader)
    for table in (cosine_table, correlation_table):  # the link first, the id's description after
        assert table.columns.tolist() == ["link", "sae", "similarity", "feature", "description"]
    in_columns = [frame for column in at.columns for frame in column.dataframe]
    assert not any("similarity" in frame.value.columns for frame in in_columns)  # full width
