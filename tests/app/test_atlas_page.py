"""Feature atlas page: the counts on the page, the map's points with their descriptions and
links, an unknown SAE in the link, and the box selection's list with its CSV file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from explorer.analysis.descriptions import load_descriptions
from explorer.store.reader import Store

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "atlas.py")
SAES = ["L0.resid_post", "L1.resid_post", "L2.resid_post"]


def metrics(at: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def map_points(at: AppTest) -> pd.DataFrame:
    """The rows of the map's points layer, from the chart's Vega-Lite spec."""
    (chart,) = at.get("vega_lite_chart")
    marks = {layer["mark"]["type"] for layer in json.loads(chart.proto.spec)["layer"]}
    assert "circle" in marks
    frames = [
        convert_arrow_bytes_to_pandas_df(dataset.data.data) for dataset in chart.proto.datasets
    ]
    (points,) = [frame for frame in frames if "href" in frame]
    return points


def test_one_sae_maps_every_feature_with_its_description(page, store_path) -> None:
    at = page.run()
    assert not at.exception, at.exception
    with Store.open(store_path) as store:
        frequency = store.frequency_table()
        last = frequency[frequency["sae"] == SAES[-1]]
        described = load_descriptions(store, SAES[-1])
    assert metrics(at) == {
        "features on the map": "128",
        "SAEs": "1",
        "that fire on the corpus": str(int((last["n_active_tokens"] > 0).sum())),
    }
    assert any("128 points, one per feature" in caption.value for caption in at.caption)
    points = map_points(at).sort_values("feature")
    assert points["feature"].tolist() == list(range(128))
    assert set(points["sae"]) == {SAES[-1]}
    expected = described.set_index("feature")["description"]
    assert points.set_index("feature")["description"].equals(expected.rename("description"))
    assert points["href"].iloc[5] == f"feature?sae={SAES[-1]}&feature=5"
    assert any("Drag a box" in info.value for info in at.info)


def test_all_saes_together_and_a_colouring_from_the_link(page, store_path) -> None:
    page.query_params["sae"] = "all SAEs together"
    page.query_params["colour"] = "frequency"
    at = page.run()
    assert not at.exception, at.exception
    with Store.open(store_path) as store:
        live = int((store.frequency_table()["n_active_tokens"] > 0).sum())
    assert metrics(at) == {
        "features on the map": "384",
        "SAEs": "3",
        "that fire on the corpus": str(live),
    }
    points = map_points(at)
    assert sorted(points["sae"].unique()) == SAES and len(points) == 384
    dead = points["token_freq"] == 0
    assert (points.loc[dead, "colour"] == "dead").all()
    assert not points.loc[~dead, "colour"].eq("dead").any()


def test_an_unknown_sae_in_the_link_gets_a_warning_and_the_default(page) -> None:
    page.query_params["sae"] = "L9.nope"
    at = page.run()
    assert not at.exception, at.exception
    assert any("L9.nope" in warning.value for warning in at.warning)
    assert metrics(at)["features on the map"] == "128"
    assert set(map_points(at)["sae"]) == {SAES[-1]}


def _selection_script() -> None:
    import pandas as pd

    from explorer.ui.atlas_views import show_selection

    show_selection(
        pd.DataFrame(
            {
                "sae": ["L0.resid_post", "L0.resid_post"],
                "feature": [4, 9],
                "description": ["digits · *bold*", "the"],
                "kind": ["number", "word"],
                "token_freq": [0.01, 0.2],
                "x": [1.0, 2.0],
                "y": [0.5, 0.7],
            }
        ),
        "L0.resid_post",
    )


def test_the_selection_lists_its_features_with_descriptions_and_a_csv(page) -> None:
    at = AppTest.from_function(_selection_script, default_timeout=60).run()
    assert not at.exception, at.exception
    assert "2 features in the box" in at.markdown[0].value
    table = at.dataframe[0].value
    assert table["feature"].tolist() == [4, 9]
    assert table["description"].tolist() == ["digits · *bold*", "the"]
    assert table["link"].tolist() == [
        "feature?sae=L0.resid_post&feature=4",
        "feature?sae=L0.resid_post&feature=9",
    ]
    (button,) = at.get("download_button")
    assert "Download the selection" in button.proto.label


def test_a_label_saved_in_another_session_shows_on_the_map(
    store_path, tiny_bundle_path, tmp_path, monkeypatch
) -> None:
    """The map is made once and shared, keyed by the store's content with its user data: a
    label saved after a session drew the map is its point's hover text on the next run."""
    copy = tmp_path / "labelled.duckdb"
    shutil.copyfile(store_path, copy)
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(copy))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    before = map_points(at).set_index("feature")["description"]
    with Store.open(copy) as store:  # another session's save
        store.save_label(SAES[-1], 7, "planted <label>")
    at.run()
    after = map_points(at).set_index("feature")["description"]
    assert after[7] != before[7]
    assert "planted <label>" in after[7]
    assert after.drop(index=7).equals(before.drop(index=7))
