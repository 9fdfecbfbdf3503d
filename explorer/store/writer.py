"""The build writer: `StoreWriter` streams a build's results into a new store file.

Owns every statement that creates and derives the store's tables (staging, sorting `acts`,
per-feature and per-category tables at `finish`) and the atomic swap that replaces an old
store only when the new one is complete. It runs no model (see `explorer.build`) and answers
no reads (see `explorer.store.reader`); the format and its measured decisions are in
docs/store.md.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from explorer.errors import StoreError, markdown_escaped
from explorer.store.derived import Derived, write_derived
from explorer.store.schema import (
    _ACTS_STAGING_SCHEMA,
    _RANKED_STATS_SQL,
    _STAGING,
    _TABLES,
    FEATURE_TOKEN_TOP,
    FLUSH_ROWS,
    HIST_BINS,
    LABEL_TOP,
    MAX_SAES,
    QUANTILE_BINS,
    QUANTILE_EXAMPLES,
    ROW_GROUP_ROWS,
    ROWS_PER_TEXT_BLOCK,
    SCHEMA_VERSION,
    STRONG_FRACTION,
    TOKENS_SCHEMA,
    TOPK_EXAMPLES,
    SaeInfo,
    SaeRef,
    library_versions,
    sql_literal,
)
from explorer.store.user_data import UserData, legacy_rows, legacy_source, sidecar_path

logger = logging.getLogger(__name__)

_FILL_HIST_SQL = """
UPDATE feature_stats_staging s SET hist = h.hist FROM (
    WITH missing AS (
        SELECT sae_idx, feature, "max" FROM feature_stats_staging WHERE hist IS NULL),
    bins AS (
        SELECT a.sae_idx, a.feature,
            least(floor(a.value::DOUBLE / m."max" * $hist_bins), $hist_bins - 1)::BIGINT AS bin,
            count(*) AS n
        FROM acts a JOIN missing m USING (sae_idx, feature) WHERE m."max" > 0 GROUP BY ALL)
    SELECT m.sae_idx, m.feature, list(coalesce(b.n, 0) ORDER BY r.bin) AS hist
    FROM missing m CROSS JOIN range($hist_bins) r(bin)
    LEFT JOIN bins b ON b.sae_idx = m.sae_idx AND b.feature = m.feature AND b.bin = r.bin
    GROUP BY m.sae_idx, m.feature
) h
WHERE s.sae_idx = h.sae_idx AND s.feature = h.feature
"""


# Raw per-feature statistics of one SAE derived from acts (the extraction computes the same
# on tensors while it runs); every feature 0..d_sae-1 gets a row.

# One row per (SAE, feature, text) where the feature fires; the base of the tables below.
# Grouped on the three integer keys, then joined to the texts (grouping on the text's
# category and n_tokens too took 1.25x as long on 52.9M rows).
_PER_TEXT_SQL = """
CREATE TEMP TABLE per_text AS
SELECT p.sae_idx, p.feature, p.text_id, t.category, t.n_tokens,
    p.act_sum, p.n_active, p.act_max, p.n_strong
FROM (
    SELECT a.sae_idx, a.feature, a.text_id,
        sum(a.value::DOUBLE) AS act_sum, count(*) AS n_active, max(a.value) AS act_max,
        count(*) FILTER (WHERE a.value >= $strong * m.fmax) AS n_strong
    FROM acts a JOIN feature_max m USING (sae_idx, feature)
    GROUP BY a.sae_idx, a.feature, a.text_id) p
