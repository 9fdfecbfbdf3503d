"""Query times of the specialist pages on a built store, and the size of their tables.

Times, as the pages call them (DataFrame included, 3 warm-up calls, no `st.cache_data`),
the store reads behind the specialist measures, `load_specialists` (the reads plus every
measure over all SAEs x features x categories) and each page's whole computation; then
measures what `feature_text`, `category_ranks` and `feature_label` cost on disk (each copied
alone into a fresh DuckDB file) against `acts`. Prints a markdown table and writes JSON.

    python -m bench.specialist_queries cache/demo.duckdb
    python -m bench.specialist_queries STORE --runs 30 --results /tmp/specialists.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bench.storage import table_bytes
from explorer.analysis.frequency import (
    default_rank_ranges,
    frequency_histogram,
    frequency_specialization_correlation,
    frequency_summary,
    kind_by_frequency_band,
    most_frequent_coverage,
    parse_rank_ranges,
    rank_band_counts,
    strongest_features,
)
from explorer.analysis.specialists import (
    SpecialistSettings,
    category_matrix,
    layer_progression,
    load_specialists,
    top_specialists,
)
from explorer.store.reader import Store

REPO_ROOT = Path(__file__).resolve().parents[1]
DERIVED_TABLES = ("acts", "feature_text", "category_ranks", "feature_label")


def timed(call: Callable[[], object], runs: int, warmup: int = 3) -> dict[str, float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (runs - 1))]}


def page_calls(store: Store) -> list[tuple[str, Callable[[], object]]]:
    settings = SpecialistSettings()
    deepest = store.saes()["sae"].iloc[-1]

    def specialists_page() -> None:
        result = load_specialists(store, settings)
        matrix = category_matrix(result.table)
        layer_progression(matrix)
        top_specialists(result.table, 5)
        strongest_features(result.features, 5)
        most_frequent_coverage(result.features, result.table)

    def frequency_page() -> None:
        features = load_specialists(store, settings).features
        features = features[features["sae"] == deepest]
        frequency_summary(features)
        frequency_specialization_correlation(features)
        ranges = default_rank_ranges(len(features))
        rank_band_counts(features, parse_rank_ranges(ranges, len(features)))
        kind_by_frequency_band(features)
        frequency_histogram(features)

    return [
        ("category_counts, relative threshold 0.5", lambda: store.category_counts(0.5)),
        ("category_counts, absolute threshold 0.1", lambda: store.category_counts(0.1, False)),
        ("label_counts", store.label_counts),
        ("feature_labels('num:')", lambda: store.feature_labels("num:")),
        ("frequency_table", store.frequency_table),
        ("load_specialists (the reads + every measure)", lambda: load_specialists(store, settings)),
        ("Specialist heatmaps page, uncached", specialists_page),
        ("Frequency vs specialization page, uncached", frequency_page),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--results", type=Path, default=REPO_ROOT / "bench/results/specialist_queries.json"
    )
    args = parser.parse_args()
    with Store.open(args.store) as store:
        counts = store.table_counts()
        queries = {name: timed(call, args.runs) for name, call in page_calls(store)}
    sizes = {table: table_bytes(args.store.absolute(), table) for table in DERIVED_TABLES}
    result = {
        "store": str(args.store),
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "runs": args.runs,
        "table_counts": counts,
        "queries": queries,
        "table_bytes": sizes,
        "file_bytes": args.store.stat().st_size,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{counts['acts']:,} activation rows, {counts['texts']:,} texts; medians (p90) ms")
    print("| query | median (p90) |\n|---|---|")
    for name, timing in queries.items():
        print(f"| {name} | {timing['median_ms']:.1f} ({timing['p90_ms']:.1f}) |")
    print("| table | rows | bytes / row | bytes per `acts` row |\n|---|---|---|---|")
    for table, size in sizes.items():
        rows = counts[table]
        print(f"| {table} | {rows:,} | {size / rows:.2f} | {size / counts['acts']:.2f} |")


if __name__ == "__main__":
    main()
