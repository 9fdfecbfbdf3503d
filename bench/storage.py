"""Bytes per activation row of a store: the whole file and each table.

By default builds the store the way a user does (`build_store`: the demo model and its four
trained SAEs) over a corpus of >= 50M activation rows (`bundled+arithmetic:20000`, about a
minute), so the sizes are those of real activations: features that fire in runs over a text,
float32 values as the SAEs computed them. `--store` measures a store built elsewhere instead
(e.g. the synthetic store of `bench.store_queries`).

In the same run, the baseline: the same tables copied into a file with DuckDB's default row
groups (122,880 rows), the layout before `ROW_GROUP_ROWS`; and the raw columns of `acts` in
memory (uint8 + 2 x uint32 + uint16 + float32 = 15 bytes a row). Each table's share is what
it adds to an empty file, copied alone with the store's row groups.

    python -m bench.storage                   # writes bench/results/storage.json
    python -m bench.storage --store cache/bench/store_queries.duckdb \\
        --results bench/results/storage_synthetic.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import duckdb

from explorer.build.extract import BuildSettings
from explorer.build.single import build_store
from explorer.store.reader import Store
from explorer.store.schema import ROW_GROUP_ROWS, sql_literal

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROW_GROUP_ROWS = 122_880  # DuckDB's
RAW_BYTES_PER_ROW = 15  # sae_idx uint8, feature and text_id uint32, pos uint16, value float32
TARGET_BYTES_PER_ROW = 8.0


def copy_tables(
    source: Path, target: Path, row_group_rows: int, tables: list[str], limit: str = ""
) -> int:
    """Copy `tables` of `source` (row order kept) into a new file `target` with
    `row_group_rows`-row groups, checkpoint it and return its size in bytes."""
    with duckdb.connect() as con:
        target_sql = sql_literal(str(target))
        con.execute(f"ATTACH {target_sql} AS target (ROW_GROUP_SIZE {row_group_rows})")
        con.execute(f"ATTACH {sql_literal(str(source))} AS source (READ_ONLY)")
        for table in tables:
            con.execute(f"CREATE TABLE target.{table} AS SELECT * FROM source.{table}{limit}")
        con.execute("CHECKPOINT target")
    return target.stat().st_size


def table_bytes(path: Path, table: str, row_group_rows: int = ROW_GROUP_ROWS) -> int:
    """What `table` adds to a DuckDB file: a fresh file holding a copy (same row order) minus
    one holding an empty copy (the file's fixed blocks)."""
    with tempfile.TemporaryDirectory() as folder:
        full, empty = (
            copy_tables(path, Path(folder) / f"{name}.duckdb", row_group_rows, [table], limit)
            for name, limit in (("full", ""), ("empty", " LIMIT 0"))
        )
    return full - empty


def measure(path: Path) -> dict[str, object]:
    with Store.open(path) as store:
        counts = store.table_counts()
    n_rows = counts["acts"]
    file_bytes = path.stat().st_size
    with tempfile.TemporaryDirectory() as folder:
        default_bytes = copy_tables(
            path, Path(folder) / "default.duckdb", DEFAULT_ROW_GROUP_ROWS, sorted(counts)
        )
    per_table = {table: table_bytes(path, table) for table in sorted(counts)}
    bytes_per_row = file_bytes / n_rows
    return {
        "acts_rows": n_rows,
        "file_bytes": file_bytes,
        "bytes_per_act_row": round(bytes_per_row, 3),
        "target_bytes_per_act_row": TARGET_BYTES_PER_ROW,
        "meets_target": bytes_per_row <= TARGET_BYTES_PER_ROW,
        "baseline_default_row_groups": {
            "file_bytes": default_bytes,
            "bytes_per_act_row": round(default_bytes / n_rows, 3),
            "store_over_baseline": round(file_bytes / default_bytes, 3),
        },
        "raw_columns_bytes_per_act_row": RAW_BYTES_PER_ROW,
        "store_over_raw_columns": round(bytes_per_row / RAW_BYTES_PER_ROW, 3),
        "tables": {
            table: {
                "rows": counts[table],
                "bytes": size,
                "bytes_per_own_row": round(size / counts[table], 2) if counts[table] else None,
                "bytes_per_act_row": round(size / n_rows, 3),
            }
            for table, size in per_table.items()
        },
        "table_counts": counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="measure this store instead of building one")
    parser.add_argument("--corpus", default="bundled+arithmetic:20000")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "cache/bench/storage.duckdb")
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "bench/results/storage.json")
    args = parser.parse_args()
    build_seconds = None
    path = args.store
    if path is None:
        path = args.out
        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        build_store("demo", args.corpus, path, BuildSettings())
        build_seconds = round(time.perf_counter() - started, 1)
    with Store.open(path) as store:
        meta = store.meta()
    result = {
        "store": str(path),
        "source": meta.get("source"),
        "corpus": meta.get("corpus"),
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
        "duckdb": duckdb.__version__,
        "row_group_rows": ROW_GROUP_ROWS,
        "build_seconds": build_seconds,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        **measure(path),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    base = result["baseline_default_row_groups"]
    print(
        f"{result['acts_rows']:,} activation rows: {result['bytes_per_act_row']:.2f} bytes a row "
        f"(default row groups: {base['bytes_per_act_row']:.2f}; target "
        f"{TARGET_BYTES_PER_ROW}); wrote {args.results}"
    )
    print("| table | rows | bytes / row | bytes per `acts` row |\n|---|---|---|---|")
    for table, size in result["tables"].items():
        own = "" if size["bytes_per_own_row"] is None else f"{size['bytes_per_own_row']:.2f}"
        print(f"| {table} | {size['rows']:,} | {own} | {size['bytes_per_act_row']:.3f} |")


if __name__ == "__main__":
    main()
