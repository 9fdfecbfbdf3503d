"""Home page: builds the store on first run, then shows the model, SAEs and their quality."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from explorer.analysis.descriptions import DescriptionSettings, load_scores
from explorer.analysis.specialists import SpecialistSettings, load_specialists
from explorer.store.reader import Store
from tests.app.conftest import APP


@pytest.mark.slow
def test_first_run_builds_the_store_and_shows_quality(app_env):
    assert not app_env.store.exists()
    at = AppTest.from_file(app_env.app, default_timeout=180).run()
    assert not at.exception, at.exception
    assert app_env.store.exists()
    assert at.title[0].value == "SAE feature explorer"
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["layers"] == "3"
    assert int(metrics["texts"].replace(",", "")) > 500
    quality = at.dataframe[-2].value
    assert list(quality["sae"]) == ["L0.resid_post", "L1.resid_post", "L2.resid_post"]
    assert quality["l0"].round(2).tolist() == [8.0, 8.0, 8.0]
    categories = at.dataframe[-1].value
    assert {"python_code", "addition", "non_english"} <= set(categories["category"])


@pytest.mark.slow
def test_unknown_source_shows_a_message_not_a_traceback(app_env):
    at = AppTest.from_file(app_env.app, default_timeout=60).run()
    at.sidebar.text_input[0].set_value("registry:no-such-release:x").run()
    assert not at.exception
    assert any("no-such-release" in error.value for error in at.error)


def test_corrupted_store_shows_a_message(app_env):
    app_env.store.write_bytes(b"not a duckdb file" * 64)
    at = AppTest.from_file(app_env.app, default_timeout=60).run()
    assert not at.exception
    assert any(app_env.store.name in error.value for error in at.error)
    assert app_env.store.read_bytes().startswith(b"not a duckdb")


def test_home_suggests_each_sae_best_explained_feature_and_each_category_specialist(
    store_path, tiny_bundle_path, monkeypatch
):
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    monkeypatch.chdir(Path(APP).parent)
    with Store.open(store_path) as store:
        best = []
        for sae in store.saes()["sae"]:
            scores = load_scores(store, sae, DescriptionSettings())
            scored = scores[scores["scored"]].sort_values(
                ["f1", "balanced_accuracy", "held_active", "feature"],
                ascending=[False, False, False, True],
            )
            best.append((sae, int(scored["feature"].iloc[0])))
        table = load_specialists(store, SpecialistSettings()).table
    found = table[table["is_specialist"]].sort_values(
        ["family", "category", "score", "support", "layer", "feature"],
        ascending=[True, True, False, False, True, True],
    )
    strongest = found.drop_duplicates(["family", "category"])
    at = AppTest.from_file(APP, default_timeout=240).run()
    assert not at.exception, at.exception
    picks = at.dataframe[0].value
    assert list(zip(picks["sae"], picks["feature"], strict=True)) == [
        *best,
        *zip(strongest["sae"], strongest["feature"].astype(int), strict=True),
    ]
    assert picks["why"].iloc[len(best)] == (
        f"strongest {strongest['category'].iloc[0]} specialist "
        f"(score {strongest['score'].iloc[0]:.2f})"
    )
    assert picks["description"].str.len().gt(0).all()
    assert picks["link"].iloc[0] == f"feature?sae={best[0][0]}&feature={best[0][1]}"
    page_links = [link.label for link in at.get("page_link")]
    assert "Feature" in page_links and len(page_links) >= 10


def test_home_shows_each_sae_quality_with_the_sample_size_in_the_caption(
    store_path, tiny_bundle_path, monkeypatch
):
    """The store's quality table: one row per SAE with the measured numbers, and the quality
    sample's size said once in the caption rather than repeated in a column (the table then
    fits a 1440 px window)."""
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    monkeypatch.chdir(Path(APP).parent)
    with Store.open(store_path) as store:
        saes = store.saes()
    at = AppTest.from_file(APP, default_timeout=240).run()
    assert not at.exception, at.exception
    (quality,) = [df.value for df in at.dataframe if "kl_divergence" in df.value.columns]
    measured = ["l0", "explained_variance", "ce_loss_recovered", "kl_divergence", "l2_ratio",
                "dead_fraction", "dense_fraction"]  # fmt: skip
    assert quality.columns.tolist() == ["sae", "hook_name", "layer", "d_sae", *measured]
    pd.testing.assert_frame_equal(
        quality.reset_index(drop=True), saes[quality.columns].reset_index(drop=True)
    )
    (n_texts,) = saes["quality_texts"].unique()
    assert any(
        f"KL divergence and shrinkage: {int(n_texts):,} texts" in caption.value
        for caption in at.caption
    )