JOIN texts t USING (text_id)
"""

# The text activation (mean over the text's real tokens, zeros included) as stored, and its
# midrank among the feature's active texts (ties share the mean of their ranks): the mean of
# the first rank of its ties (`rank`) and the last (rows up to its last peer, as RANGE frames
# include peers). Both windows share one partition and order, so one sort serves them (a
# second window partitioned by the value took 1.6x as long on 19.6M rows).
_FEATURE_TEXT_SQL = """
CREATE TEMP TABLE ranked_text AS
SELECT sae_idx, feature, text_id, category, act,
    (rank() OVER by_act
        + count(*) OVER (by_act RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) / 2.0
        AS midrank
FROM (SELECT sae_idx, feature, text_id, category, (act_sum / n_tokens)::FLOAT AS act
    FROM per_text)
WINDOW by_act AS (PARTITION BY sae_idx, feature ORDER BY act);
INSERT INTO feature_text
SELECT sae_idx, feature, text_id, act FROM ranked_text ORDER BY sae_idx, feature, text_id;
INSERT INTO category_ranks
SELECT sae_idx, feature, category, sum(midrank) FROM ranked_text
GROUP BY ALL ORDER BY sae_idx, feature, category;
CREATE TEMP TABLE text_max AS
SELECT sae_idx, feature, max(act)::DOUBLE AS max_text_act FROM ranked_text GROUP BY ALL;
DROP TABLE ranked_text
"""

# Each feature's `$top` most frequent labels of each label family (see the docstring). Labels
# get integer ids (in label order) and families too, so the join and the grouping run on
# integers, and `max_by` keeps each family's top labels while aggregating (by count, then
# label: the key count * 2^32 - label_id), with no window sort.
_FEATURE_LABEL_SQL = """
INSERT INTO feature_label
WITH text_labels AS (
    SELECT text_id, unnest(labels) AS label FROM texts WHERE n_tokens > 0),
dict AS (
    SELECT label, (row_number() OVER (ORDER BY label))::BIGINT AS label_id,
        dense_rank() OVER (ORDER BY CASE WHEN contains(label, ':')
            THEN split_part(label, ':', 1) ELSE '' END) AS family_id
    FROM (SELECT DISTINCT label FROM text_labels)),
counts AS (
    SELECT p.sae_idx, p.feature, d.family_id, d.label_id, count(*) AS n
    FROM per_text p JOIN text_labels t USING (text_id) JOIN dict d USING (label)
    GROUP BY ALL),
top AS (
    SELECT sae_idx, feature,
        max_by({'label_id': label_id, 'n_texts_active': n}, n * 4294967296 - label_id, $top)
            AS best
    FROM counts GROUP BY sae_idx, feature, family_id)
SELECT t.sae_idx, t.feature, d.label, t.n_texts_active, t.rank
FROM (SELECT sae_idx, feature, unnest(best, recursive := true),
        generate_subscripts(best, 1) AS rank FROM top) t
JOIN dict d USING (label_id)
ORDER BY t.sae_idx, t.feature, d.label
"""

_FEATURE_CATEGORY_SQL = """
INSERT INTO feature_category
WITH categories AS (
    SELECT category, count(*) AS n_texts FROM texts WHERE n_tokens > 0 GROUP BY category),
per_category AS (
    SELECT sae_idx, feature, category, count(*) AS n_texts_active,
        sum(n_active) AS n_tokens_active, sum(act_sum / n_tokens) AS act_mean_sum,
        max(act_max) AS max_act, sum(n_strong) AS strong_count
    FROM per_text
    GROUP BY ALL)
SELECT m.sae_idx, m.feature, c.category, c.n_texts,
    coalesce(pc.n_texts_active, 0), coalesce(pc.n_tokens_active, 0),
    coalesce(pc.act_mean_sum, 0) / c.n_texts, coalesce(pc.max_act, 0),
    coalesce(pc.strong_count, 0)
FROM feature_max m CROSS JOIN categories c
LEFT JOIN per_category pc
    ON pc.sae_idx = m.sae_idx AND pc.feature = m.feature AND pc.category = c.category
ORDER BY m.sae_idx, m.feature, c.category
"""

# Per (SAE, feature, category): the store's counts, the rank sums and the texts whose
# activation reaches the strong threshold: `$threshold` x the feature's largest text
# activation when `$relative`, else `$threshold` itself. A scan of `feature_text`.

# Each feature's `$k` largest activations: the extraction's running top-k where it passed
# one in (`add_top_examples`), else ranked from `acts`.
_FEATURE_TOPK_SQL = """
INSERT INTO feature_topk
SELECT a.sae_idx, a.feature, a.rank, a.text_id, a.pos, a.value, t.token
FROM (
    SELECT sae_idx, feature, rank, text_id, pos, value FROM feature_topk_staging
    WHERE rank <= $k
    UNION ALL
    SELECT sae_idx, feature,
        row_number() OVER (PARTITION BY sae_idx, feature ORDER BY value DESC, text_id, pos)
            AS rank,
        text_id, pos, value
    FROM acts
    WHERE sae_idx NOT IN (SELECT sae_idx FROM feature_topk_staging)
    QUALIFY rank <= $k) a
LEFT JOIN tokens t USING (text_id, pos)
ORDER BY sae_idx, feature, rank
"""

# In each bin, the `$per_bin` rows with the smallest hash(text_id, pos): `min_by` keeps them
# per group while aggregating, so `acts` is never sorted for it.
_FEATURE_QUANTILES_SQL = """
INSERT INTO feature_quantiles
WITH picked AS (
    SELECT a.sae_idx, a.feature, m.fmax::DOUBLE AS fmax,
        least(floor(a.value::DOUBLE / m.fmax * $bins), $bins - 1)::UTINYINT AS bin,
        unnest(
            min_by({'text_id': a.text_id, 'pos': a.pos, 'value': a.value},
                hash(a.text_id, a.pos), $per_bin),
            recursive := true)
    FROM acts a JOIN feature_max m USING (sae_idx, feature)
    GROUP BY a.sae_idx, a.feature, m.fmax, bin)
SELECT q.sae_idx, q.feature, q.bin, q.bin * q.fmax / $bins, (q.bin + 1) * q.fmax / $bins,
    row_number() OVER (
        PARTITION BY q.sae_idx, q.feature, q.bin ORDER BY q.value DESC, q.text_id, q.pos),
    q.text_id, q.pos, q.value, t.token
FROM picked q
LEFT JOIN tokens t USING (text_id, pos)
ORDER BY 1, 2, 3, 6
"""

# Per (SAE, feature, token id): the feature's active tokens that are this token id, kept for
# the feature's `$top` most frequent token ids (ties by token_id). Reads the staged rows:
# those added with their token id need no join with `tokens` (Parquet rows, or `add_acts`
# without `token_id`, are joined).
_FEATURE_TOKEN_SQL = """
INSERT INTO feature_token
WITH row_tokens AS (
    SELECT sae_idx, feature, token_id FROM acts_staging WHERE token_id IS NOT NULL
    UNION ALL
    SELECT s.sae_idx, s.feature, t.token_id
    FROM acts_staging s JOIN tokens t USING (text_id, pos)
    WHERE s.token_id IS NULL)
SELECT sae_idx, feature, token_id, count(*) AS n_active
FROM row_tokens
GROUP BY sae_idx, feature, token_id
QUALIFY row_number() OVER (
    PARTITION BY sae_idx, feature ORDER BY count(*) DESC, token_id) <= $top
ORDER BY sae_idx, feature, n_active DESC, token_id
"""

_TOKEN_COUNTS_SQL = """
INSERT INTO token_counts
SELECT token_id, min(token), count(*) FROM tokens GROUP BY token_id ORDER BY token_id
"""


def _tmp_path(path: Path, pid: int) -> Path:
    return path.with_name(f"{path.name}.tmp-{pid}")


def remove_db_files(db: Path) -> None:
    """Remove a DuckDB file with its WAL and spill folder, whichever exist."""
    for candidate in (db, db.with_name(db.name + ".wal")):
        candidate.unlink(missing_ok=True)
    shutil.rmtree(db.with_name(db.name + ".tmp"), ignore_errors=True)


def connect_for_build(db: Path) -> duckdb.DuckDBPyConnection:
    """A connection whose default database is a new file `db` with `ROW_GROUP_ROWS`-row
    groups (a setting of ATTACH only), spilling to `<db>.tmp` as a file connection would."""
    con = duckdb.connect()
    try:
        con.execute(f"SET temp_directory = {sql_literal(str(db) + '.tmp')}")
        con.execute(f"ATTACH {sql_literal(str(db))} AS store (ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
        con.execute("USE store")
    except duckdb.Error:
        con.close()
        raise
    return con


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs (a build or shard write that left a temp file)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_builds(path: Path) -> None:
    """Delete `<path>.tmp-<pid>*` files left by builds whose process no longer runs."""
    prefix = f"{path.name}.tmp-"
    for leftover in path.parent.iterdir():
        if not leftover.name.startswith(prefix):
            continue
        pid_text = leftover.name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or pid_alive(int(pid_text)):
            continue
        logger.info("removing %s, left by build process %s that no longer runs", leftover, pid_text)
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _uint_array(values: Any, dtype: type[np.unsignedinteger], name: str) -> np.ndarray:
    """`values` as a 1-D array of `dtype`, after checking they are integers in its range."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise StoreError(f"{markdown_escaped(name)} must be a 1-D array, got shape {array.shape}.")
    if array.size == 0:
        return array.astype(dtype)
    if array.dtype.kind not in "iu":
        raise StoreError(f"{markdown_escaped(name)} must hold integers, got dtype {array.dtype}.")
    low, high = array.min(), array.max()
    if low < 0 or high > np.iinfo(dtype).max:
        raise StoreError(
            f"{markdown_escaped(name)} must lie in 0..{markdown_escaped(np.iinfo(dtype).max)}, got "
            f"values from {low} to {high}."
        )
    return array.astype(dtype, copy=False)


def _column(data: pd.DataFrame | Mapping[str, Any], name: str) -> Any:
    if name not in data:
        raise StoreError(
            f"Missing column {markdown_escaped(repr(name))}; got "
            f"{markdown_escaped(sorted(data.keys()))}."
        )
    column = data[name]
    return column.to_numpy() if isinstance(column, pd.Series) else column


def _json_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _insert(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table | pa.RecordBatch) -> None:
    """Insert Arrow data into `table`, matching columns by name."""
    con.register("_incoming", data)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _incoming")
    finally:
        con.unregister("_incoming")


class _ArrowBuffer:
    """Collects Arrow record batches for one table and inserts them in large chunks."""

    def __init__(self, con: duckdb.DuckDBPyConnection, table: str, flush_rows: int) -> None:
        self._con = con
        self._table = table
        self._flush_rows = flush_rows
        self._batches: list[pa.RecordBatch] = []
        self._rows = 0

    def append(self, batch: pa.RecordBatch) -> None:
        self._batches.append(batch)
        self._rows += batch.num_rows
        if self._rows >= self._flush_rows:
            self.flush()

    def flush(self) -> None:
        if self._batches:
            _insert(self._con, self._table, pa.Table.from_batches(self._batches))
        self._batches.clear()
        self._rows = 0


class StoreWriter:
    """Writes one store: `with StoreWriter(path, meta=...) as writer: writer.add_...(...)`.

    Leaving the block normally calls `finish`; an exception rolls the build back and deletes
    the temporary file, leaving any previous store at `path` untouched. The writer trusts the
    extraction for what it cannot check cheaply: unique (sae, feature, text_id, pos) rows.
    Labels saved into the old store while `finish` runs, after it has copied them, are lost.
    `derive`, if given, is called with the finished temporary file before it is swapped in;
    the analyses it returns are kept in the store (`explorer.store.derived`).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        meta: Mapping[str, Any] | None = None,
        rows_per_text_block: int = ROWS_PER_TEXT_BLOCK,
        derive: Callable[[Path], list[Derived]] | None = None,
    ) -> None:
        self.path = Path(path).absolute()
        self._meta = dict(meta or {})
        self._derive = derive
        self._rows_per_text_block = rows_per_text_block
        folder = self.path.parent
        if not folder.exists():
            raise StoreError(
                f"Cannot build {markdown_escaped(self.path)}: the folder "
                f"{markdown_escaped(folder)} does not exist. "
                "Create it or choose another path."
            )
        if not folder.is_dir():
            raise StoreError(
                f"Cannot build {markdown_escaped(self.path)}: "
                f"{markdown_escaped(folder)} is a file, not a folder."
            )
        if self.path.is_dir():
            raise StoreError(
                f"Cannot build {markdown_escaped(self.path)}: it is a folder; give a file path "
                "such as "
                f"{self.path / 'store.duckdb'}."
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StoreError(
                f"Cannot build {markdown_escaped(self.path)}: no write permission in "
                f"{markdown_escaped(folder)}. "
                "Choose a folder you can write to."
            )
        if self.path.exists():
            self._keep_user_data()
        _remove_stale_builds(self.path)
        self._tmp = _tmp_path(self.path, os.getpid())
        remove_db_files(self._tmp)
        try:
            self._con = connect_for_build(self._tmp)
        except duckdb.Error as exc:
            remove_db_files(self._tmp)
            raise StoreError(
                f"Cannot build {markdown_escaped(self.path)}: cannot create "
                f"{markdown_escaped(self._tmp)} ({markdown_escaped(exc)})."
            ) from exc
        self._saes: dict[str, SaeRef] = {}
        self._stats_added: set[str] = set()
        self._rows_per_sae: dict[str, int] = {}
        self._closed = False
        self._done = False
        self._con.begin()
        for table, columns in _TABLES.items():
            self._con.execute(f"CREATE TABLE {table} ({columns})")
        for table, columns in _STAGING.items():
            self._con.execute(f"CREATE TEMP TABLE {table} ({columns})")
        self._acts = _ArrowBuffer(self._con, "acts_staging", FLUSH_ROWS)
        self._tokens = _ArrowBuffer(self._con, "tokens_staging", FLUSH_ROWS)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if self._done:
            return
        if exc_type is None:
            self.finish()
        else:
            self.abort()

    def add_sae(self, info: SaeInfo) -> None:
        """Register an SAE; its activations and statistics may be added afterwards."""
        if info.sae in self._saes:
            raise StoreError(
                f"SAE {markdown_escaped(repr(info.sae))} was added twice; SAE names must be unique."
            )
        if len(self._saes) >= MAX_SAES:
            raise StoreError(f"A store holds at most {MAX_SAES} SAEs.")
        if not info.sae or info.d_sae <= 0 or info.d_in <= 0:
            raise StoreError(
                f"SAE {markdown_escaped(repr(info))} needs a name and positive d_in and d_sae."
            )
        idx = len(self._saes)
        self._con.execute(
            "INSERT INTO saes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                idx,
                info.sae,
                info.hook_name,
                info.layer,
                info.d_in,
                info.d_sae,
                info.architecture,
                info.release,
                info.sae_id,
                info.neuronpedia_id,
                info.l0,
                info.explained_variance,
                info.ce_loss_recovered,
                info.dead_fraction,
                info.kl_divergence,
                info.l2_ratio,
                info.dense_fraction,
                info.quality_texts,
            ],
        )
        self._saes[info.sae] = SaeRef(
            info.sae, idx, info.d_sae, info.hook_name, info.layer, info.d_in, info.neuronpedia_id
        )

    def set_quality(
        self,
        sae: str,
        *,
        l0: float,
        explained_variance: float,
        ce_loss_recovered: float,
        dead_fraction: float,
        kl_divergence: float | None = None,
        l2_ratio: float | None = None,
        dense_fraction: float | None = None,
        quality_texts: int | None = None,
    ) -> None:
        """Record an SAE's quality, measured by the extraction after its rows were added:
        ce_loss_recovered, kl_divergence and l2_ratio on a sample of `quality_texts` texts,
        the others over every real token."""
        ref = self._sae(sae)
        self._con.execute(
            """UPDATE saes SET l0 = ?, explained_variance = ?, ce_loss_recovered = ?,
            dead_fraction = ?, kl_divergence = ?, l2_ratio = ?, dense_fraction = ?,
            quality_texts = ? WHERE sae_idx = ?""",
            [
                l0,
                explained_variance,
                ce_loss_recovered,
                dead_fraction,
                kl_divergence,
                l2_ratio,
                dense_fraction,
                quality_texts,
                ref.idx,
            ],
        )

    def add_texts(self, texts: pd.DataFrame) -> None:
        """Add texts: columns text_id, category, source, text and optionally labels (lists)."""
        text_id = _uint_array(_column(texts, "text_id"), np.uint32, "text_id")
        category = pd.Series(_column(texts, "category"), dtype=object)
        if category.isna().any() or (category.astype(str).str.len() == 0).any():
            raise StoreError("Every text needs a non-empty category.")
        labels = texts["labels"] if "labels" in texts else [None] * len(text_id)
        batch = pa.record_batch(
            {
                "text_id": pa.array(text_id),
                "category": pa.array(category.astype(str).tolist(), pa.string()),
                "source": _strings(_column(texts, "source")),
                "text": _strings(_column(texts, "text")),
                "labels": pa.array(
                    [[str(x) for x in v] if _is_list(v) else [] for v in labels],
                    pa.list_(pa.string()),
                ),
            }
        )
        _insert(self._con, "texts_staging", batch)

    def add_tokens(self, text_id: Any, pos: Any, token_id: Any, token: Sequence[str]) -> None:
        """Add token rows (real tokens only: no BOS, no padding), as equal-length arrays."""
        columns = {
            "text_id": _uint_array(text_id, np.uint32, "text_id"),
            "pos": _uint_array(pos, np.uint16, "pos"),
            "token_id": _uint_array(token_id, np.uint32, "token_id"),
            "token": pa.array(
                list(token) if not isinstance(token, pa.Array) else token, pa.string()
            ),
        }
        _check_lengths(columns)
        self._tokens.append(pa.record_batch(columns, schema=TOKENS_SCHEMA))

    def add_acts(
        self, sae: str, feature: Any, text_id: Any, pos: Any, value: Any, token_id: Any = None
    ) -> None:
        """Add activations of one SAE as equal-length arrays; zeros are dropped.

        Values are stored as float32 and must be positive (ReLU, JumpReLU and TopK SAEs
        never produce negative activations). Rows are buffered and inserted with Arrow.
        `token_id`, each row's token (optional, as the extraction knows it), saves `finish`
        joining `acts` with `tokens` for `feature_token`.
        """
        ref = self._sae(sae)
        value = np.asarray(value, dtype=np.float32)
        columns = {
            "feature": _uint_array(feature, np.uint32, "feature"),
            "text_id": _uint_array(text_id, np.uint32, "text_id"),
            "pos": _uint_array(pos, np.uint16, "pos"),
            "value": value,
        }
        if token_id is not None:
            columns["token_id"] = _uint_array(token_id, np.uint32, "token_id")
        _check_lengths(columns)
        nonzero = value != 0
        if not nonzero.all():
            columns = {name: array[nonzero] for name, array in columns.items()}
        if not (columns["value"] > 0).all():
            raise StoreError(
                f"Activations of SAE {markdown_escaped(repr(sae))} must be positive and finite."
            )
        if columns["feature"].size and columns["feature"].max() >= ref.d_sae:
            raise StoreError(
                f"Feature {columns['feature'].max()} is out of range for SAE "
                f"{markdown_escaped(repr(sae))} "
                f"(d_sae {ref.d_sae})."
            )
        n_rows = columns["value"].size
        self._rows_per_sae[sae] = self._rows_per_sae.get(sae, 0) + n_rows
        columns["sae_idx"] = np.full(n_rows, ref.idx, dtype=np.uint8)
        if token_id is None:
            columns["token_id"] = pa.nulls(n_rows, pa.uint32())
        self._acts.append(pa.record_batch(columns, schema=_ACTS_STAGING_SCHEMA))

    def add_texts_parquet(self, files: Sequence[str | Path]) -> int:
        """Add texts from Parquet files with the columns of `add_texts` (labels a list of
        strings), read by DuckDB directly; returns the rows added."""
        self._check_parquet(
            files,
            "count(*) FILTER (WHERE category IS NULL OR category = '')",
            [],
            "Every text needs a non-empty category.",
        )
        columns = "text_id, category, source, text, labels"
        return self._insert_parquet("texts_staging", columns, [], files)

    def add_tokens_parquet(self, files: Sequence[str | Path]) -> int:
        """Add token rows from Parquet files with the columns of `add_tokens`; returns the
        rows added."""
        return self._insert_parquet("tokens_staging", "text_id, pos, token_id, token", [], files)

    def add_acts_parquet(self, sae: str, files: Sequence[str | Path]) -> int:
        """Add one SAE's activations from Parquet files with the columns feature, text_id,
        pos, value (positive values only, as `add_acts` keeps), read by DuckDB directly;
        returns the rows added."""
        ref = self._sae(sae)
        self._check_parquet(
            files,
            "count(*) FILTER (WHERE NOT (value > 0 AND isfinite(value)))",
            [],
            f"Activations of SAE {sae!r} must be positive and finite.",
        )
        self._check_parquet(
            files,
            "count(*) FILTER (WHERE feature >= ?)",
            [ref.d_sae],
            f"A feature is out of range for SAE {sae!r} (d_sae {ref.d_sae}).",
        )
        columns = "?::UTINYINT AS sae_idx, feature, text_id, pos, value"
        n_rows = self._insert_parquet("acts_staging", columns, [ref.idx], files)
        self._rows_per_sae[sae] = self._rows_per_sae.get(sae, 0) + n_rows
        return n_rows

    def _check_parquet(
        self, files: Sequence[str | Path], count_sql: str, params: list[Any], message: str
    ) -> None:
        """Raise StoreError(message) when `count_sql` (an aggregate written in this module)
        counts any bad row of the files."""
        if files:
            sql = f"SELECT {count_sql} FROM read_parquet(?, hive_partitioning = false)"
            if self._read_parquet(sql, [*params, _paths(files)], files).fetchone()[0]:
                raise StoreError(message)

    def _insert_parquet(
        self, table: str, columns: str, params: list[Any], files: Sequence[str | Path]
    ) -> int:
        """Insert `columns` (a select list written in this module) of the files into `table`."""
        if not files:
            return 0
        sql = (
            f"INSERT INTO {table} BY NAME SELECT {columns} "
            "FROM read_parquet(?, hive_partitioning = false)"
        )
        return self._read_parquet(sql, [*params, _paths(files)], files).fetchone()[0]

    def _read_parquet(
        self, sql: str, params: list[Any], files: Sequence[str | Path]
    ) -> duckdb.DuckDBPyConnection:
        try:
            return self._con.execute(sql, params)
        except duckdb.Error as exc:
            raise StoreError(
                f"Cannot load {len(files)} Parquet file(s) such as {markdown_escaped(files[0])} "
                f"({markdown_escaped(exc)})."
            ) from exc

    def add_feature_stats(self, sae: str, stats: pd.DataFrame | Mapping[str, Any]) -> None:
        """Add one SAE's per-feature statistics (one row per feature, dead ones included).

        Columns: n_active_tokens, n_active_texts, mean_active, max, optionally hist (shape
        [d_sae, HIST_BINS], counts per linear bin over [0, max]; when absent, `finish`
        computes it from `acts`, since a one-pass extraction knows the max only at the end)
        and optionally feature (default 0..d_sae-1). token_freq, text_freq and freq_rank are
        derived at `finish`.
        """
        ref = self._sae(sae)
        if sae in self._stats_added:
            raise StoreError(
                f"Feature statistics of SAE {markdown_escaped(repr(sae))} were added twice."
            )
        feature = _column(stats, "feature") if "feature" in stats else np.arange(ref.d_sae)
        feature = _uint_array(feature, np.uint32, "feature")
        if not np.array_equal(np.sort(feature), np.arange(ref.d_sae)):
            raise StoreError(
                f"Feature statistics of SAE {markdown_escaped(repr(sae))} need one row per feature "
                f"0..{ref.d_sae - 1}."
            )
        if "hist" in stats:
            hist = np.asarray(_column(stats, "hist"))
            if hist.dtype == object:
                hist = np.stack([np.asarray(row) for row in hist])
            if hist.shape != (ref.d_sae, HIST_BINS):
                raise StoreError(
                    f"hist of SAE {markdown_escaped(repr(sae))} must have shape ({ref.d_sae}, "
                    f"{HIST_BINS}), "
                    f"got {hist.shape}."
                )
            offsets = pa.array(np.arange(0, hist.size + 1, HIST_BINS, dtype=np.int32))
            hist_array = pa.ListArray.from_arrays(offsets, pa.array(hist.ravel().astype(np.int64)))
        else:
            hist_array = pa.nulls(ref.d_sae, pa.list_(pa.int64()))
        columns = {
            "sae_idx": pa.array(np.full(ref.d_sae, ref.idx, dtype=np.uint8)),
            "feature": pa.array(feature),
            "n_active_tokens": pa.array(np.asarray(_column(stats, "n_active_tokens"), np.int64)),
            "n_active_texts": pa.array(np.asarray(_column(stats, "n_active_texts"), np.int64)),
            "mean_active": pa.array(np.asarray(_column(stats, "mean_active"), np.float64)),
            "max": pa.array(np.asarray(_column(stats, "max"), np.float64)),
            "hist": hist_array,
        }
        _check_lengths(columns)
        _insert(self._con, "feature_stats_staging", pa.record_batch(columns))
        self._stats_added.add(sae)

    def add_top_examples(self, sae: str, top: pd.DataFrame | Mapping[str, Any]) -> None:
        """Add one SAE's largest activations as the extraction ranked them (columns feature,
        rank from 1, text_id, pos, value; rank by value DESC, then text_id, pos), so
        `finish` does not rank `acts`; ranks past `TOPK_EXAMPLES` are dropped. Without it,
        `finish` ranks `acts` itself."""
        ref = self._sae(sae)
        columns = {
            "feature": _uint_array(_column(top, "feature"), np.uint32, "feature"),
            "rank": _uint_array(_column(top, "rank"), np.uint16, "rank"),
            "text_id": _uint_array(_column(top, "text_id"), np.uint32, "text_id"),
            "pos": _uint_array(_column(top, "pos"), np.uint16, "pos"),
            "value": np.asarray(_column(top, "value"), dtype=np.float32),
        }
        _check_lengths(columns)
        if columns["feature"].size and columns["feature"].max() >= ref.d_sae:
            raise StoreError(
                f"Top examples of SAE {markdown_escaped(repr(sae))}: feature out of range."
            )
        if not (columns["value"] > 0).all() or (columns["rank"] == 0).any():
            raise StoreError(
                f"Top examples of SAE {markdown_escaped(repr(sae))} need positive values and ranks."
            )
        n_rows = columns["value"].size
        columns["sae_idx"] = np.full(n_rows, ref.idx, dtype=np.uint8)
        _insert(self._con, "feature_topk_staging", pa.record_batch(columns))

    def add_logit_lens(
        self,
        sae: str,
        *,
        top_token_ids: Any,
        top_logits: Any,
        bottom_token_ids: Any,
        bottom_logits: Any,
        vocab: Sequence[str],
        features: Any = None,
    ) -> None:
        """Add the decoder logit lens of one SAE: `[n_features, k]` arrays as `torch.topk`
        returns them (any order within a row), `vocab[token_id]` the token strings, and
        `features` the rows' feature ids (default 0..d_sae-1)."""
        ref = self._sae(sae)
        vocab_array = np.asarray(vocab, dtype=object)
        parts = []
        for ids, logits, sign in (
            (top_token_ids, top_logits, 1),
            (bottom_token_ids, bottom_logits, -1),
        ):
            ids, logits = np.asarray(ids), np.asarray(logits, dtype=np.float32)
            if ids.ndim != 2 or ids.shape != logits.shape:
                raise StoreError("Logit-lens token ids and logits must be [n_features, k] arrays.")
            order = np.argsort(-sign * logits, axis=1, kind="stable")  # [n_features, k]
            ids = np.take_along_axis(ids, order, axis=1)
            logits = np.take_along_axis(logits, order, axis=1)
            n_features, k = ids.shape
            feature_ids = np.arange(ref.d_sae) if features is None else np.asarray(features)
            if feature_ids.shape != (n_features,):
                raise StoreError(
                    f"Logit lens of SAE {markdown_escaped(repr(sae))}: features must "
                    f"have {n_features} ids."
                )
            flat_ids = _uint_array(ids.ravel(), np.uint32, "token_id")
            if flat_ids.size and flat_ids.max() >= len(vocab_array):
                raise StoreError(
                    f"Logit lens of SAE {markdown_escaped(repr(sae))}: a token id is "
                    "not in the vocab."
                )
            parts.append(
                {
                    "feature": np.repeat(_uint_array(feature_ids, np.uint32, "feature"), k),
                    "rank": np.tile(np.arange(1, k + 1, dtype=np.int16) * sign, n_features),
                    "token_id": flat_ids,
                    "token": vocab_array[flat_ids],
                    "logit": logits.ravel(),
                }
            )
        feature = np.concatenate([part["feature"] for part in parts])
        if feature.size and feature.max() >= ref.d_sae:
            raise StoreError(
                f"Logit lens of SAE {markdown_escaped(repr(sae))}: feature out of range."
            )
        batch = pa.record_batch(
            {
                "sae_idx": pa.array(np.full(feature.size, ref.idx, dtype=np.uint8)),
                "feature": pa.array(feature),
                "rank": pa.array(np.concatenate([part["rank"] for part in parts])),
                "token_id": pa.array(np.concatenate([part["token_id"] for part in parts])),
                "token": pa.array(np.concatenate([part["token"] for part in parts]), pa.string()),
                "logit": pa.array(np.concatenate([part["logit"] for part in parts])),
            }
        )
        _insert(self._con, "logit_lens_staging", batch)

    def finish(self) -> None:
        """Sort, derive, commit, and replace the store at `path` (its sidecar stays)."""
        if self._done:
            raise StoreError("This build has already finished or been aborted.")
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise
        self._done = True

    def abort(self) -> None:
        """Roll back, close and delete the temporary file; the old store stays as it was."""
        if self._done:
            return
        self._done = True
        if not self._closed:
            self._closed = True
            try:
                self._con.rollback()
            except duckdb.Error:
                logger.debug("rollback of the build failed; the file is deleted anyway")
            self._con.close()
        remove_db_files(self._tmp)

    def _sae(self, sae: str) -> SaeRef:
        if sae not in self._saes:
            raise StoreError(
                f"SAE {markdown_escaped(repr(sae))} was not added; call add_sae first. Known: "
                f"{markdown_escaped(list(self._saes))}."
            )
        return self._saes[sae]

    def _finish(self) -> None:
        con = self._con
        self._acts.flush()
        self._tokens.flush()
        self._check_inputs()
        started = time.perf_counter()
        text_block = self._text_block()
        steps: list[tuple[str, str, dict[str, Any]]] = [
            ("tokens", "INSERT INTO tokens SELECT * FROM tokens_staging ORDER BY text_id, pos", {}),
            (
                "texts",
                """INSERT INTO texts
                SELECT s.text_id, s.category, s.source, s.text, coalesce(c.n, 0), s.labels
                FROM texts_staging s
                LEFT JOIN (SELECT text_id, count(*) AS n FROM tokens GROUP BY text_id) c
                    USING (text_id)
                ORDER BY s.text_id""",
                {},
            ),
            # One sort per SAE, in sae_idx order: the same rows in the same order as one
            # sort on sae_idx first, in 0.85x the time (52.9M rows of 4 SAEs).
            *(
                (
                    f"acts of {ref.name}",
                    """INSERT INTO acts SELECT * EXCLUDE (token_id) FROM acts_staging
                    WHERE sae_idx = $sae_idx
                    ORDER BY text_id // $block, feature, value DESC, text_id, pos""",
                    {"sae_idx": ref.idx, "block": text_block},
                )
                for ref in sorted(self._saes.values(), key=lambda ref: ref.idx)
            ),
            ("feature_token", _FEATURE_TOKEN_SQL, {"top": FEATURE_TOKEN_TOP}),
            ("drop staging", "DROP TABLE acts_staging", {}),
            (
                "feature max",
                """CREATE TEMP TABLE feature_max AS
                SELECT sae_idx, feature, max(value) AS fmax FROM acts GROUP BY ALL""",
                {},
            ),
            ("per-text activations", _PER_TEXT_SQL, {"strong": STRONG_FRACTION}),
            ("feature_category", _FEATURE_CATEGORY_SQL, {}),
            ("feature_text and category_ranks", _FEATURE_TEXT_SQL, {}),
            ("feature_label", _FEATURE_LABEL_SQL, {"top": LABEL_TOP}),
            ("drop per-text", "DROP TABLE per_text", {}),
            ("missing histograms", _FILL_HIST_SQL, {"hist_bins": HIST_BINS}),
            ("feature_topk", _FEATURE_TOPK_SQL, {"k": TOPK_EXAMPLES}),
            (
                "feature_quantiles",
                _FEATURE_QUANTILES_SQL,
                {"bins": QUANTILE_BINS, "per_bin": QUANTILE_EXAMPLES},
            ),
            (
                "logit_lens",
                "INSERT INTO logit_lens SELECT * FROM logit_lens_staging ORDER BY 1, 2, 3",
                {},
            ),
            ("token_counts", _TOKEN_COUNTS_SQL, {}),
        ]
        for name, sql, params in steps:
            step_started = time.perf_counter()
            con.execute(sql, params or None)
            logger.info("store build: %s in %.1f s", name, time.perf_counter() - step_started)
        n_tokens, n_texts = con.execute(
            "SELECT (SELECT count(*) FROM tokens), (SELECT count(*) FROM texts WHERE n_tokens > 0)"
        ).fetchone()
        con.execute(
            "INSERT INTO feature_stats SELECT r.*, coalesce(m.max_text_act, 0) FROM ("
            + _RANKED_STATS_SQL.format(raw="feature_stats_staging")
            + ") r LEFT JOIN text_max m USING (sae_idx, feature) ORDER BY r.sae_idx, r.feature",
            {"n_tokens": n_tokens, "n_texts": n_texts},
        )
        meta = {key: _json_value(value) for key, value in self._meta.items()}
        meta |= {
            "schema_version": SCHEMA_VERSION,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "versions": json.dumps(library_versions(), sort_keys=True),
            "acts_text_block": str(text_block),
        }
        con.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
        con.commit()
        con.execute("CHECKPOINT")
        con.close()
        self._closed = True
        if self._derive is not None:
            self._add_derived()
        self._tmp.with_name(self._tmp.name + ".wal").unlink(missing_ok=True)
        # A WAL of the old file must not be replayed onto the new one; its content was read
        # by _keep_user_data above.
        self.path.with_name(self.path.name + ".wal").unlink(missing_ok=True)
        os.replace(self._tmp, self.path)
        logger.info("store build: wrote %s in %.1f s", self.path, time.perf_counter() - started)

    def _add_derived(self) -> None:
        """Run the `derive` callback on the finished temporary file (it opens it read-only
        like any store) and write what it returns into that file before it is swapped in."""
        started = time.perf_counter()
        entries = self._derive(self._tmp)
        _write_derived_file(self._tmp, entries)
        logger.info(
            "store build: derived analyses (%s) in %.1f s",
            ", ".join(entry.kind for entry in entries),
            time.perf_counter() - started,
        )

    def _text_block(self) -> int:
        """Text ids per block of `acts`: enough blocks that no SAE has more than about
        `rows_per_text_block` rows in one (see the module docstring)."""
        most_rows = max(self._rows_per_sae.values(), default=0)
        n_blocks = -(-most_rows // self._rows_per_text_block)
        low, high = self._con.execute(
            "SELECT min(text_id), max(text_id) FROM texts_staging"
        ).fetchone()
        if n_blocks <= 1:
            return high + 1  # one block: sorted by (sae_idx, feature, value DESC)
        return -(-(high - low + 1) // n_blocks)

    def _check_inputs(self) -> None:
        if not self._saes:
            raise StoreError("A store needs at least one SAE; call add_sae.")
        missing = sorted(set(self._saes) - self._stats_added)
        if missing:
            raise StoreError(
                f"No feature statistics for SAEs {markdown_escaped(missing)}; call "
                "add_feature_stats."
            )
        duplicates = self._con.execute(
            "SELECT text_id FROM texts_staging GROUP BY text_id HAVING count(*) > 1 LIMIT 5"
        ).fetchall()
        if duplicates:
            raise StoreError(
                "Text ids must be unique; repeated: "
                f"{markdown_escaped([d[0] for d in duplicates])}."
            )
        if not self._con.execute("SELECT count(*) FROM texts_staging").fetchone()[0]:
            raise StoreError("A store needs texts; call add_texts.")
        orphans = self._con.execute(
            "SELECT count(*) FROM tokens_staging ANTI JOIN texts_staging USING (text_id)"
        ).fetchone()[0]
        if orphans:
            raise StoreError(
                f"{markdown_escaped(orphans)} token rows belong to text ids that were not added."
            )
        self._check_acts_have_tokens()

    def _check_acts_have_tokens(self) -> None:
        orphans = self._con.execute(
            "SELECT count(*) FROM acts_staging ANTI JOIN tokens_staging USING (text_id, pos)"
        ).fetchone()[0]
        if orphans:
            raise StoreError(
                f"{markdown_escaped(orphans)} activation rows sit on (text_id, pos) without a "
                "token row; "
                "activations must be on real tokens (no BOS, no padding)."
            )

    def _keep_user_data(self) -> None:
        """Copy the labels and runs the store at `path` keeps inside its DuckDB file (stores
        built before the sidecar) into its sidecar, which the rebuild leaves in place. Runs
        before the expensive part: an unreadable old file or sidecar fails the build now."""
        try:
            stat = self.path.stat()
            identity = (stat.st_ino, stat.st_mtime_ns)
            old = duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error as exc:
            raise StoreError(
                f"Cannot rebuild {markdown_escaped(self.path)}: the existing file cannot be read, "
                "so its labels "
                f"and interventions cannot be kept ({markdown_escaped(exc)}). Move or delete it, "
                "then rebuild."
            ) from exc
        try:
            rows = legacy_rows(old)
        except duckdb.Error as exc:
            raise StoreError(
                f"Cannot rebuild {markdown_escaped(self.path)}: reading its labels failed "
                f"({markdown_escaped(exc)}). "
                "Move or delete it, then rebuild."
            ) from exc
        finally:
            old.close()
        if rows is not None:
            user_data = UserData(sidecar_path(self.path))
            user_data.import_legacy(legacy_source(self.path, identity), *rows, strict=True)


def _paths(files: Sequence[str | Path]) -> list[str]:
    return [str(path) for path in files]


def _strings(values: Any) -> pa.Array:
    return pa.array([None if pd.isna(v) else str(v) for v in values], pa.string())


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple | np.ndarray)


def _check_lengths(columns: Mapping[str, Any]) -> None:
    lengths = {name: len(array) for name, array in columns.items()}
    if len(set(lengths.values())) > 1:
        raise StoreError(f"Columns must have equal lengths, got {markdown_escaped(lengths)}.")


def _write_derived_file(db: Path, entries: list[Derived]) -> None:
    """Write `entries` into the closed store file `db` in one transaction, checkpointed."""
    con = connect_for_build(db)
    try:
        con.begin()
        write_derived(con, entries)
        con.commit()
        con.execute("CHECKPOINT")
    finally:
        con.close()


def add_derived(path: str | Path, entries: list[Derived]) -> None:
    """Write `entries` into the finished store at `path`: a copy is written, checkpointed and
    swapped in with `os.replace`; on any failure the store stays as it was."""
    path = Path(path).absolute()
    tmp = path.with_name(f".{path.name}.derive-{os.getpid()}")
    remove_db_files(tmp)
    try:
        shutil.copyfile(path, tmp)
        _write_derived_file(tmp, entries)
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
        os.replace(tmp, path)
    except (OSError, duckdb.Error) as exc:
        remove_db_files(tmp)
        raise StoreError(
            f"Could not add the derived analyses to {markdown_escaped(path)} "
            f"({markdown_escaped(exc)}); the store is unchanged."
        ) from exc
    except BaseException:
        remove_db_files(tmp)
        raise
