"""Reads of a shard folder's Parquet files for the merge: per-feature statistics summed over
the shards, the running top-k merged, and the quality sums of one SAE. Each read takes its
own in-memory DuckDB connection; the shard format itself belongs to `explorer.build.shards`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import pandas as pd

# Merged per-feature statistics of one SAE: counts and sums add up, maxima take the max.
_MERGED_STATS_SQL = """
SELECT feature, sum(n_active_tokens)::BIGINT AS n_active_tokens,
    sum(n_active_texts)::BIGINT AS n_active_texts,
    CASE WHEN sum(n_active_tokens) > 0 THEN sum(act_sum) / sum(n_active_tokens) ELSE 0 END
        AS mean_active,
    max(act_max)::DOUBLE AS "max"
FROM read_parquet(?, hive_partitioning = false)
GROUP BY feature ORDER BY feature
"""

# Each feature's k largest activations over the shards' running top-k (ties by text, pos).
_MERGED_TOPK_SQL = """
SELECT feature::BIGINT AS feature, merged_rank AS rank, text_id::BIGINT AS text_id,
    pos::BIGINT AS pos, value
FROM (
    SELECT feature, text_id, pos, value,
        row_number() OVER (PARTITION BY feature ORDER BY value DESC, text_id, pos)
            AS merged_rank
    FROM read_parquet(?, hive_partitioning = false)
    QUALIFY merged_rank <= ?)
ORDER BY feature, rank
"""

_QUALITY_SQL = "SELECT * FROM read_parquet(?, hive_partitioning = false) WHERE sae = ?"


def _read(sql: str, params: list) -> pd.DataFrame:
    with duckdb.connect() as con:
        return con.execute(sql, params).df()


def _paths(files: Sequence[Path]) -> list[str]:
    return [str(path) for path in files]


def merged_stats(files: Sequence[Path]) -> pd.DataFrame:
    """feature, n_active_tokens, n_active_texts, mean_active, max of one SAE over its shards'
    statistics files: counts and sums add up, maxima take the max."""
    return _read(_MERGED_STATS_SQL, [_paths(files)])


def merged_topk(files: Sequence[Path], k: int) -> pd.DataFrame:
    """feature, rank, text_id, pos, value: each feature's `k` largest activations over the
    shards' running top-k files (ties by text_id, pos)."""
    return _read(_MERGED_TOPK_SQL, [_paths(files), k])


def quality_rows(files: Sequence[Path], sae: str) -> pd.DataFrame:
    """The shards' quality sums of `sae`, one row per shard."""
    return _read(_QUALITY_SQL, [_paths(files), sae])
