"""Comparing SAEs side by side, on the planted store of `test_rankings` with quality set.

The SAEs are added deepest first (s1 at layer 1, then s0 at layer 0) so the table's layer
order is checked. Under the default settings (the notebook score, min_score 3, min_support
3) each SAE holds one planted specialist: s0's code feature 2 and s1's prose feature 0.
Every column is checked against the same question answered with pandas / scipy over the
planted activations, and the charts against the table they draw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from explorer.analysis.compare import (
    COMPARE_COLUMNS,
    QUALITY_METRICS,
    compare_saes,
    quality_sample_note,
)
from explorer.analysis.specialists import SpecialistSettings, category_matrix, load_specialists
from explorer.charts import feature_href
from explorer.charts.compare import quality_chart, specialists_per_category_chart
from explorer.store.reader import Store
from explorer.store.schema import SaeInfo
from tests.unit.test_rankings import CATEGORIES, make_planted
from tests.unit.test_specialists import Planted, text_activations, write_planted

QUALITY = {
    "s0": {"l0": 3.5, "explained_variance": 0.91, "ce_loss_recovered": 0.8, "dead_fraction": 1 / 6,
           "kl_divergence": 0.2, "l2_ratio": 0.93, "dense_fraction": 0.05, "quality_texts": 40},
    "s1": {"l0": 1.5, "explained_variance": 0.72, "ce_loss_recovered": 0.6, "dead_fraction": 0.5,
           "kl_divergence": 0.4, "l2_ratio": 1.02, "dense_fraction": 0.0, "quality_texts": 40},
}  # fmt: skip


# the notebook score, which `expected_row` recomputes from the planted rows
NOTEBOOK = SpecialistSettings(measure="score", min_support=3)


@pytest.fixture(scope="module")
def planted() -> Planted:
    return make_planted(
        saes=[
            SaeInfo("s1", "blocks.1.hook_resid_post", 1, 8, 4, **QUALITY["s1"]),
            SaeInfo("s0", "blocks.0.hook_resid_post", 0, 8, 6, **QUALITY["s0"]),
        ]
    )


@pytest.fixture(scope="module")
def store(planted: Planted, tmp_path_factory: pytest.TempPathFactory) -> Store:
    path: Path = tmp_path_factory.mktemp("compare") / "planted.duckdb"
    write_planted(path, planted)
    with Store.open(path) as opened:
        yield opened


@pytest.fixture(scope="module")
def comparison(store: Store) -> pd.DataFrame:
    return compare_saes(store.saes(), load_specialists(store, NOTEBOOK))


def expected_row(planted: Planted, sae: str, d_sae: int) -> dict[str, float]:
    """The specialist and frequency columns of one SAE, from the planted rows alone."""
    categories = planted.texts.set_index("text_id")["category"]
    rows = planted.acts[planted.acts["sae"] == sae]
    counts = rows.groupby("feature").size()
    ordered = sorted(counts.index, key=lambda f: (-counts[f], f))
    freq_rank = {f: rank for rank, f in enumerate(ordered, start=1)}
    best_score, is_specialist, specialist_categories = {}, {}, set()
    for feature in counts.index:
        acts = text_activations(planted, sae, feature)
        strong = categories[acts.index[acts >= np.float32(0.5) * acts.max()]]
        active = categories[acts.index[acts > 0]]
        # a cell is tested when the feature is active on >= 3 texts of the category
        tested = [c for c in CATEGORIES if (active == c).sum() >= 3]
        scores = {c: int((strong == c).sum()) - int((strong != c).sum()) for c in tested}
        chosen = [c for c in tested if scores[c] >= 3 and (strong == c).sum() >= 3]
        best_score[feature] = max(scores.values()) if scores else np.nan
        is_specialist[feature] = bool(chosen)
        specialist_categories |= set(chosen)
    specialists = [f for f in counts.index if is_specialist[f]]
    general = [f for f in counts.index if not is_specialist[f]]
    alive = sorted(counts.index)
    token_freq = [counts[f] / len(planted.tokens) for f in alive]
    rho, p_value = np.nan, np.nan
    scored = [f for f in alive if not np.isnan(best_score[f])]
    if len(scored) >= 3:
        rho, p_value = stats.spearmanr(
            [token_freq[alive.index(f)] for f in scored], [best_score[f] for f in scored]
        )
    return {
        "n_features": d_sae,
        "n_alive": len(alive),
        "n_specialists": len(specialists),
        "pct_specialists": 100 * len(specialists) / len(alive),
        "categories_with_specialists": len(specialist_categories),
        "n_categories": len(CATEGORIES),
        "median_rank_specialists": float(np.median([freq_rank[f] for f in specialists])),
        "median_rank_general": float(np.median([freq_rank[f] for f in general])),
        "spearman_rho": rho,
        "spearman_p": p_value,
        "max_score": float(np.nanmax(list(best_score.values()))),
    }


def test_one_row_per_sae_by_layer_with_its_quality(comparison: pd.DataFrame) -> None:
    assert comparison.columns.tolist() == COMPARE_COLUMNS
    assert comparison["sae"].tolist() == ["s0", "s1"]
    assert comparison["layer"].tolist() == [0, 1]
    for row in comparison.itertuples():
        for metric in QUALITY_METRICS:
            assert getattr(row, metric) == pytest.approx(QUALITY[row.sae][metric])


@pytest.mark.parametrize(("sae", "d_sae"), [("s0", 6), ("s1", 4)])
def test_specialist_and_frequency_columns_equal_an_independent_count(
    comparison: pd.DataFrame, planted: Planted, sae: str, d_sae: int
) -> None:
    row = comparison.set_index("sae").loc[sae]
    expected = expected_row(planted, sae, d_sae)
    assert expected["n_specialists"] == 1  # the planted specialist, and only it
    for column, value in expected.items():
        if np.isnan(value):
            assert np.isnan(row[column]), column
        else:
            assert row[column] == pytest.approx(value), column


def test_a_stricter_measure_changes_the_counts(store: Store) -> None:
    strict = compare_saes(
        store.saes(), load_specialists(store, SpecialistSettings(measure="score", min_support=11))
    ).set_index("sae")
    assert strict["n_specialists"].tolist() == [0, 0]
    assert strict["categories_with_specialists"].tolist() == [0, 0]
    assert np.isnan(strict.loc["s0", "median_rank_specialists"])


def test_specialists_chart_links_each_bar_to_the_best_feature(store: Store) -> None:
    matrix = category_matrix(load_specialists(store, SpecialistSettings()).table)
    spec = specialists_per_category_chart(matrix).to_dict()
    assert spec["encoding"]["href"]["field"] == "href"
    assert spec["encoding"]["xOffset"]["sort"] == ["s0", "s1"]
    data = pd.DataFrame(next(iter(spec["datasets"].values())))
    assert len(data) == len(CATEGORIES) * 2
    for row in data.itertuples():
        assert row.href == feature_href(row.sae, row.best_feature)
    counts = data.set_index(["sae", "category"])["n_specialists"]
    assert counts[("s0", "code")] == 1 and counts[("s1", "prose")] == 1
    assert counts.sum() == 2
    assert {"title"} <= set(spec["encoding"]["y"]) and spec["encoding"]["tooltip"]


def test_quality_chart_draws_the_fraction_metrics(comparison: pd.DataFrame) -> None:
    spec = quality_chart(comparison).to_dict()
    data = pd.DataFrame(next(iter(spec["datasets"].values())))
    assert len(data) == 5 * 2  # EV, CE loss recovered, L2 ratio, dead and dense fractions
    for row in data.itertuples():
        metric = next(name for name, title in QUALITY_METRICS.items() if title == row.metric)
        assert row.value == pytest.approx(QUALITY[row.sae][metric])
    assert spec["encoding"]["x"]["sort"] == ["s0", "s1"]
    assert spec["encoding"]["y"]["title"] == "fraction or ratio"
    assert spec["encoding"]["y"]["scale"]["domain"] == [0, 1.02]  # the L2 ratio above 1 shows
    # every metric's whole name in the legend: Vega-Lite's default cuts labels at 160 px, and
    # "dense fraction (>10% of tokens)" in its 10 px font is about 180 px (under 7 px a letter)
    longest = max(len(title) for title in data["metric"])
    assert spec["encoding"]["color"]["legend"]["labelLimit"] >= 7 * longest


def test_the_quality_sample_is_described_from_the_build_settings(store: Store) -> None:
    saes = store.saes()
    note = quality_sample_note(saes, {"settings": '{"quality_per_category": 4, "quality_seed": 7}'})
    assert note.startswith("CE loss recovered, KL divergence and shrinkage: 40 texts, up to 4 of ")
    assert "(seed 7)" in note
    old = quality_sample_note(saes.assign(quality_texts=None), {"settings": "{}"})
    assert "first 32 texts" in old and "rebuild" in old
