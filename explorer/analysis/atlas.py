"""The feature atlas: a 2-D map of SAE decoder directions, and what a view of it draws.

Owns `atlas_coordinates` (UMAP of the unit decoder rows of one or several SAEs, cosine
metric, seeded, exact duplicate directions placed at one point), the sampling and binning
that keep a chart of 24,576+ features light (`atlas_marks`), and the features inside a box
selection (`features_in_box`). A build keeps the maps in the store as the derived analysis
`ATLAS` (`atlas_entry`, the decoders passed in); `kept_atlas` reads them back. Definitions
are in docs/methods.md#feature-atlas.

It loads no SAE (callers pass decoder matrices as numpy arrays) and draws nothing; `umap` is
imported by the function that needs it, so importing this module is cheap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from explorer.errors import InputError, quoted
from explorer.store.derived import Derived
from explorer.store.reader import Store

ATLAS_COLUMNS = ["sae", "feature", "x", "y"]
ATLAS = "atlas"  # the derived analysis a store keeps the maps under
ATLAS_VERSION = 1  # bump when the layout changes, so kept maps are recomputed
EPS = 1e-12


@dataclass(frozen=True)
class AtlasSettings:
    """UMAP's parameters for the atlas (docs/methods.md#feature-atlas).

    Args:
        n_neighbors: neighbours of each direction in UMAP's graph (local vs global shape).
        min_dist: how tightly UMAP packs neighbouring points in 2-D.
        seed: UMAP's random state (a seeded run is single-threaded and reproducible).
    """

    n_neighbors: int = 15
    min_dist: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.n_neighbors <= 200:
            raise InputError(f"n_neighbors must be in 2..200, not {self.n_neighbors:g}.")
        if not 0.0 <= self.min_dist <= 1.0:
            raise InputError(f"min_dist must be in [0, 1], not {self.min_dist:g}.")


DEFAULT_ATLAS = AtlasSettings()


def _unit_rows(decoder: np.ndarray) -> np.ndarray:
    rows = np.asarray(decoder, dtype=np.float32)  # [d_sae, d_in]
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), EPS)


def atlas_coordinates(
    decoders: Mapping[str, np.ndarray], settings: AtlasSettings = DEFAULT_ATLAS
) -> pd.DataFrame:
    """sae, feature, x, y of every decoder row of `decoders` ({sae: W_dec [d_sae, d_in]}),
    embedded together in one map.

    Rows are scaled to unit length, so the map reflects directions only (a feature's decoder
    norm is not its importance), and UMAP places them by cosine distance. Directions that are
    exactly equal are embedded once and share a point. The SAEs must live in one space (the
    same d_in)."""
    if not decoders:
        raise InputError("The atlas needs at least one SAE's decoder.")
    widths = {name: np.shape(decoder) for name, decoder in decoders.items()}
    bad = [name for name, shape in widths.items() if len(shape) != 2 or shape[0] == 0]
    if bad:
        raise InputError(f"The decoder of {quoted(bad[0])} is not a [features, d_in] matrix.")
    if len({shape[1] for shape in widths.values()}) > 1:
        raise InputError(
            "The SAEs of one atlas must share a space (the same d_in); their widths are "
            + ", ".join(f"{quoted(name)}: {shape[1]:d}" for name, shape in widths.items())
            + ". Map them one at a time."
        )
    unit = np.concatenate([_unit_rows(decoder) for decoder in decoders.values()])  # [n, d_in]
    distinct, inverse = np.unique(unit, axis=0, return_inverse=True)  # duplicates share a row
    points = _embed(distinct, settings)[inverse.reshape(-1)]
    return pd.DataFrame(
        {
            "sae": np.repeat(list(decoders), [shape[0] for shape in widths.values()]),
            "feature": np.concatenate([np.arange(shape[0]) for shape in widths.values()]),
            "x": points[:, 0].astype(np.float32),
            "y": points[:, 1].astype(np.float32),
        }
    )


def _embed(rows: np.ndarray, settings: AtlasSettings) -> np.ndarray:
    """[n, 2] UMAP coordinates of `rows`; fewer than 4 distinct rows are laid on a line (UMAP's
    spectral layout needs more points than its 2 dimensions + 1)."""
    n = rows.shape[0]
    if n < 4:
        return np.column_stack([np.arange(n, dtype=np.float32), np.zeros(n, np.float32)])
    import umap

    reducer = umap.UMAP(
        n_neighbors=min(settings.n_neighbors, n - 1),
        min_dist=settings.min_dist,
        metric="cosine",
        init="pca",  # as fast as the spectral layout here, and never fails on split graphs
        random_state=settings.seed,
        n_jobs=1,
    )
    return reducer.fit_transform(rows)


def _same_width(decoders: Mapping[str, np.ndarray]) -> bool:
    return len({np.shape(decoder)[-1] for decoder in decoders.values()}) == 1


def atlas_key(settings: AtlasSettings = DEFAULT_ATLAS) -> str:
    """The key a map laid out under `settings` is kept under."""
    return json.dumps({"version": ATLAS_VERSION, "settings": asdict(settings)}, sort_keys=True)


def atlas_entry(
    decoders: Mapping[str, np.ndarray], settings: AtlasSettings = DEFAULT_ATLAS
) -> Derived:
    """What a build keeps for the atlas page: `per_sae`, each SAE's own map (sae, feature,
    x, y), and `joint`, the map of all of them together when there are several in one space.
    `decoders` are the store's SAEs' W_dec ({sae: [d_sae, d_in]}, build order)."""
    frames = {
        "per_sae": pd.concat(
            [atlas_coordinates({name: decoder}, settings) for name, decoder in decoders.items()],
            ignore_index=True,
        )
    }
    if len(decoders) > 1 and _same_width(decoders):
        frames["joint"] = atlas_coordinates(decoders, settings)
    return Derived(ATLAS, atlas_key(settings), frames, {"saes": list(decoders)})


def kept_atlas(
    store: Store, saes: list[str], settings: AtlasSettings = DEFAULT_ATLAS
) -> pd.DataFrame | None:
    """The kept map of `saes` (one SAE's own map, or the joint map of exactly the SAEs it was
    built from) laid out under `settings`; None when the store keeps none, so the caller lays
    it out from the loaded decoders."""
    kept = store.derived(ATLAS, atlas_key(settings))
    if kept is None:
        return None
    if len(saes) == 1:
        frame = kept.frames["per_sae"]
        rows = frame[frame["sae"] == saes[0]].reset_index(drop=True)
        return rows if len(rows) else None
    if "joint" in kept.frames and list(kept.values["saes"]) == list(saes):
        return kept.frames["joint"]
    return None


@dataclass(frozen=True)
class AtlasMarks:
    """What an atlas chart draws: `points` (a seeded sample of at most `max_points` features,
    every one when there are fewer), `cells` (every feature counted in a grid of `bins` x
    `bins` cells over the map, empty cells dropped), and the totals a caption states."""

    points: pd.DataFrame
    cells: pd.DataFrame
    n_features: int

    @property
    def sampled(self) -> bool:
        return len(self.points) < self.n_features


def atlas_marks(
    atlas: pd.DataFrame, max_points: int = 5000, bins: int = 60, seed: int = 0
) -> AtlasMarks:
    """The marks of a chart of `atlas` (rows with x, y and any columns to show): all rows when
    there are at most `max_points`, else a seeded uniform sample of `max_points`; and the
    count of every row per grid cell (x_low, x_high, y_low, y_high, n_features)."""
    points = atlas
    if len(atlas) > max_points:
        order = np.random.default_rng(seed).permutation(len(atlas))[:max_points]
        points = atlas.iloc[np.sort(order)]
    x_edges = np.linspace(atlas["x"].min(), atlas["x"].max(), bins + 1)
    y_edges = np.linspace(atlas["y"].min(), atlas["y"].max(), bins + 1)
    counts, _, _ = np.histogram2d(atlas["x"], atlas["y"], bins=[x_edges, y_edges])
    ix, iy = np.nonzero(counts)
    cells = pd.DataFrame(
        {
            "x_low": x_edges[ix],
            "x_high": x_edges[ix + 1],
            "y_low": y_edges[iy],
            "y_high": y_edges[iy + 1],
            "n_features": counts[ix, iy].astype(np.int64),
        }
    )
    return AtlasMarks(points.reset_index(drop=True), cells, len(atlas))


def features_in_box(
    atlas: pd.DataFrame, x: tuple[float, float], y: tuple[float, float]
) -> pd.DataFrame:
    """The rows of `atlas` inside the box x[0]..x[1], y[0]..y[1] (ends included, in either
    order), drawn or not: a selection lists every feature it covers."""
    x_low, x_high = sorted(x)
    y_low, y_high = sorted(y)
    inside = atlas["x"].between(x_low, x_high) & atlas["y"].between(y_low, y_high)
    return atlas[inside].reset_index(drop=True)
