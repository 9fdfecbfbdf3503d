"""Feature atlas: UMAP coordinates of planted decoders, the maps a store keeps, the marks a
chart draws, the box selection, and the chart's data and encodings, checked against direct
numpy/pandas counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from explorer.analysis.atlas import (
    ATLAS_COLUMNS,
    AtlasSettings,
    atlas_coordinates,
    atlas_entry,
    atlas_marks,
    features_in_box,
    kept_atlas,
)
from explorer.charts.atlas import BOX, DEAD, NOT_SCORED, NOT_SPECIALIST, atlas_chart, colour_groups
from explorer.errors import InputError
from explorer.store.reader import Store
from explorer.store.writer import add_derived
from tests.planted import write_small_store

N_CLUSTERS, PER_CLUSTER, D_IN = 4, 40, 32


def clustered_decoder(seed: int = 0, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """[N_CLUSTERS * PER_CLUSTER, D_IN] rows around orthogonal directions (random norms),
    and each row's cluster."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(D_IN, N_CLUSTERS)))[0].T  # orthonormal rows
    cluster = np.repeat(np.arange(N_CLUSTERS), PER_CLUSTER)
    rows = centres[cluster] + noise * rng.normal(size=(len(cluster), D_IN))
    return rows * rng.uniform(0.5, 3.0, size=(len(cluster), 1)), cluster


def test_identical_decoder_rows_sit_at_one_point() -> None:
    decoder, _ = clustered_decoder()
    decoder[100] = decoder[7]  # a planted pair of identical decoder rows
    decoder[150] = 2.5 * decoder[130]  # the same direction at another norm (rounding apart)
    other = decoder[::-1].copy()  # a second SAE in the same space holds feature 7's row too
    atlas = atlas_coordinates({"a": decoder, "b": other})
    points = atlas.set_index(["sae", "feature"])[["x", "y"]]
    spread = np.linalg.norm(points.max().to_numpy() - points.min().to_numpy())

    def gap(first: tuple[str, int], second: tuple[str, int]) -> float:
        return float(np.linalg.norm(points.loc[first].to_numpy() - points.loc[second].to_numpy()))

    assert spread > 1.0
    assert gap(("a", 7), ("a", 100)) == 0.0
    assert gap(("a", 7), ("b", len(decoder) - 1 - 7)) == 0.0
    assert gap(("a", 130), ("a", 150)) / spread < 0.01
    assert gap(("a", 7), ("a", 130)) / spread > 0.05  # two planted clusters apart


def test_planted_clusters_stay_together_on_the_map() -> None:
    decoder, cluster = clustered_decoder()
    atlas = atlas_coordinates({"sae": decoder}, AtlasSettings(n_neighbors=10, seed=3))
    assert list(atlas.columns) == ATLAS_COLUMNS
    assert atlas["feature"].tolist() == list(range(len(decoder)))
    xy = atlas[["x", "y"]].to_numpy(dtype=float)
    distances = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    nearest_same = cluster[distances.argmin(axis=1)] == cluster
    assert nearest_same.mean() >= 0.95
    centroids = np.array([xy[cluster == c].mean(axis=0) for c in range(N_CLUSTERS)])
    within = max(np.linalg.norm(xy[cluster == c] - centroids[c], axis=1).mean() for c in range(4))
    between = min(
        np.linalg.norm(centroids[i] - centroids[j]) for i in range(4) for j in range(i + 1, 4)
    )
    assert between > 2 * within


def test_a_seeded_map_is_reproducible() -> None:
    decoder, _ = clustered_decoder()
    first = atlas_coordinates({"sae": decoder}, AtlasSettings(seed=5))
    again = atlas_coordinates({"sae": decoder}, AtlasSettings(seed=5))
    pd.testing.assert_frame_equal(first, again)


def test_bad_decoders_and_settings_are_refused() -> None:
    with pytest.raises(InputError, match="at least one"):
        atlas_coordinates({})
    with pytest.raises(InputError, match="share a space"):
        atlas_coordinates({"a": np.ones((5, 8)), "b": np.ones((5, 16))})
    with pytest.raises(InputError, match="not a \\[features, d_in\\] matrix"):
        atlas_coordinates({"a": np.ones(8)})
    with pytest.raises(InputError, match="n_neighbors"):
        AtlasSettings(n_neighbors=1)


def test_three_directions_lie_on_a_line() -> None:
    atlas = atlas_coordinates({"sae": np.eye(3)})
    assert sorted(atlas["x"]) == [0.0, 1.0, 2.0] and atlas["y"].tolist() == [0.0] * 3


def grid_atlas(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {"sae": "s", "feature": np.arange(n), "x": rng.normal(size=n), "y": rng.normal(size=n)}
    )


def test_marks_sample_large_atlases_and_count_every_feature() -> None:
    atlas = grid_atlas(24_576)
    marks = atlas_marks(atlas, max_points=5000, bins=60)
    assert marks.sampled and marks.n_features == 24_576
    assert len(marks.points) == 5000 and marks.points["feature"].is_unique
    assert set(marks.points["feature"]) <= set(atlas["feature"])
    assert marks.cells["n_features"].sum() == 24_576
    assert (marks.cells["n_features"] > 0).all() and len(marks.cells) <= 60 * 60
    cell = marks.cells.iloc[len(marks.cells) // 2]  # one cell against a direct count
    inside = atlas["x"].between(cell["x_low"], cell["x_high"]) & atlas["y"].between(
        cell["y_low"], cell["y_high"]
    )
    assert cell["n_features"] <= inside.sum() <= cell["n_features"] + 4  # edge points
    again = atlas_marks(atlas, max_points=5000, bins=60)
    assert again.points["feature"].tolist() == marks.points["feature"].tolist()


def test_small_atlases_draw_every_feature() -> None:
    atlas = grid_atlas(300)
    marks = atlas_marks(atlas, max_points=5000)
    assert not marks.sampled and marks.points["feature"].tolist() == list(range(300))


def test_a_box_lists_the_features_inside_it() -> None:
    atlas = pd.DataFrame(
        {"sae": "s", "feature": [0, 1, 2, 3], "x": [0.0, 1.0, 2.0, 1.5], "y": [0.0, 1.0, 2.0, 5.0]}
    )
    assert features_in_box(atlas, (0.5, 2.0), (0.5, 2.5))["feature"].tolist() == [1, 2]
    assert features_in_box(atlas, (2.0, 0.5), (2.5, 0.5))["feature"].tolist() == [1, 2]
    assert features_in_box(atlas, (5.0, 6.0), (5.0, 6.0)).empty


def chart_points() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sae": ["L0", "L0", "L1", "L1"],
            "feature": [3, 4, 5, 6],
            "x": [0.0, 1.0, 2.0, 3.0],
            "y": [0.0, 1.0, 0.5, 2.0],
            "token_freq": [0.0, 3e-6, 5e-5, 0.5],
            "kind": [DEAD, "number", "word", "number"],
            "description": ["dead", "digits · 7", "the", "1 · 2"],
            "specialist_category": [None, "math", None, "code"],
            "f1": [np.nan, 0.1, 0.85, 0.5],
        }
    )


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("kind", [DEAD, "number", "word", "number"]),
        ("category", [NOT_SPECIALIST, "math", NOT_SPECIALIST, "code"]),
        ("frequency", [DEAD, "< 1e-5", "1e-5 to 1e-4", ">= 0.1"]),
        ("score", [NOT_SCORED, "F1 < 0.2", "F1 >= 0.8", "0.4 to 0.6"]),
    ],
)
def test_colour_groups(by, expected) -> None:
    groups, domain, colours = colour_groups(chart_points(), by)
    assert groups.tolist() == expected
    assert set(expected) <= set(domain) and len(domain) == len(colours)
    grey = {DEAD, NOT_SPECIALIST, NOT_SCORED}
    assert [colours[domain.index(g)] for g in expected if g in grey] == ["#c7c7c7"] * sum(
        g in grey for g in expected
    )


def test_chart_data_and_encodings() -> None:
    points = chart_points()
    marks = atlas_marks(points, bins=4)
    spec = atlas_chart(marks.points, marks.cells, "kind").to_dict()
    cells, features = spec["layer"]
    encoding = features["encoding"]
    assert encoding["color"]["field"] == "colour" and encoding["size"]["field"] == "token_freq"
    assert encoding["href"]["field"] == "href"
    assert encoding["order"]["field"] == "coloured"  # coloured points over the grey ones
    assert (encoding["x"]["field"], encoding["y"]["field"]) == ("x", "y")
    tooltips = {tip["field"] for tip in encoding["tooltip"]}
    assert {"sae", "feature", "description", "token_freq"} <= tooltips
    (box,) = spec["params"]  # the box selection, on the points' layer
    assert (box["name"], box["views"]) == (BOX, [features["name"]])
    assert box["select"] == {"type": "interval", "encodings": ["x", "y"]}
    rows = spec["datasets"][features["data"]["name"]]
    assert [row["href"] for row in rows] == [
        "feature?sae=L0&feature=3",
        "feature?sae=L0&feature=4",
        "feature?sae=L1&feature=5",
        "feature?sae=L1&feature=6",
    ]
    assert [row["description"] for row in rows] == points["description"].tolist()
    assert [row["coloured"] for row in rows] == [False, True, True, True]  # the dead one: grey
    assert sum(row["n_features"] for row in spec["datasets"][cells["data"]["name"]]) == 4


def test_a_store_keeps_the_maps_a_build_computed(tmp_path) -> None:
    path = tmp_path / "planted.duckdb"
    write_small_store(path, ["code", "prose"], sae="s0", d_sae=8)
    decoder, _ = clustered_decoder()
    decoders = {"s0": decoder[:8], "s1": decoder[8:20]}
    entry = atlas_entry(decoders)
    with Store.open(path) as store:
        assert kept_atlas(store, ["s0"]) is None  # nothing kept yet: the page lays it out
    add_derived(path, [entry])
    with Store.open(path) as store:
        own = kept_atlas(store, ["s1"])
        joint = kept_atlas(store, ["s0", "s1"])
        assert kept_atlas(store, ["s2"]) is None
        assert kept_atlas(store, ["s0"], AtlasSettings(seed=1)) is None  # other settings
    pd.testing.assert_frame_equal(own, atlas_coordinates({"s1": decoders["s1"]}))
    pd.testing.assert_frame_equal(joint, atlas_coordinates(decoders))
